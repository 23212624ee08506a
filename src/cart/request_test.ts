/** Cart requests and uids: what is refused (with a message naming the problem) and how the rest is normalised. */
import { CartdError } from "../errors.ts";
import { assert, assertEquals, assertMatch, assertThrows } from "../../tests/support/assert.ts";
import { normalisePath, parseCartRequest, validateUid } from "./request.ts";

const good = { id: 1, path: "a.txt", hashtype: "sha1", hashsum: "" };
const body = (...files: unknown[]) => JSON.stringify({ fileids: files });

/** Request bodies that must be refused, and what the message must mention. */
const refusedBodies: [string, string, RegExp][] = [
  ["malformed JSON", "{not json", /Invalid JSON document/],
  ["not an object", "[1,2]", /JSON object/],
  ["no fileids", "{}", /missing "fileids"/],
  ["fileids not an array", '{"fileids": {}}', /"fileids" must be an array/],
  ["item not an object", body("x"), /fileids\[0\] must be an object/],
  [
    "missing path",
    body({ id: 1, hashtype: "sha1", hashsum: "" }),
    /fileids\[0\] is missing "path"/,
  ],
  ["missing hashsum", body({ id: 1, path: "a", hashtype: "sha1" }), /missing "hashsum"/],
  [
    "id of the wrong type",
    body({ ...good, id: [1] }),
    /fileids\[0\]\.id must be an integer or a string/,
  ],
  ["fractional id", body({ ...good, id: 1.5 }), /fileids\[0\]\.id/],
  ["path not a string", body({ ...good, path: 7 }), /fileids\[0\]\.path must be a string/],
  ["absolute path", body({ ...good, path: "//etc/passwd" }), /is an absolute path/],
  ["dot-dot segment", body({ ...good, path: "a/../../x" }), /".." segment/],
  ["leading dot-dot", body({ ...good, path: "../x" }), /".." segment/],
  ["NUL byte", body({ ...good, path: "a\u0000b" }), /NUL or control character/],
  ["control character", body({ ...good, path: "a\nb" }), /NUL or control character/],
  ["backslash", body({ ...good, path: "..\\..\\x" }), /backslash/],
  ["look-alike slash", body({ ...good, path: "a\uff0f..\uff0fx" }), /reads as a path separator/],
  ["look-alike dot-dot", body({ ...good, path: "\u2025/x" }), /reads as a path separator or dot/],
  ["empty path", body({ ...good, path: "/" }), /names no file/],
  [
    "duplicate path",
    body(good, { ...good, id: 2, path: "/a.txt" }),
    /fileids\[1\]\.path "a\.txt" is also the path of fileids\[0\]/,
  ],
  [
    "file where a directory is needed",
    body(good, { ...good, id: 2, path: "a.txt/b" }),
    /needs "a\.txt" as a directory/,
  ],
  ["unknown hash type", body({ ...good, hashtype: "crc32" }), /unknown hash type "crc32"/],
  ["shake hash type", body({ ...good, hashtype: "shake_128" }), /unknown hash type "shake_128"/],
  ["hashsum not hex", body({ ...good, hashsum: "zz" }), /not a 40-digit hex sha1 digest/],
  [
    "bundle of the wrong type",
    JSON.stringify({ fileids: [], bundle: [1] }),
    /"bundle" must be true or false/,
  ],
];

for (const [what, text, message] of refusedBodies) {
  Deno.test(`a request with ${what} is refused`, () => {
    const err = assertThrows(() => parseCartRequest(text));
    assert(err instanceof CartdError, `${what}: ${err}`);
    assertEquals(err.kind, "invalid");
    assertMatch(err.message, message);
  });
}

const refusedUids: [string, string, RegExp][] = [
  ["empty", "", /empty/],
  ["too long", "u".repeat(256), /256 characters long/],
  ["the reserved -", "-", /reserved/],
  ["a slash", "a/b", /contains "\/"/],
  ["a NUL", "a\u0000b", /NUL or control/],
  ["a newline", "a\r\nX-Injected: 1", /NUL or control/],
  ["dot-dot", "..", /not allowed/],
];

for (const [what, uid, message] of refusedUids) {
  Deno.test(`a uid with ${what} is refused`, () => {
    const err = assertThrows(() => validateUid(uid));
    assertMatch(err.message, message);
  });
}

Deno.test("paths are normalised: one leading slash, empty and . segments dropped", () => {
  assertEquals(normalisePath("/a/b.txt"), "a/b.txt");
  assertEquals(normalisePath("./a//b/./c"), "a/b/c");
  assertEquals(normalisePath("dir/ünïcode name.txt"), "dir/ünïcode name.txt");
  assertEquals(normalisePath("a..b/..c"), "a..b/..c");
});

Deno.test("hash types are hashlib names, case-insensitive; digests compare case-insensitively", () => {
  const request = parseCartRequest(body(
    { id: "x", path: "x", hashtype: "SHA3-256", hashsum: "A".repeat(64) },
    { id: 2, path: "y", hashtype: "blake2b", hashsum: "" },
  ));
  assertEquals(request.files[0], {
    id: "x",
    path: "x",
    hashtype: "sha3_256",
    hashsum: "a".repeat(64),
  });
  assertEquals(request.files[1].id, "2");
  assertEquals(request.files[1].hashtype, "blake2b");
});

Deno.test("extra keys are ignored and bundle is read as the original did", () => {
  const request = parseCartRequest(
    JSON.stringify({ fileids: [{ ...good, extra: 1 }], bundle: "yes", other: {} }),
  );
  assertEquals(request.bundle, true);
  assertEquals(request.files.length, 1);
});
