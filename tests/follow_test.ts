/**
 * Downloads that start while a cart stages (`GET /-/carts/<uid>/tar`): the bytes of the ready
 * cart's tar, sent as each file is verified; a cart that fails mid-stream gives a body every tar
 * reader rejects. The Pacifica route keeps its contract meanwhile.
 */
import { join } from "node:path";
import { startArchiveSimulator } from "../fixtures/archive_server.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { serveApp } from "./support/app.ts";
import { openTestCartd } from "./support/cartd.ts";
import { waitWhileStaging } from "./support/server.ts";
import { cartdEnv, runCli } from "./support/cli.ts";

const json = { "content-type": "application/json" };

/** Reads a body to its end or until it breaks off; says which. */
async function readAll(body: ReadableStream<Uint8Array>) {
  const chunks: Uint8Array[] = [];
  let broken = false;
  try {
    for await (const chunk of body) chunks.push(chunk);
  } catch {
    broken = true;
  }
  const bytes = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return { bytes, broken };
}

Deno.test("a follow download of a tape-mode cart started right after POST equals the ready cart's tar byte for byte", async () => {
  const archive = await makeArchive([
    { id: "a", path: "raw/a.dat", size: 200_000 },
    { id: "b", path: "raw/b.dat", size: 50_000 },
    { id: "c", path: "c.txt", size: 1_000 },
    { id: "d", path: "deep/er/d.bin", size: 300_000 },
  ]);
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    mode: "tape",
    tapeDelayMs: 400,
    faults: [{ op: "pull", kind: "slow", bytesPerSecond: 400_000 }],
  });
  const cartd = await openTestCartd(simulator.url);
  const app = serveApp(cartd);
  try {
    const created = await fetch(`${app.url}f`, {
      method: "POST",
      body: JSON.stringify(archive.request),
      headers: json,
    });
    await created.body?.cancel();
    const followed = await fetch(`${app.url}-/carts/f/tar?filename=f.tar`);
    assertEquals(followed.status, 200);
    // The answer came while the cart was still staging; the Pacifica GET still says 202.
    const meanwhile = await fetch(`${app.url}f`);
    assertEquals(meanwhile.status, 202);
    await meanwhile.body?.cancel();
    const length = Number(followed.headers.get("content-length"));
    const { bytes, broken } = await readAll(followed.body!);
    assertEquals(broken, false);
    assertEquals(bytes.length, length);

    await waitWhileStaging(`${app.url}f`, 50, 20_000);
    const ready = new Uint8Array(await (await fetch(`${app.url}f?filename=f.tar`)).arrayBuffer());
    assertEquals(bytes, ready, "byte-identical to the ready cart's tar");
    // A follow of the ready cart is the same too, and resumes with a range.
    const later = await fetch(`${app.url}-/carts/f/tar?filename=f.tar`, {
      headers: { range: "bytes=1000-" },
    });
    assertEquals(later.status, 206);
    assertEquals(new Uint8Array(await later.arrayBuffer()), ready.subarray(1000));
    for (const file of archive.files) {
      assertEquals(simulator.count("pull", file.id), 1, `${file.id} pulled once`);
    }
  } finally {
    await app.close();
    await simulator.stop();
  }
});

Deno.test("a cart that fails while followed gives a body that tar and Python reject, never one that looks complete", async () => {
  const archive = await makeArchive([
    { id: "good", path: "a-good.dat", size: 10_000 },
    { id: "bad", path: "b-bad.dat", size: 100_000 },
    { id: "later", path: "c-later.dat", size: 100_000 },
  ]);
  // `bad` never matches its checksum: once the tape recall is over (the sizes are known by then,
  // and the download has begun), it is pulled twice and fails, and its cart with it.
  archive.request.fileids[1].hashsum = "0".repeat(40);
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    mode: "tape",
    tapeDelayMs: 500,
  });
  const cartd = await openTestCartd(simulator.url);
  const app = serveApp(cartd);
  const dir = await Deno.makeTempDir();
  try {
    const created = await fetch(`${app.url}x`, {
      method: "POST",
      body: JSON.stringify(archive.request),
      headers: json,
    });
    await created.body?.cancel();
    const followed = await fetch(`${app.url}-/carts/x/tar?filename=x.tar`);
    assertEquals(followed.status, 200);
    {
      const length = Number(followed.headers.get("content-length"));
      const { bytes, broken } = await readAll(followed.body!);
      assert(broken || bytes.length < length, "the body is cut short");
      assert(bytes.length < length, `${bytes.length} of ${length} bytes`);
      assert(bytes.length > 10_000, "the good file before it was sent");
      const tar = join(dir, "x.tar");
      await Deno.writeFile(tar, bytes);
      const gnu = await new Deno.Command("tar", { args: ["-xf", tar, "-C", dir], stderr: "piped" })
        .output();
      assert(!gnu.success, "GNU tar rejects it");
      const python = await new Deno.Command("python3", {
        args: [
          "-c",
          "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])",
          tar,
          dir,
        ],
        stderr: "piped",
      }).output();
      assert(!python.success, "Python's tarfile rejects it");
    }
    const head = await waitWhileStaging(`${app.url}x`, 50, 20_000);
    assertEquals(head.headers.get("x-pacifica-status"), "error");
    // Asked once the cart has failed: its error, as for the cart's GET; so for a file of it that
    // was not pulled (it never will be), rather than "not ready" for ever.
    const afterwards = await fetch(`${app.url}-/carts/x/tar`);
    assertEquals(afterwards.status, 500);
    await afterwards.body?.cancel();
    const files = await (await fetch(`${app.url}-/carts/x/files`)).json() as {
      path: string;
      state: string;
    }[];
    for (const file of files.filter((f) => f.state !== "ready")) {
      const one = await fetch(`${app.url}-/carts/x/files/${file.path}`);
      assertEquals(one.status, 500, file.path);
      await one.body?.cancel();
    }
  } finally {
    await app.close();
    await simulator.stop();
  }
});

Deno.test("cartd get --follow writes a staging cart's tar as it is staged (here, with no server), the same as the ready cart's", async () => {
  const archive = await makeArchive([
    { id: "a", path: "a.dat", size: 120_000 },
    { id: "b", path: "sub/b.dat", size: 80_000 },
  ]);
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    mode: "tape",
    tapeDelayMs: 300,
  });
  const volume = await Deno.makeTempDir();
  const env = cartdEnv(volume, simulator.url);
  const cwd = await Deno.makeTempDir();
  try {
    const created = await runCli(["create", "g", "-"], {
      env,
      stdin: JSON.stringify(archive.request),
    });
    assertEquals(created.code, 0, created.stderr);
    const followed = await runCli(["get", "g", "--follow", "--filename", "g.tar", "-o", "f.tar"], {
      env,
      cwd,
    });
    assertEquals(followed.code, 0, followed.stderr);
    const ready = await runCli(["get", "g", "--filename", "g.tar", "-o", "r.tar"], { env, cwd });
    assertEquals(ready.code, 0, ready.stderr);
    assertEquals(await Deno.readFile(join(cwd, "f.tar")), await Deno.readFile(join(cwd, "r.tar")));
    const zip = await runCli(["get", "g", "--follow", "--format", "zip"], { env, cwd });
    assertEquals(zip.code, 2);
  } finally {
    await simulator.stop();
  }
});

Deno.test("a follow download whose client goes away lets go of its cart at once, though its next file is still on tape", async () => {
  const archive = await makeArchive([{ id: "t", path: "t.dat", size: 50_000 }]);
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    mode: "tape",
    tapeDelayMs: 60_000,
  });
  const cartd = await openTestCartd(simulator.url);
  const app = serveApp(cartd);
  try {
    const created = await fetch(`${app.url}g`, {
      method: "POST",
      body: JSON.stringify(archive.request),
      headers: json,
    });
    await created.body?.cancel();
    const followed = await fetch(`${app.url}-/carts/g/tar`);
    assertEquals(followed.status, 200);
    const reader = followed.body!.getReader();
    await reader.read(); // the tar's first header, sent before the wait for the file
    await reader.cancel();
    const { DatabaseSync } = await import("node:sqlite");
    const held = () => {
      const db = new DatabaseSync(`${cartd.volume.root}/cartd.sqlite3`);
      const n = Number(
        (db.prepare("select count(*) as n from downloads").get() as { n: number }).n,
      );
      db.close();
      return n;
    };
    const deadline = Date.now() + 3_000;
    while (held() > 0) {
      if (Date.now() > deadline) throw new Error("the download still holds the cart");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    await app.close();
    await simulator.stop();
  }
});
