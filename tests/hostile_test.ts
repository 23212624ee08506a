/**
 * Hostile input: a generated corpus of malformed bodies, hostile uids and file names, oversized
 * bodies, and symlinks planted in the volume. The server always answers 4xx JSON, stays up, and
 * nothing is read or written outside where it should be.
 */
import { sleep } from "../src/time.ts";
import { join } from "node:path";
import { parseCartRequest } from "../src/cart/request.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "./support/assert.ts";
import { bytes, makeArchive } from "./support/archive.ts";
import { createHash } from "node:crypto";
import { listFiles, openTestCartd } from "./support/cartd.ts";
import { serveApp } from "./support/app.ts";
import { runWithInput } from "./support/tar.ts";

/** A small seeded generator, so a failing case can be reproduced. */
function random(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  return {
    next,
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)],
  };
}

const pathTricks = [
  "a/../../x",
  "../x",
  "..",
  "./",
  "//x",
  "/",
  "a\\..\\..\\x",
  "a/\u0000b",
  "a\nb",
  "a\u2215..\u2215x",
  "a\uff0f..\uff0fx",
  "\u2024\u2024/x",
  "\uff0e\uff0e/x",
  "a/\ufe52\ufe52/x",
  "x".repeat(300),
  `${"d/".repeat(2100)}x`,
];
/** Values each field must refuse. */
const wrongValues: Record<string, unknown[]> = {
  id: [null, true, 1.5, [], {}, "", [1, 2], { a: 1 }],
  path: [null, true, 1.5, -1, [], {}, "", [1, 2]],
  hashtype: [null, true, 1.5, -1, [], {}, ""],
  hashsum: [null, true, 1.5, -1, [], {}, "zz", "0".repeat(41)],
};

/** Bodies that must all be refused with a 4xx. */
function corpus(seed: number, count: number): (string | Uint8Array<ArrayBuffer>)[] {
  const r = random(seed);
  const good = () => ({ id: 1, path: "ok.txt", hashtype: "sha1", hashsum: "" });
  const bodies: (string | Uint8Array<ArrayBuffer>)[] = [
    "",
    "{",
    "null",
    "[]",
    '"fileids"',
    "{}",
    '{"fileids": 5}',
    `{"fileids": ${"[".repeat(5000)}${"]".repeat(5000)}}`,
    `{"fileids": [${"{".repeat(3000)}`,
    new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]),
    new Uint8Array([
      ...new TextEncoder().encode('{"fileids": [{"id": 1, "path": "'),
      0xc3,
      0x28,
      ...new TextEncoder().encode('", "hashtype": "md5", "hashsum": ""}]}'),
    ]),
    JSON.stringify({ fileids: [{ ...good(), path: "p".repeat(2_000_000) }] }),
    JSON.stringify({ fileids: [{ ...good(), id: "i".repeat(100_000) }] }),
    JSON.stringify({ fileids: [{ ...good(), hashtype: "h".repeat(100_000) }] }),
    JSON.stringify({ fileids: [good(), good()] }),
  ];
  for (const trick of pathTricks) {
    bodies.push(JSON.stringify({ fileids: [{ ...good(), path: trick }] }));
  }
  const keys = ["id", "path", "hashtype", "hashsum"] as const;
  while (bodies.length < count) {
    const item: Record<string, unknown> = good();
    switch (Math.floor(r.next() * 4)) {
      case 0:
        delete item[r.pick(keys)];
        break;
      case 1: {
        const key = r.pick(keys);
        item[key] = r.pick(wrongValues[key]);
        break;
      }
      case 2:
        item.path = r.pick(pathTricks);
        break;
      default:
        item.hashtype = r.pick(["shake_128", "crc32", "sha1 ", "", "md-5x"]);
    }
    bodies.push(
      JSON.stringify({
        fileids: [good(), { ...item, path: item.path === "ok.txt" ? "other" : item.path }],
      }),
    );
  }
  return bodies;
}

/** Everything under `dir` except the database files, as paths. */
async function volumeContents(dir: string) {
  return (await listFiles(dir)).filter((f) => !f.startsWith("cartd.sqlite3"));
}

Deno.test("a generated corpus of malformed bodies always gets a 4xx JSON answer, and nothing is written", async () => {
  const parent = await Deno.makeTempDir();
  const archive = await makeArchive([{ id: "ok.txt", size: 10 }]);
  const cartd = await openTestCartd(`file://${archive.dir}`, {
    VOLUME_PATH: join(parent, "volume"),
  });
  const { url, close } = serveApp(cartd);
  const bodies = corpus(20261128, 400);
  const statuses = new Map<number, number>();
  try {
    for (const [i, body] of bodies.entries()) {
      const response = await fetch(`${url}cart-${i}`, {
        method: "POST",
        body,
        headers: { "content-type": "application/json" },
      });
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      const text = await response.text();
      assert(
        response.status >= 400 && response.status < 500,
        `body ${i} got ${response.status}: ${text.slice(0, 200)} for ${String(body).slice(0, 300)}`,
      );
      assertEquals(response.headers.get("content-type"), "application/json");
      const error = JSON.parse(text);
      assert(
        typeof error.message === "string" && error.message.length < 1000,
        `body ${i}: ${text.slice(0, 200)}`,
      );
      assertEquals(error.traceback, "");
    }
    assertEquals((await fetch(url)).status, 200, "the server is still up");
    assertEquals(await volumeContents(join(parent, "volume")), [], "nothing written to the volume");
    assertEquals([...Deno.readDirSync(parent)].map((e) => e.name), ["volume"], "nothing beside it");
    assertEquals(await cartd.store.carts.all(), []);
    console.log(
      `malformed bodies: ${bodies.length} sent, answers ${
        JSON.stringify(Object.fromEntries(statuses))
      }`,
    );
  } finally {
    await close();
  }
});

Deno.test("bodies over the limit get 413 without being read; a chunked one is cut off at the limit", async () => {
  const cartd = await openTestCartd("http://127.0.0.1:9/", { CARTD_MAX_REQUEST_SIZE: "1 MiB" });
  const { url, close } = serveApp(cartd);
  try {
    const declared = await fetch(`${url}big`, {
      method: "POST",
      body: "x".repeat(2 << 20),
      headers: { "content-type": "application/json" },
    });
    assertEquals(declared.status, 413);
    assertMatch((await declared.json()).message, /larger than the 1048576-byte limit/);

    // A 64 MiB chunked body: the answer comes once the limit is passed, long before its end.
    const total = 64 << 20;
    let sent = 0;
    const large = new ReadableStream<Uint8Array>({
      pull(controller) {
        sent += 65536;
        controller.enqueue(new Uint8Array(65536).fill(0x20));
        if (sent >= total) controller.close();
      },
    });
    const chunked = await fetch(`${url}big`, {
      method: "POST",
      body: large,
      headers: { "content-type": "application/json" },
    });
    const sentWhenAnswered = sent;
    assertEquals(chunked.status, 413);
    await chunked.body?.cancel();
    assert(sentWhenAnswered < total / 4, `answered after ${sentWhenAnswered} bytes`);
  } finally {
    await close();
  }
});

Deno.test("hostile uids and file names can neither inject headers nor escape the volume", async () => {
  const parent = await Deno.makeTempDir();
  const archive = await makeArchive([{ id: "f", path: "f", size: 100 }]);
  const cartd = await openTestCartd(`file://${archive.dir}`, {
    VOLUME_PATH: join(parent, "volume"),
  });
  const { url, close } = serveApp(cartd);
  const request = JSON.stringify(archive.request);
  const post = (uid: string) =>
    fetch(`${url}${uid}`, {
      method: "POST",
      body: request,
      headers: { "content-type": "application/json" },
    });
  try {
    const uids = [
      "x%0D%0AX-Evil:%201",
      "..",
      "%2E%2E",
      "a%2Fb",
      "..%2F..%2Fetc",
      "u".repeat(300),
      "%00",
      "a%5Cb",
      "-",
      "%E2%88%95",
    ];
    for (const uid of uids) {
      const created = await post(uid);
      const body = await created.text();
      assertEquals(created.headers.get("x-evil"), null);
      // `..` never reaches the server as a segment: URL parsing makes it `/`.
      assert([201, 400, 404, 405].includes(created.status), `${uid}: ${created.status} ${body}`);
      for (const method of ["HEAD", "GET", "DELETE"]) {
        const response = await fetch(`${url}${uid}`, { method });
        await response.body?.cancel();
        assertEquals(response.headers.get("x-evil"), null, `${method} ${uid}`);
        for (const [, value] of response.headers) assert(!/[\r\n]/.test(value));
      }
    }

    await post("good");
    for (
      let i = 0;
      i < 50 &&
      (await fetch(`${url}good`, { method: "HEAD" })).headers.get("x-pacifica-status") !== "ready";
      i++
    ) {
      await sleep(50);
    }
    const names = [
      "../../etc/passwd",
      "a\r\nSet-Cookie: x=1",
      "..",
      "%2F..%2F",
      "/abs.tar",
      "n".repeat(10_000),
      "ünï.tar",
      "..\\..\\x.tar",
    ];
    for (const name of names) {
      const response = await fetch(`${url}good?filename=${encodeURIComponent(name)}`);
      assertEquals(response.status, 200, name);
      assertEquals(response.headers.get("set-cookie"), null);
      const disposition = response.headers.get("content-disposition")!;
      assert(disposition.length < 1000 && !/[\r\n]/.test(disposition), disposition.slice(0, 100));
      assertMatch(disposition, /^attachment; filename="[^"/\\]*"/);
      const tar = new Uint8Array(await response.arrayBuffer());
      // Every member name starts with one safe folder name.
      const members = (await runWithInput("tar", ["-tf", "-"], tar)).trim().split("\n");
      const root = members[0];
      assert(
        !root.startsWith("/") && !root.startsWith("..") && root.endsWith("/") &&
          root.split("/").length === 2,
        root,
      );
      assert(members.every((m) => m.startsWith(root)), members.join());
    }
    const outside = [...Deno.readDirSync(parent)].map((e) => e.name);
    assertEquals(outside, ["volume"], "nothing written outside the volume");
  } finally {
    await close();
  }
});

Deno.test("symlinks planted in the volume cannot make cartd read or write outside it", async () => {
  const outside = await Deno.makeTempDir({ prefix: "cartd-outside-" });
  const secret = join(outside, "secret");
  await Deno.writeTextFile(secret, "s".repeat(1000));
  const archive = await makeArchive([{ id: "a", path: "dir/a", size: 1000 }, {
    id: "b",
    path: "b",
    size: 1000,
  }]);
  const cartd = await openTestCartd(`file://${archive.dir}`);
  try {
    // 1. A staged cart whose data folder is swapped for a link: the tar refuses to read through it.
    const { cart } = await cartd.service.create(
      "read",
      parseCartRequest(JSON.stringify(archive.request)),
    );
    assertEquals((await cartd.worker().drainCart(cart.id))?.status, "ready");
    const dir = join(cartd.volume.dataRoot(cart.id), "dir");
    await Deno.remove(dir, { recursive: true });
    await Deno.mkdir(join(outside, "dir"));
    await Deno.copyFile(secret, join(outside, "dir", "a"));
    await Deno.symlink(join(outside, "dir"), dir);
    const tar = await cartd.service.download("read", "read");
    let leaked = false;
    let failed = false;
    try {
      for await (const chunk of await tar.open()) {
        if (new TextDecoder().decode(chunk).includes("s".repeat(100))) leaked = true;
      }
    } catch {
      failed = true;
    }
    assert(failed, "the download stops");
    assert(!leaked, "no byte of the outside file was sent");

    // 2. Links planted before the pull, for a data folder and for the partial folder.
    const second = await cartd.service.create(
      "write",
      parseCartRequest(JSON.stringify(archive.request)),
    );
    const root = cartd.volume.cartDir(second.cart.id);
    await Deno.mkdir(join(root, "data"), { recursive: true });
    await Deno.symlink(outside, join(root, "data", "dir"));
    await Deno.symlink(outside, join(root, "partial"));
    const done = await cartd.worker().drainCart(second.cart.id);
    assertEquals(done?.status, "error");
    assertMatch(done!.message, /leads outside the cart's directory/);

    // 3. A link planted where the partial file goes: replaced, never followed. (A file no cart
    // staged before, so it is pulled, not taken from the cache.)
    const fresh = bytes(1000, 99);
    await Deno.writeFile(join(archive.dir, "c"), fresh);
    const freshSum = createHash("sha1").update(fresh).digest("hex");
    const third = await cartd.service.create(
      "partial",
      parseCartRequest(JSON.stringify({
        fileids: [{ id: "c", path: "c", hashtype: "sha1", hashsum: freshSum }],
      })),
    );
    const files = await cartd.store.carts.files(third.cart.id);
    await Deno.mkdir(join(cartd.volume.cartDir(third.cart.id), "partial"), { recursive: true });
    const partial = join(cartd.volume.cartDir(third.cart.id), "partial");
    await Deno.symlink(secret, join(partial, `${files[0].id}.part`));
    await Deno.symlink(secret, join(partial, `${files[0].id}.left-by-a-crash.part`));
    assertEquals((await cartd.worker().drainCart(third.cart.id))?.status, "ready");
    // A ready cart keeps no partial folder, nor what was left in it.
    await assertRejects(() => Deno.lstat(partial));

    // 4. A staged file swapped for a link to an outside file of the same size: refused too.
    const fourth = await cartd.service.create(
      "file-link",
      parseCartRequest(JSON.stringify({ fileids: archive.request.fileids.slice(1) })),
    );
    assertEquals((await cartd.worker().drainCart(fourth.cart.id))?.status, "ready");
    const staged = cartd.volume.filePath(fourth.cart.id, "b");
    await Deno.remove(staged);
    await Deno.symlink(secret, staged);
    const linked = await cartd.service.download("file-link", "file-link");
    const error = await assertRejects(async () => {
      for await (const chunk of await linked.open()) {
        assert(!new TextDecoder().decode(chunk).includes("s".repeat(100)), "no outside byte");
      }
    });
    assertMatch(
      error.message,
      /b: a symlink on its way leads elsewhere|b is not a regular file on the volume any more/,
    );

    // 5. The same, and a folder swapped for a link, while a download is under way: the files
    // after the swap are refused when they are reached.
    const big = await makeArchive([
      { id: "big", path: "a_big", size: 8_000_000 },
      { id: "small", path: "z_small", size: 1000 },
      { id: "deep", path: "z_dir/deep", size: 1000 },
    ]);
    const other = await openTestCartd(`file://${big.dir}`);
    try {
      for (const swap of ["file", "folder", "fifo"]) {
        const uid = `swap-${swap}`;
        const made = await other.service.create(
          uid,
          parseCartRequest(JSON.stringify(big.request)),
        );
        assertEquals((await other.worker().drainCart(made.cart.id))?.status, "ready");
        const download = await other.service.download(uid, uid);
        const reader = (await download.open()).getReader();
        await reader.read(); // under way, well before the small files
        if (swap === "file") {
          const path = other.volume.filePath(made.cart.id, "z_small");
          await Deno.remove(path);
          await Deno.symlink(secret, path);
        } else if (swap === "fifo") {
          // A pipe no one writes to: reading it would block the download for ever.
          const path = other.volume.filePath(made.cart.id, "z_small");
          await Deno.remove(path);
          const fifo = await new Deno.Command("mkfifo", { args: [path] }).output();
          assert(fifo.success, "mkfifo");
        } else {
          const path = join(other.volume.dataRoot(made.cart.id), "z_dir");
          await Deno.rename(path, `${path}.old`);
          await Deno.mkdir(join(outside, "z_dir"));
          await Deno.copyFile(secret, join(outside, "z_dir", "deep"));
          await Deno.symlink(join(outside, "z_dir"), path);
        }
        const swapped = await assertRejects(async () => {
          while (true) {
            const { value, done } = await reader.read();
            if (done) break;
            assert(!new TextDecoder().decode(value).includes("s".repeat(100)), "no outside byte");
          }
        });
        // (The folder's own check may say it first.)
        assertMatch(
          swapped.message,
          /a symlink on its way leads elsewhere|leads outside the cart's directory|z_small is not a regular file/,
          swap,
        );
      }
    } finally {
      await other.close();
    }

    assertEquals(
      await Deno.readTextFile(secret),
      "s".repeat(1000),
      "the outside file is untouched",
    );
    assertEquals(
      (await listFiles(outside)).sort(),
      ["dir/a", "secret", "z_dir/deep"],
      "nothing new outside",
    );
  } finally {
    await cartd.close();
  }
});
