/**
 * Delivery beyond one tar: a cart's file list and its single files over HTTP (ranges, If-Range,
 * digests, served before the cart is ready, nothing outside the cart), and `cartd get --file`.
 */
import { createHash } from "node:crypto";
import { startArchiveSimulator } from "../fixtures/archive_server.ts";
import { sleep } from "../src/time.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { serveApp } from "./support/app.ts";
import { openTestCartd } from "./support/cartd.ts";
import { cartdEnv, runCli } from "./support/cli.ts";

const json = { "content-type": "application/json" };

/** A served cart whose file `slow` is still being pulled while the others are ready. */
async function servedWhileStaging() {
  const archive = await makeArchive([
    { id: "a", path: "top.dat", size: 70_000, hashtype: "sha256" },
    { id: "b", path: "sub dir/ünï code.txt", size: 5_000, hashtype: "md5" },
    { id: "slow", path: "sub dir/slow.bin", size: 400_000 },
  ]);
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    faults: [{ op: "pull", kind: "slow", id: "slow", bytesPerSecond: 50_000 }],
  });
  const cartd = await openTestCartd(simulator.url);
  const app = serveApp(cartd);
  const created = await fetch(`${app.url}c`, {
    method: "POST",
    body: JSON.stringify(archive.request),
    headers: json,
  });
  assertEquals(created.status, 201);
  await created.body?.cancel();
  const list = async () =>
    await (await fetch(`${app.url}-/carts/c/files`)).json() as { path: string; state: string }[];
  const deadline = Date.now() + 20_000;
  while ((await list()).filter((f) => f.state === "ready").length < 2) {
    if (Date.now() > deadline) throw new Error("a and b not ready in time");
    await sleep(50);
  }
  return {
    archive,
    app,
    cartd,
    list,
    async close() {
      await app.close();
      await simulator.stop();
    },
  };
}

const fileUrl = (base: string, path: string) =>
  `${base}-/carts/c/files/${path.split("/").map(encodeURIComponent).join("/")}`;

Deno.test("single files: listed, served with ranges, If-Range and digests before their cart is ready; 202 for one not ready", async () => {
  const served = await servedWhileStaging();
  const { archive, app } = served;
  try {
    const listing = await served.list();
    assertEquals(listing.map((f) => f.path), [
      "top.dat",
      "sub dir/ünï code.txt",
      "sub dir/slow.bin",
    ]);
    assertEquals(
      Object.keys(listing[0]).sort(),
      ["hashsum", "hashtype", "path", "size", "state", "verified"],
    );
    const status = await fetch(`${app.url}c`, { method: "HEAD" });
    assertEquals(status.headers.get("x-pacifica-status"), "staging", "the cart is still staging");

    const [a, b] = archive.files;
    const whole = await fetch(fileUrl(app.url, a.path));
    assertEquals(whole.status, 200);
    assertEquals(new Uint8Array(await whole.arrayBuffer()), a.data);
    assertEquals(whole.headers.get("content-length"), String(a.data.length));
    assertEquals(whole.headers.get("last-modified"), new Date(a.mtime * 1000).toUTCString());
    const sha256 = createHash("sha256").update(a.data).digest("base64");
    assertEquals(whole.headers.get("repr-digest"), `sha-256=:${sha256}:`);
    assertEquals(whole.headers.get("digest"), `SHA-256=${sha256}`);
    assertMatch(whole.headers.get("content-disposition")!, /filename="top\.dat"/);
    const etag = whole.headers.get("etag")!;
    assertMatch(etag, /^"[0-9a-f]{32}"$/);

    const part = await fetch(fileUrl(app.url, a.path), { headers: { range: "bytes=1000-1999" } });
    assertEquals(part.status, 206);
    assertEquals(part.headers.get("content-range"), `bytes 1000-1999/${a.data.length}`);
    assertEquals(new Uint8Array(await part.arrayBuffer()), a.data.subarray(1000, 2000));
    const suffix = await fetch(fileUrl(app.url, a.path), { headers: { range: "bytes=-100" } });
    assertEquals(new Uint8Array(await suffix.arrayBuffer()), a.data.subarray(-100));
    // If-Range with the ETag: the range; with another validator: the whole file.
    const resumed = await fetch(fileUrl(app.url, a.path), {
      headers: { range: "bytes=69000-", "if-range": etag },
    });
    assertEquals(resumed.status, 206);
    assertEquals(new Uint8Array(await resumed.arrayBuffer()), a.data.subarray(69000));
    const stale = await fetch(fileUrl(app.url, a.path), {
      headers: { range: "bytes=69000-", "if-range": '"not-it"' },
    });
    assertEquals(stale.status, 200);
    assertEquals((await stale.arrayBuffer()).byteLength, a.data.length);
    const outside = await fetch(fileUrl(app.url, a.path), {
      headers: { range: `bytes=${a.data.length}-` },
    });
    assertEquals(outside.status, 416);
    assertEquals(outside.headers.get("content-range"), `bytes */${a.data.length}`);
    await outside.body?.cancel();

    // A non-ASCII name in a sub folder, percent-encoded; its MD5 as a Digest.
    const named = await fetch(fileUrl(app.url, b.path));
    assertEquals(named.status, 200);
    assertEquals(new Uint8Array(await named.arrayBuffer()), b.data);
    assertEquals(
      named.headers.get("digest"),
      `MD5=${createHash("md5").update(b.data).digest("base64")}`,
    );
    assertEquals(named.headers.get("repr-digest"), null, "no RFC 9530 digest for MD5");
    // The same path with its slash encoded too.
    const encoded = await fetch(`${app.url}-/carts/c/files/${encodeURIComponent(b.path)}`);
    assertEquals(new Uint8Array(await encoded.arrayBuffer()), b.data);
    // HEAD: the headers, no body.
    const head = await fetch(fileUrl(app.url, b.path), { method: "HEAD" });
    assertEquals([head.status, head.headers.get("content-length")], [200, String(b.data.length)]);

    const notYet = await fetch(fileUrl(app.url, "sub dir/slow.bin"));
    assertEquals(notYet.status, 202);
    assertMatch((await notYet.json()).message, /not ready/);
    // Once it is ready, it is served too.
    const deadline = Date.now() + 30_000;
    while ((await served.list())[2].state !== "ready") {
      if (Date.now() > deadline) throw new Error("slow not ready in time");
      await sleep(100);
    }
    const slow = await fetch(fileUrl(app.url, "sub dir/slow.bin"));
    assertEquals(new Uint8Array(await slow.arrayBuffer()), archive.files[2].data);

    // A backwards range makes the header invalid: ignored, the whole file.
    const backwards = await fetch(fileUrl(app.url, a.path), { headers: { range: "bytes=10-5" } });
    assertEquals(backwards.status, 200);
    assertEquals((await backwards.arrayBuffer()).byteLength, a.data.length);
    // Changed in place on the volume (same size): refused before any header says 200.
    const onDisk = served.cartd.volume.filePath(1, a.path);
    const changed = a.data.slice();
    changed[5] ^= 0xff;
    await Deno.writeFile(onDisk, changed);
    const refused = await fetch(fileUrl(app.url, a.path));
    assertEquals(refused.status, 500);
    assertMatch((await refused.json()).message, /changed on the volume since it was verified/);
  } finally {
    await served.close();
  }
});

Deno.test("single files: a path not in the cart is 404, and no spelling of one reaches outside it", async () => {
  const served = await servedWhileStaging();
  const { app } = served;
  try {
    const attempts = [
      "nope.dat",
      "../top.dat",
      "sub%20dir/..%2F..%2Ftop.dat",
      "%2e%2e/%2e%2e/cartd.sqlite3",
      "..%2F..%2F..%2Fetc%2Fpasswd",
      "%2Fetc%2Fpasswd",
      "sub%20dir//slow.bin",
      "top.dat%00",
      "TOP.DAT",
    ];
    for (const path of attempts) {
      const response = await fetch(`${app.url}-/carts/c/files/${path}`);
      const body = await response.text();
      assert(
        response.status === 404 || response.status === 400,
        `${path}: ${response.status} ${body.slice(0, 100)}`,
      );
      assert(!body.includes("root:"), path);
    }
    const malformed = await fetch(`${app.url}-/carts/c/files/%E0%A4%A`);
    assertEquals(malformed.status, 400);
    await malformed.body?.cancel();
    const unknownCart = await fetch(`${app.url}-/carts/nope/files/top.dat`);
    assertEquals(unknownCart.status, 404);
    await unknownCart.body?.cancel();
    const listUnknown = await fetch(`${app.url}-/carts/nope/files`);
    assertEquals(listUnknown.status, 404);
    await listUnknown.body?.cancel();
  } finally {
    await served.close();
  }
});

Deno.test("cartd get --file writes one file of a cart, even one still staging; a file not ready says so", async () => {
  const archive = await makeArchive([
    { id: "a", path: "x/a.dat", size: 30_000 },
    { id: "slow", path: "slow.bin", size: 300_000 },
  ]);
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    faults: [{ op: "pull", kind: "slow", id: "slow", bytesPerSecond: 30_000 }],
  });
  const volume = await Deno.makeTempDir();
  const env = cartdEnv(volume, simulator.url);
  const cwd = await Deno.makeTempDir();
  const serve = (await import("./support/server.ts")).startServer;
  const server = await serve(env);
  try {
    const created = await runCli(["create", "g", "-"], {
      env,
      stdin: JSON.stringify(archive.request),
    });
    assertEquals(created.code, 0, created.stderr);
    const deadline = Date.now() + 20_000;
    while (true) {
      const got = await runCli(["get", "g", "--file", "x/a.dat"], { env, cwd });
      if (got.code === 0) {
        assertMatch(got.stderr, /a\.dat: 30000 bytes/);
        break;
      }
      assertMatch(got.stderr, /not ready/);
      if (Date.now() > deadline) throw new Error("x/a.dat not ready in time");
      await sleep(100);
    }
    assertEquals(await Deno.readFile(`${cwd}/a.dat`), archive.files[0].data);
    const notYet = await runCli(["get", "g", "--file", "slow.bin", "-o", "-"], { env, cwd });
    assert(notYet.code !== 0);
    assertMatch(notYet.stderr, /not ready/);
    const missing = await runCli(["get", "g", "--file", "nope"], { env, cwd });
    assert(missing.code !== 0);
    assertMatch(missing.stderr, /has no file "nope"/);
    const stdout = await runCli(["get", "g", "--file", "x/a.dat", "-o", "-"], { env, cwd });
    assertEquals(stdout.code, 0);
    const nowhere = await runCli(["get", "g", "--file", "x/a.dat", "-o", "/nonexistent/dir/a"], {
      env,
      cwd,
    });
    assertEquals(nowhere.code, 2, nowhere.stderr);
    assertMatch(nowhere.stderr, /cannot write \/nonexistent\/dir\/a: /);
    assert(!nowhere.stderr.includes("internal error"), nowhere.stderr);
    // An existing folder: the file goes in there under its own name.
    const folder = await Deno.makeTempDir();
    const intoFolder = await runCli(["get", "g", "--file", "x/a.dat", "-o", folder], { env, cwd });
    assertEquals(intoFolder.code, 0, intoFolder.stderr);
    assertEquals(await Deno.readFile(`${folder}/a.dat`), archive.files[0].data);
  } finally {
    server.child.kill("SIGTERM");
    await server.exited;
    await simulator.stop();
  }
});
