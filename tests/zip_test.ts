/**
 * A cart as a zip: read by Python's zipfile, Info-ZIP unzip, 7-Zip and bsdtar with the right
 * contents, names and times; resumable with `curl -C -`; ZIP64 for a file over 4 GiB and for more
 * than 65 535 members.
 */
import { Buffer } from "node:buffer";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { startArchiveSimulator } from "../fixtures/archive_server.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { serveApp } from "./support/app.ts";
import { openTestCartd, type TestCartd } from "./support/cartd.ts";
import { parseCartRequest } from "../src/cart/request.ts";
import { waitWhileStaging } from "./support/server.ts";

const json = { "content-type": "application/json" };

async function run(command: string, args: string[], cwd?: string) {
  const out = await new Deno.Command(command, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert(out.success, `${command} ${args.join(" ")} failed:\n${text.slice(-2000)}`);
  return text;
}

/** Python's zipfile: every member's name, size, time and whether its CRC checks. */
async function pythonReads(zip: string): Promise<{ name: string; size: number; time: number[] }[]> {
  const script = `
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    assert bad is None, bad
    print(json.dumps([{"name": i.filename, "size": i.file_size, "time": list(i.date_time)}
                      for i in z.infolist()]))
`;
  return JSON.parse(await run("python3", ["-c", script, zip]));
}

Deno.test("a cart's zip is read by Python, unzip, 7-Zip and bsdtar with its contents, names and times; curl -C - resumes it", async () => {
  const archive = await makeArchive([
    { id: "a", path: "a.txt", size: 10_000 },
    { id: "b", path: "dir/ünï côde.bin", size: 300_000, hashtype: "md5" },
    { id: "c", path: "dir/sub/empty", size: 0 },
  ]);
  const simulator = await startArchiveSimulator({ prefix: archive.dir });
  const cartd = await openTestCartd(simulator.url);
  const app = serveApp(cartd);
  const dir = await Deno.makeTempDir();
  try {
    const created = await fetch(`${app.url}z`, {
      method: "POST",
      body: JSON.stringify(archive.request),
      headers: json,
    });
    await created.body?.cancel();
    await waitWhileStaging(`${app.url}z`, 50, 20_000);
    // Each file's CRC-32 was kept as it was pulled.
    const rows = await cartd.store.work.all();
    for (const f of archive.files) {
      const row = rows.find((r) => r.archive_id === f.id)!;
      assertEquals(Number(row.crc32), crc32(f.data), `${f.id}'s CRC-32`);
    }

    const response = await fetch(`${app.url}z?format=ZIP`);
    assertEquals(response.status, 200);
    assertEquals(response.headers.get("content-type"), "application/zip");
    assertMatch(response.headers.get("content-disposition")!, /filename="data_[0-9_]+\.zip"/);
    const whole = new Uint8Array(await response.arrayBuffer());
    assertEquals(response.headers.get("content-length"), String(whole.length));
    const etag = response.headers.get("etag")!;
    const again = await fetch(`${app.url}z?format=zip`);
    assertEquals(again.headers.get("etag"), etag);
    assertEquals(new Uint8Array(await again.arrayBuffer()), whole, "the same bytes every time");
    const root = /filename="(.*)\.zip"/.exec(response.headers.get("content-disposition")!)![1];

    const zip = join(dir, "z.zip");
    await Deno.writeFile(zip, whole);
    const members = await pythonReads(zip);
    const expected = [...archive.files].sort((x, y) =>
      x.path.replaceAll("/", "\0") < y.path.replaceAll("/", "\0") ? -1 : 1
    );
    assertEquals(members.map((m) => m.name), expected.map((f) => `${root}/${f.path}`));
    assertEquals(members.map((m) => m.size), expected.map((f) => f.data.length));
    for (const [i, f] of expected.entries()) {
      const t = new Date(f.mtime * 1000);
      assertEquals(members[i].time, [
        t.getUTCFullYear(),
        t.getUTCMonth() + 1,
        t.getUTCDate(),
        t.getUTCHours(),
        t.getUTCMinutes(),
        t.getUTCSeconds() & ~1,
      ]);
    }
    assertMatch(await run("unzip", ["-t", zip]), /No errors detected/);
    assertMatch(await run("7z", ["t", zip]), /Everything is Ok/);
    const listed = await run("bsdtar", ["-tf", zip]);
    assertEquals(listed.trim().split("\n"), expected.map((f) => `${root}/${f.path}`));
    // Extracted by unzip: the archive's bytes and times.
    const out = join(dir, "unzipped");
    await run("unzip", ["-q", zip, "-d", out]);
    for (const f of archive.files) {
      const path = join(out, root, f.path);
      assertEquals(await Deno.readFile(path), f.data, f.path);
      assertEquals(Math.floor((await Deno.stat(path)).mtime!.getTime() / 1000), f.mtime);
    }

    // A name asked for: the root folder; ranges and curl -C - as for the tar.
    const named = await fetch(`${app.url}z?filename=${encodeURIComponent("my data.zip")}`);
    assertEquals(named.headers.get("content-type"), "application/zip");
    assertMatch(named.headers.get("content-disposition")!, /filename="my data\.zip"/);
    assertEquals((await pythonReadsBytes(dir, await named.arrayBuffer()))[0].name, "my data/a.txt");
    const part = await fetch(`${app.url}z?format=zip`, {
      headers: { range: "bytes=5000-", "if-range": etag },
    });
    assertEquals(part.status, 206);
    assertEquals(new Uint8Array(await part.arrayBuffer()), whole.subarray(5000));
    const resumed = join(dir, "resumed.zip");
    await Deno.writeFile(resumed, whole.subarray(0, 123_456));
    await run("curl", ["-s", "-f", "-C", "-", "-o", resumed, `${app.url}z?format=zip`]);
    assertEquals(await Deno.readFile(resumed), whole, "a resumed zip equals the full one");

    const bad = await fetch(`${app.url}z?format=rar`);
    assertEquals(bad.status, 400);
    assertMatch((await bad.json()).message, /format must be tar or zip/);
    const conflict = await fetch(`${app.url}z?format=tar&filename=a.zip`);
    assertEquals(conflict.status, 400);
    await conflict.body?.cancel();
    const followZip = await fetch(`${app.url}-/carts/z/tar?format=zip`);
    assertEquals(followZip.status, 400);
    await followZip.body?.cancel();
  } finally {
    await app.close();
    await simulator.stop();
  }
});

/** Python's reading of a zip given as bytes. */
async function pythonReadsBytes(dir: string, bytes: ArrayBuffer) {
  const path = join(dir, `${crypto.randomUUID()}.zip`);
  await Deno.writeFile(path, new Uint8Array(bytes));
  return await pythonReads(path);
}

/**
 * A ready cart made straight on the volume and in the database, as staging would leave it: for
 * carts too large to stage in a test (a sparse 4 GiB file, 70 000 files). No CRC-32 is recorded,
 * as for files pulled before cartd kept them: the zip computes them.
 */
async function readyCart(
  cartd: TestCartd,
  uid: string,
  files: { path: string; size: number; data?: Uint8Array }[],
) {
  const request = {
    fileids: files.map((f, i) => ({
      id: `made/${i}`,
      path: f.path,
      hashtype: "sha1",
      hashsum: "",
    })),
  };
  const { cart } = await cartd.service.create(uid, parseCartRequest(JSON.stringify(request)));
  for (const f of files) {
    const path = cartd.volume.filePath(cart.id, f.path);
    await Deno.mkdir(join(path, ".."), { recursive: true });
    if (f.data) await Deno.writeFile(path, f.data);
    else {
      await Deno.writeFile(path, new Uint8Array(0));
      await Deno.truncate(path, f.size);
    }
    // The archive's mtime, as a pull leaves it.
    await Deno.utime(path, 1_700_000_000, 1_700_000_000);
  }
  const db = new DatabaseSync(`${cartd.volume.root}/cartd.sqlite3`);
  const ids = new Map(
    db.prepare("select id, path from files where cart_id = ?").all(cart.id)
      .map((r) => [r.path as string, Number(r.id)]),
  );
  const update = db.prepare(
    "update files set state = 'ready', size = ?, mtime = 1700000000, verified = 0 where id = ?",
  );
  db.exec("begin");
  for (const f of files) update.run(f.size, ids.get(f.path)!);
  db.prepare(
    "update carts set status = 'ready', ready_at = ?, finished_at = ?, bytes = ? where id = ?",
  ).run(Date.now(), Date.now(), files.reduce((n, f) => n + f.size, 0), cart.id);
  db.exec("commit");
  db.close();
}

/** Writes a stream to a file, leaving holes where a chunk is all zeros (so 4 GiB of zeros cost nothing). */
async function writeSparse(body: ReadableStream<Uint8Array>, path: string): Promise<number> {
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  let size = 0;
  const zeros = Buffer.alloc(4 << 20);
  const allZero = (chunk: Uint8Array) =>
    chunk.length <= zeros.length &&
    Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length).equals(
      zeros.subarray(0, chunk.length),
    );
  for await (const chunk of body) {
    if (allZero(chunk)) await file.seek(chunk.length, Deno.SeekMode.Current);
    else {
      for (let at = 0; at < chunk.length;) at += await file.write(chunk.subarray(at));
    }
    size += chunk.length;
  }
  await file.truncate(size);
  return size;
}

Deno.test("ZIP64: a cart holding a file over 4 GiB is read right by Python, unzip, 7-Zip and bsdtar, and a range past 4 GiB is right", async () => {
  const cartd = await openTestCartd("file:///nowhere");
  const dir = await Deno.makeTempDir();
  try {
    const big = 4 * 1024 ** 3 + 12_345;
    const small = new TextEncoder().encode("after the big one\n");
    await readyCart(cartd, "big", [
      { path: "huge.bin", size: big },
      { path: "tail.txt", size: small.length, data: small },
    ]);
    const download = await cartd.service.download("big", undefined, undefined, "zip");
    const zip = join(dir, "big.zip");
    assertEquals(await writeSparse(await download.open(), zip), download.size);
    const members = await pythonReads(zip);
    assertEquals(members.map((m) => [m.name, m.size]), [
      [`${download.root}/huge.bin`, big],
      [`${download.root}/tail.txt`, small.length],
    ]);
    assertMatch(await run("unzip", ["-t", zip]), /No errors detected/);
    assertMatch(await run("7z", ["l", zip]), /4294979641 +4294979641 +huge\.bin|huge\.bin/);
    assertMatch(await run("bsdtar", ["-tvf", zip]), /4294979641 .*huge\.bin/);
    const tail = await run("unzip", ["-p", zip, `${download.root}/tail.txt`]);
    assertEquals(tail, "after the big one\n");
    // A range past 4 GiB is the same bytes as the whole.
    const end = new Uint8Array(
      await new Response(await download.open(download.size - 300, download.size)).arrayBuffer(),
    );
    const whole = await Deno.open(zip);
    await whole.seek(download.size - 300, Deno.SeekMode.Start);
    const expected = new Uint8Array(300);
    for (let at = 0; at < 300;) at += (await whole.read(expected.subarray(at)))!;
    whole.close();
    assertEquals(end, expected);
  } finally {
    await cartd.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ZIP64: a cart of 70 000 files is read right by Python, unzip and bsdtar; the CRC-32s computed for it are kept", async () => {
  const cartd = await openTestCartd("file:///nowhere");
  const dir = await Deno.makeTempDir();
  try {
    const many = Array.from({ length: 70_000 }, (_, i) => {
      const data = new TextEncoder().encode(`file ${i}\n`);
      return { path: `d${i % 100}/f${i}.txt`, size: data.length, data };
    });
    await readyCart(cartd, "many", many);
    const manyZip = await cartd.service.download("many", "many.zip");
    const manyPath = join(dir, "many.zip");
    await Deno.writeFile(
      manyPath,
      new Uint8Array(await new Response(await manyZip.open()).arrayBuffer()),
    );
    const listed = await pythonReads(manyPath);
    assertEquals(listed.length, 70_000);
    assertMatch(await run("unzip", ["-tq", manyPath]), /No errors detected/);
    const names = (await run("bsdtar", ["-tf", manyPath])).trim().split("\n");
    assertEquals(names.length, 70_000);
    assertEquals(await run("unzip", ["-p", manyPath, "many/d7/f69907.txt"]), "file 69907\n");
    // The CRC-32s computed for the zip were kept: the next one reads no file to make its layout.
    const rows = await cartd.store.work.all();
    assert(rows.every((r) => r.crc32 !== null), "every CRC-32 kept");
  } finally {
    await cartd.close();
    await Deno.remove(dir, { recursive: true });
  }
});
