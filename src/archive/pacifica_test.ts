/** The archive protocol's edges: status headers as the real archive sends them, and what errors mean. */
import { assert, assertEquals, assertMatch, assertThrows } from "../../tests/support/assert.ts";
import { ArchiveError } from "./archive.ts";
import { failureOf, networkReason, parseMtime, parseStatusHeaders } from "./pacifica.ts";

const realHead = {
  "X-Pacifica-Messsage": "File was found",
  "X-Pacifica-File": "/srv/archive/1234",
  "X-Content-Length": "14",
  "Last-Modified": "1795820385.8073926",
  "X-Pacifica-Ctime": "1795820385.8076756",
  "X-Pacifica-Bytes-Per-Level": "(14,)",
  "X-Pacifica-File-Storage-Media": "disk",
};

Deno.test("status headers: the real archive's HEAD answer, tape, and informational headers missing", () => {
  assertEquals(parseStatusHeaders(new Headers(realHead), "1234"), {
    onDisk: true,
    media: "disk",
    size: 14,
    mtime: 1795820385,
  });
  const tape = parseStatusHeaders(
    new Headers({ "x-pacifica-file-storage-media": "tape", "x-content-length": "9" }),
    "x",
  );
  assertEquals([tape.onDisk, tape.media, tape.size, tape.mtime], [false, "tape", 9, undefined]);
});

Deno.test("status headers: a missing media or a size that is not a byte count is a file failure", () => {
  for (
    const [headers, message] of [
      [{ "x-content-length": "9" }, /no X-Pacifica-File-Storage-Media header/],
      [{ "x-pacifica-file-storage-media": "disk" }, /no X-Content-Length header/],
      [
        { "x-pacifica-file-storage-media": "disk", "x-content-length": "garbage" },
        /X-Content-Length "garbage" is not a byte count/,
      ],
      [
        { "x-pacifica-file-storage-media": "disk", "x-content-length": "-1" },
        /is not a byte count/,
      ],
    ] as const
  ) {
    const err = assertThrows(() => parseStatusHeaders(new Headers(headers), "f"));
    assert(err instanceof ArchiveError);
    assertEquals(err.failure, "file");
    assertMatch(err.message, message);
  }
});

Deno.test("Last-Modified as epoch seconds (fractional) or an HTTP date", () => {
  assertEquals(parseMtime("1795820385.8073926"), 1795820385);
  assertEquals(parseMtime("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
  assertEquals(parseMtime(""), undefined);
  assertEquals(parseMtime("soon"), undefined);
  assertEquals(parseMtime(null), undefined);
});

Deno.test("error answers: 408/429 an outage, 4xx permanent, a missing file a file failure, 5xx judged", () => {
  for (const status of [408, 429]) assertEquals(failureOf(status, ""), "outage");
  for (const status of [502, 503, 504]) assertEquals(failureOf(status, ""), "unknown");
  for (const status of [400, 403, 404, 410]) assertEquals(failureOf(status, ""), "permanent");
  assertEquals(
    failureOf(500, "Can't open posix file with error: [Errno 2] No such file or directory: '…'"),
    "file",
  );
  assertEquals(failureOf(500, "OSError: No such file or directory: '…'"), "file");
  assertEquals(failureOf(500, "simulated pull failure"), "unknown");
  assertEquals(failureOf(507, ""), "unknown");
});

Deno.test("network failures are named by their errno", () => {
  const refused = new TypeError("fetch failed", {
    cause: new Error(
      "error sending request for url (http://h/): client error (Connect): tcp connect error: " +
        "Connection refused (os error 111)",
    ),
  });
  assertEquals(networkReason(refused), "connection refused");
  const reset = new TypeError("fetch failed", {
    cause: new Error("Connection reset (os error 104)"),
  });
  assertEquals(networkReason(reset), "connection reset");
  assertEquals(networkReason(new DOMException("too slow", "TimeoutError")), "no answer in time");
});

Deno.test("network failures as Deno's fetch really reports them", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  const refused = await fetch(`http://127.0.0.1:${port}/`).catch((err) => err);
  assertEquals(networkReason(refused), "connection refused");
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  (async () => {
    for await (const conn of silent) held.push(conn);
  })();
  const timeout = await fetch(`http://127.0.0.1:${silent.addr.port}/`, {
    signal: AbortSignal.timeout(200),
  }).catch((err) => err);
  assertEquals(networkReason(timeout), "no answer in time");
  silent.close();
  for (const conn of held) conn.close();
});
