/**
 * The shared cache, against the archive simulator in tape mode (which counts every request): a
 * file verified once serves every later cart that asks for it, with no stage or pull, and stays
 * as cache when its carts are gone, until space is needed or gc takes it.
 */
import { DatabaseSync } from "node:sqlite";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { type FileSpec, makeArchive } from "./support/archive.ts";
import { cartdEnv, runCli } from "./support/cli.ts";
import { stageCart, withSimulator } from "./support/cartd.ts";
import type { TestCartd } from "./support/cartd.ts";
import { type ArchiveSimulator, startArchiveSimulator } from "../fixtures/archive_server.ts";
import { startServer, waitWhileStaging } from "./support/server.ts";
import { fileIdentity, waitingMessage } from "../src/store/cache.ts";

const twenty: FileSpec[] = Array.from({ length: 20 }, (_, i) => ({
  id: `run/f${i}`,
  path: `data/f${i}.dat`,
  size: 2000 + i,
}));

/** Every request the simulator answered, of every kind. */
function requests(simulator: ArchiveSimulator): number {
  let total = 0;
  for (const counts of Object.values(simulator.counts)) {
    for (const n of counts.values()) total += n;
  }
  return total;
}

/** Runs SQL on a test cartd's SQLite database, as a site's older cartd or an operator might. */
function sqlOn(cartd: TestCartd, statement: string) {
  const db = new DatabaseSync(`${cartd.volume.root}/cartd.sqlite3`);
  db.exec(statement);
  db.close();
}

/** The volume as a cartd before the cache left it: each file's one copy in its cart's folder. */
async function asBeforeTheCache(cartd: TestCartd) {
  for await (const entry of Deno.readDir(`${cartd.volume.root}/cache`)) {
    await Deno.remove(`${cartd.volume.root}/cache/${entry.name}`);
  }
  sqlOn(cartd, "update blobs set key = null");
}

/** The running total of cached bytes is the sum of the cached files' sizes. */
async function assertTotalsKept(cartd: TestCartd) {
  const blobs = await cartd.store.cache.all();
  const counts = await cartd.store.stats.counts(Date.now());
  assertEquals(counts.cartBytes, blobs.reduce((sum, b) => sum + Number(b.size), 0));
}

async function tarOf(cartd: TestCartd, uid: string): Promise<Uint8Array> {
  const tar = await cartd.service.download(uid, "same.tar");
  return new Uint8Array(await new Response(await tar.open()).arrayBuffer());
}

Deno.test("a cart of files another cart staged takes them from the cache: no archive request, ready at once, the same tar", async () => {
  await withSimulator(twenty, { mode: "tape", tapeDelayMs: 200 }, {}, async (setup) => {
    const { archive, simulator, cartd } = setup;
    const first = await stageCart(cartd, "a", archive.request);
    assertEquals(first.done?.status, "ready");
    const asked = requests(simulator);
    assert(asked >= 60, `${asked} requests for the first cart`);

    const started = performance.now();
    const second = await stageCart(cartd, "b", archive.request);
    const took = performance.now() - started;
    assertEquals(second.done?.status, "ready");
    assertEquals(requests(simulator), asked, "no stage, status or pull for a cached file");
    assert(took < 100, `ready in ${took.toFixed(0)} ms`);
    console.log(
      `20 cached files ready in ${took.toFixed(1)} ms; ${asked} archive requests saved`,
    );

    const report = await cartd.service.detailedReport("b");
    assert(report.files.every((f) => f.fromCache && f.verified && f.state === "ready"));
    assert((await cartd.service.detailedReport("a")).files.every((f) => !f.fromCache));
    assertEquals(await tarOf(cartd, "b"), await tarOf(cartd, "a"), "byte-identical tars");

    // Each file is on the volume once: the carts' files and the cache are links of one inode.
    const blobs = await cartd.store.cache.all();
    assertEquals(blobs.length, 20);
    const one = blobs[0];
    assertEquals((await Deno.stat(cartd.volume.cachePath(one.key!))).nlink, 3);
  });
});

Deno.test("deleting carts leaves their files as cache; a new cart reuses it; space pressure evicts the cache before any cart", async () => {
  const sets = ["x", "y", "z"].flatMap((set) =>
    Array.from({ length: 5 }, (_, i) => ({ id: `${set}${i}`, size: 10_000 }))
  );
  // Room for two sets of 50 000 bytes, not three.
  await withSimulator(sets, {}, { CARTD_VOLUME_SIZE_LIMIT: "120 KB" }, async (setup) => {
    const { archive, simulator, cartd } = setup;
    const set = (name: string) => ({
      fileids: archive.request.fileids.filter((f) => f.id.startsWith(name)),
    });
    assertEquals((await stageCart(cartd, "a", set("x"))).done?.status, "ready");
    assertEquals((await stageCart(cartd, "b", set("x"))).done?.status, "ready");
    await cartd.service.delete("a");
    assertEquals((await tarOf(cartd, "b")).length > 50_000, true, "b keeps every file");
    await cartd.service.delete("b");
    assertEquals(await cartd.store.cache.unreferencedTotals(), { files: 5, bytes: 50_000 });

    const asked = requests(simulator);
    assertEquals((await stageCart(cartd, "c", set("x"))).done?.status, "ready");
    assertEquals(requests(simulator), asked, "c took x from the cache");
    await cartd.service.delete("c");

    // y is staged and kept by a cart; z needs room: the unreferenced x goes, not cart d.
    assertEquals((await stageCart(cartd, "d", set("y"))).done?.status, "ready");
    assertEquals((await stageCart(cartd, "e", set("z"))).done?.status, "ready");
    assertEquals((await cartd.service.report("d")).status, "ready");
    const left = (await cartd.store.cache.all()).map((b) => b.archive_id[0]);
    assertEquals(left.filter((id) => id === "y").length, 5, "d's files all stay");
    assertEquals(left.filter((id) => id === "z").length, 5);
    // Only as much of the cache as z needed went (three of x's five files, least used first).
    assertEquals(left.filter((id) => id === "x").length, 2);
    assert((await tarOf(cartd, "d")).length > 50_000);
    await assertTotalsKept(cartd);
  });
});

Deno.test("a request with another checksum, or a file changed in the archive, is pulled again", async () => {
  await withSimulator([{ id: "f", size: 3000 }], {}, {}, async (setup) => {
    const { archive, simulator, cartd } = setup;
    const [file] = archive.request.fileids;
    assertEquals((await stageCart(cartd, "a", archive.request)).done?.status, "ready");
    assertEquals(simulator.count("pull", "f"), 1);

    // Another checksum: not the cached file (and not the archive's either).
    const wrong = { fileids: [{ ...file, hashsum: "0".repeat(file.hashsum.length) }] };
    assertEquals((await stageCart(cartd, "b", wrong)).done?.status, "error");
    assert(simulator.count("pull", "f") > 1, "pulled, not taken from the cache");

    // No checksum: the archive's size and mtime decide, with one status request each.
    const unchecked = { fileids: [{ ...file, hashsum: "" }] };
    const pulls = simulator.count("pull", "f");
    const statuses = simulator.count("status", "f");
    assertEquals((await stageCart(cartd, "c", unchecked)).done?.status, "ready");
    assertEquals(simulator.count("pull", "f"), pulls, "c took a's copy");
    assertEquals(simulator.count("status", "f"), statuses + 1);
    assertEquals((await cartd.service.detailedReport("c")).files[0].fromCache, true);

    // The file replaced under the same id: new size and mtime, so pulled again.
    await Deno.writeFile(`${archive.dir}/f`, new Uint8Array(4000).fill(7));
    await Deno.utime(`${archive.dir}/f`, 1_700_000_000, 1_700_000_000);
    assertEquals((await stageCart(cartd, "e", unchecked)).done?.status, "ready");
    assertEquals(simulator.count("pull", "f"), pulls + 1);
    const e = await cartd.service.detailedReport("e");
    assertEquals([e.files[0].size, e.files[0].fromCache], [4000, false]);
  });
});

Deno.test("gc reclaims and reports cached files no cart refers to", async () => {
  await withSimulator([{ id: "g", size: 5000 }], {}, {}, async ({ archive, cartd }) => {
    assertEquals((await stageCart(cartd, "a", archive.request)).done?.status, "ready");
    await cartd.service.delete("a");
    const dry = await cartd.service.collectGarbage({ dryRun: true, olderThan: 0 });
    assertEquals(dry.cache, { files: 1, bytes: 5000 });
    assertEquals((await cartd.store.cache.all()).length, 1, "a dry run removes nothing");
    const kept = await cartd.service.collectGarbage({ dryRun: false });
    assertEquals(kept.cache, { files: 0, bytes: 0 }, "kept until space is needed");
    const done = await cartd.service.collectGarbage({ dryRun: false, olderThan: 0 });
    assertEquals(done.cache, { files: 1, bytes: 5000 });
    assertEquals(await cartd.store.cache.all(), []);
    await assertTotalsKept(cartd);

    // Carts gc removes leave their files as cache, which goes in the same run: the dry run says so.
    assertEquals((await stageCart(cartd, "c", archive.request)).done?.status, "ready");
    const preview = await cartd.service.collectGarbage({ dryRun: true, olderThan: 0 });
    const real = await cartd.service.collectGarbage({ dryRun: false, olderThan: 0 });
    assertEquals(preview.removed.map((r) => r.uid), ["c"]);
    assertEquals(real.removed.map((r) => r.uid), ["c"]);
    assertEquals(preview.cache, real.cache);
    assertEquals(real.cache, { files: 1, bytes: 5000 });
  });
});

Deno.test("a symlink planted for the cache folder is never followed: the file is pulled instead", async () => {
  await withSimulator([{ id: "s", size: 2000 }], {}, {}, async ({ archive, simulator, cartd }) => {
    assertEquals((await stageCart(cartd, "a", archive.request)).done?.status, "ready");
    const cache = `${cartd.volume.root}/cache`;
    const elsewhere = await Deno.makeTempDir({ prefix: "cartd-outside-" });
    for await (const entry of Deno.readDir(cache)) {
      await Deno.writeTextFile(`${elsewhere}/${entry.name}`, "not the archive's file");
    }
    await Deno.remove(cache, { recursive: true });
    await Deno.symlink(elsewhere, cache);
    assertEquals((await stageCart(cartd, "b", archive.request)).done?.status, "ready");
    assertEquals(simulator.count("pull", "s"), 2, "pulled, not linked through the symlink");
    const report = await cartd.service.detailedReport("b");
    assertEquals([report.files[0].fromCache, report.files[0].verified], [false, true]);
  });
});

Deno.test("cartd list and gc --dry-run show what the cache holds", async () => {
  const archive = await makeArchive([{ id: "l", size: 3000 }]);
  const env = cartdEnv(await Deno.makeTempDir({ prefix: "cartd-" }), `file://${archive.dir}`);
  const created = await runCli(["create", "one", "-", "--wait"], {
    env,
    stdin: JSON.stringify(archive.request),
  });
  assertEquals(created.code, 0, created.stderr);
  assertEquals((await runCli(["delete", "one"], { env })).code, 0);
  const listed = await runCli(["list"], { env });
  assertEquals(listed.stdout.trim(), "no carts; cache: 1 file(s), 2.9 KiB no cart refers to");
  const dry = await runCli(["gc", "--dry-run", "--older-than", "0s"], { env });
  assertMatch(dry.stdout, /would remove 1 cached file\(s\) no cart refers to \(2\.9 KiB\)/);
});

Deno.test("files staged before the cache join it after cartd db migrate, with no pull", async () => {
  await withSimulator(twenty.slice(0, 3), {}, {}, async ({ archive, simulator, cartd }) => {
    assertEquals((await stageCart(cartd, "old", archive.request)).done?.status, "ready");
    await asBeforeTheCache(cartd);

    await cartd.migrate();
    assert((await cartd.store.cache.all()).every((b) => b.key !== null));
    const pulls = requests(simulator);
    assertEquals((await stageCart(cartd, "new", archive.request)).done?.status, "ready");
    assertEquals(requests(simulator), pulls, "taken from what the old cart had staged");
    assertEquals(await tarOf(cartd, "new"), await tarOf(cartd, "old"));
  });
});

Deno.test("ten carts asking for the same 50 files at once: each file is staged and pulled once", async () => {
  const fifty = Array.from({ length: 50 }, (_, i) => ({ id: `same/f${i}`, size: 1000 + i }));
  await withSimulator(fifty, { mode: "tape", tapeDelayMs: 300 }, {}, async (setup) => {
    const { archive, simulator, cartd } = setup;
    const { parseCartRequest } = await import("../src/cart/request.ts");
    const carts = await Promise.all(
      Array.from(
        { length: 10 },
        (_, i) => cartd.service.create(`c${i}`, parseCartRequest(JSON.stringify(archive.request))),
      ),
    );
    const stop = new AbortController();
    const working = cartd.worker().run(stop.signal);
    try {
      const deadline = Date.now() + 60_000;
      for (const { cart } of carts) {
        while ((await cartd.store.carts.byId(cart.id))?.status === "staging") {
          if (Date.now() > deadline) throw new Error("not all ready in time");
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        assertEquals((await cartd.store.carts.byId(cart.id))?.status, "ready");
      }
    } finally {
      stop.abort();
      await working;
    }
    for (const file of fifty) {
      assertEquals(simulator.count("stage", file.id), 1, `${file.id} staged once`);
      assertEquals(simulator.count("pull", file.id), 1, `${file.id} pulled once`);
    }
    // Without the cache each cart would have asked what one cart asks now.
    console.log(
      `10 carts × 50 shared files: ${requests(simulator)} archive requests, ` +
        `${9 * requests(simulator)} saved (stages and pulls: ${9 * 100})`,
    );
    const tars = await Promise.all(carts.map(({ cart }) => tarOf(cartd, cart.uid)));
    for (const tar of tars) assertEquals(tar, tars[0]);
    await assertTotalsKept(cartd);
  });
});

Deno.test("when the pull another cart waits on fails, the waiting cart pulls the file itself", async () => {
  // The first pull of the file is answered 404 (its cart fails at once); the next succeeds.
  const faults = [{ op: "pull" as const, kind: "404" as const, id: "w", times: 1 }];
  await withSimulator([{ id: "w", size: 4000 }], { faults }, {}, async (setup) => {
    const { archive, simulator, cartd } = setup;
    const { parseCartRequest } = await import("../src/cart/request.ts");
    const first = await cartd.service.create(
      "first",
      parseCartRequest(JSON.stringify(archive.request)),
    );
    // The first cart's file, claimed (for half a second), leads the pull before the second cart
    // exists.
    const file = (await cartd.store.work.claim("test", Date.now(), 500, first.cart.id))!;
    const identity = fileIdentity(file.archive_id, file.hash_type, file.hash_sum);
    const turn = await cartd.store.cache.leadPull(
      identity,
      { id: file.id, owner: "test" },
      Date.now(),
      {
        untilMs: 1000,
        abandonedMs: 60_000,
      },
    );
    assertEquals(turn, "lead");
    const second = await cartd.service.create(
      "second",
      parseCartRequest(JSON.stringify(archive.request)),
    );
    // The second cart's file, claimed, waits, and says why.
    const claimed = await cartd.store.work.claim("w2", Date.now(), 60_000, second.cart.id);
    const waits = await cartd.store.cache.leadPull(
      identity,
      { id: claimed!.id, owner: "w2" },
      Date.now(),
      {
        untilMs: 1000,
        abandonedMs: 60_000,
      },
    );
    assertEquals(waits, "wait");
    const [waiting] = await cartd.store.carts.files(second.cart.id);
    assertEquals([waiting.error, waiting.owner], [waitingMessage, null]);
    const stop = new AbortController();
    const working = cartd.worker().run(stop.signal);
    try {
      for (const { cart } of [first, second]) {
        while ((await cartd.store.carts.byId(cart.id))?.status === "staging") {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
    } finally {
      stop.abort();
      await working;
    }
    assertEquals((await cartd.store.carts.byId(first.cart.id))?.status, "error");
    assertEquals((await cartd.store.carts.byId(second.cart.id))?.status, "ready");
    assertEquals(simulator.count("pull", "w"), 2, "the failed pull, then the second cart's own");
  });
});

Deno.test("eviction frees only what no remaining cart holds: a cart sharing every file is spared", async () => {
  const sets = ["x", "e"].flatMap((set) =>
    Array.from({ length: 5 }, (_, i) => ({ id: `${set}${i}`, size: 10_000 }))
  );
  const env = {
    CARTD_VOLUME_SIZE_LIMIT: "80 KB",
    CARTD_SPACE_WAIT: "1s",
    LRU_BUFFER_TIME: "5",
  };
  await withSimulator(sets, {}, env, async ({ archive, cartd }) => {
    const set = (name: string) => ({
      fileids: archive.request.fileids.filter((f) => f.id.startsWith(name)),
    });
    assertEquals((await stageCart(cartd, "old", set("x"))).done?.status, "ready");
    // Made old enough to evict; "recent" holds the same files and was just used.
    sqlOn(cartd, "update carts set used_at = used_at - 60000");
    assertEquals((await stageCart(cartd, "recent", set("x"))).done?.status, "ready");
    // e needs 50 000 bytes where 30 000 are free: evicting "old" would free nothing.
    assertEquals((await stageCart(cartd, "e", set("e"))).done?.status, "error");
    assertEquals((await cartd.service.report("old")).status, "ready", "not evicted for nothing");
    await assertTotalsKept(cartd);
  });
});

Deno.test("files staged before the cache are checked before they join it: a planted symlink is not", async () => {
  await withSimulator(twenty.slice(0, 2), {}, {}, async ({ archive, simulator, cartd }) => {
    const { cart } = await stageCart(cartd, "old", archive.request);
    await asBeforeTheCache(cartd);
    // The old cart's folder swapped for a link to files of the same sizes elsewhere.
    const outside = await Deno.makeTempDir({ prefix: "cartd-outside-" });
    for (const f of twenty.slice(0, 2)) {
      await Deno.writeFile(`${outside}/${f.path!.split("/")[1]}`, new Uint8Array(f.size!).fill(65));
    }
    const folder = `${cartd.volume.dataRoot(cart.id)}/data`;
    await Deno.remove(folder, { recursive: true });
    await Deno.symlink(outside, folder);

    await cartd.migrate();
    assert((await cartd.store.cache.all()).every((b) => b.key === null), "none joined");
    const pulls = simulator.count("pull", "run/f0");
    const fresh = await stageCart(cartd, "new", archive.request);
    assertEquals(fresh.done?.status, "ready");
    assertEquals(simulator.count("pull", "run/f0"), pulls + 1, "pulled, not the planted file");
    const tar = await tarOf(cartd, "new");
    assert(!new TextDecoder().decode(tar).includes("A".repeat(100)));
  });
});

Deno.test("a file left in the cache folder by a crash (linked, never recorded) is swept away", async () => {
  await withSimulator([{ id: "k", size: 100 }], {}, {}, async ({ archive, cartd }) => {
    assertEquals((await stageCart(cartd, "a", archive.request)).done?.status, "ready");
    const stray = cartd.volume.cachePath(crypto.randomUUID());
    await Deno.writeTextFile(stray, "left by a crash");
    const { sweepCacheFolder } = await import("../src/volume/space.ts");
    assertEquals(await sweepCacheFolder(cartd.store, cartd.volume, Date.now()), 0, "too recent");
    assertEquals(await sweepCacheFolder(cartd.store, cartd.volume, Date.now() + 7_200_000), 1);
    assert(!(await Deno.stat(stray).then(() => true, () => false)));
    const [blob] = await cartd.store.cache.all();
    assert(await Deno.stat(cartd.volume.cachePath(blob.key!)).then(() => true), "recorded stays");
  });
});

Deno.test("a pull no process works on any more (a foreground run stopped) is taken over", async () => {
  const env = { CARTD_LEASE_TIME: "1s", CARTD_POLL_MAX_INTERVAL: "1s" };
  await withSimulator([{ id: "t", size: 1000 }], {}, env, async (setup) => {
    const { archive, simulator, cartd } = setup;
    const { parseCartRequest } = await import("../src/cart/request.ts");
    const request = parseCartRequest(JSON.stringify(archive.request));
    const stopped = await cartd.service.create("stopped", request);
    const [file] = await cartd.store.carts.files(stopped.cart.id);
    const identity = fileIdentity(file.archive_id, file.hash_type, file.hash_sum);
    await cartd.store.cache.leadPull(identity, { id: file.id, owner: "gone" }, Date.now(), {
      untilMs: 1000,
      abandonedMs: 2000,
    });
    // No process works on "stopped": "waiting" does not wait for it for ever.
    const started = performance.now();
    const waiting = await stageCart(cartd, "waiting", archive.request);
    assertEquals(waiting.done?.status, "ready");
    assert(performance.now() - started < 10_000);
    assertEquals(simulator.count("pull", "t"), 1);
  });
});

Deno.test("of older carts, the one sharing its files with a newer cart is spared when another makes room", async () => {
  const sets = ["x", "y", "e"].flatMap((set) =>
    Array.from({ length: 5 }, (_, i) => ({ id: `${set}${i}`, size: 10_000 }))
  );
  const env = { CARTD_VOLUME_SIZE_LIMIT: "120 KB", LRU_BUFFER_TIME: "5" };
  await withSimulator(sets, {}, env, async ({ archive, cartd }) => {
    const set = (name: string) => ({
      fileids: archive.request.fileids.filter((f) => f.id.startsWith(name)),
    });
    assertEquals((await stageCart(cartd, "old", set("x"))).done?.status, "ready");
    assertEquals((await stageCart(cartd, "mid", set("y"))).done?.status, "ready");
    sqlOn(cartd, "update carts set used_at = used_at - 60000 where uid = 'old'");
    sqlOn(cartd, "update carts set used_at = used_at - 30000 where uid = 'mid'");
    assertEquals((await stageCart(cartd, "recent", set("x"))).done?.status, "ready");
    assertEquals((await stageCart(cartd, "e", set("e"))).done?.status, "ready");
    assertEquals((await cartd.service.report("old")).status, "ready", "evicting it frees nothing");
    const carts = (await cartd.service.list()).map((c) => c.uid).sort();
    assertEquals(carts, ["e", "old", "recent"]);
    await assertTotalsKept(cartd);
  });
});

Deno.test("SIGKILL while two carts wait on one pull: both end ready, the file pulled at most twice", async () => {
  const archive = await makeArchive([{ id: "big", size: 3_000_000 }]);
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    faults: [{ op: "pull", kind: "slow", bytesPerSecond: 1_000_000 }],
  });
  const env = cartdEnv(await Deno.makeTempDir({ prefix: "cartd-" }), simulator.url, {
    CARTD_LOG: "warn",
  });
  const post = async (url: string, uid: string) => {
    const response = await fetch(`${url}${uid}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(archive.request),
    });
    await response.body?.cancel();
  };
  let node = await startServer(env);
  try {
    await post(node.url, "one");
    await post(node.url, "two");
    while (simulator.count("pull", "big") === 0) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 500));
    node.child.kill("SIGKILL");
    await node.exited;
    node = await startServer(env);
    for (const uid of ["one", "two"]) {
      const done = await waitWhileStaging(`${node.url}${uid}`, 100, 30_000);
      assertEquals(done.headers.get("x-pacifica-status"), "ready", uid);
    }
    assert(simulator.count("pull", "big") <= 2, `${simulator.count("pull", "big")} pulls`);
    const one = new Uint8Array(await (await fetch(`${node.url}one?filename=x`)).arrayBuffer());
    const two = new Uint8Array(await (await fetch(`${node.url}two?filename=x`)).arrayBuffer());
    assertEquals(one, two);
  } finally {
    node.child.kill("SIGTERM");
    await node.exited;
    await simulator.stop();
  }
});

/**
 * Bytes cartd holds on the volume (carts' files, partial ones and the cache), each file once: of
 * the files seen on a walk, those still there when it ends, so never more than was there at once.
 */
async function bytesOnVolume(root: string): Promise<number> {
  const seen = new Map<number, string>();
  const walk = async (dir: string): Promise<void> => {
    const entries = [];
    try {
      for await (const entry of Deno.readDir(dir)) entries.push(entry);
    } catch {
      return; // removed meanwhile
    }
    for (const entry of entries) {
      const path = `${dir}/${entry.name}`;
      const info = await Deno.lstat(path).catch(() => undefined);
      if (!info) continue;
      if (info.isDirectory) await walk(path);
      else if (info.isFile) seen.set(info.ino!, path);
    }
  };
  await walk(`${root}/carts`);
  await walk(`${root}/cache`);
  let total = 0;
  for (const [ino, path] of seen) {
    const info = await Deno.lstat(path).catch(() => undefined);
    if (info?.ino === ino) total += info.size;
  }
  return total;
}

/**
 * Creates carts of the given files (by index into `files`) at once, runs a worker until all of
 * them are done, sampling what the volume holds meanwhile; returns the most it held.
 */
async function stageTogether(
  setup: { archive: Awaited<ReturnType<typeof makeArchive>>; cartd: TestCartd },
  files: FileSpec[],
  picks: Record<string, number[]>,
): Promise<{ most: number; carts: { id: number; uid: string }[] }> {
  const { archive, cartd } = setup;
  const { parseCartRequest } = await import("../src/cart/request.ts");
  const created = await Promise.all(
    Object.entries(picks).map(([uid, ids]) =>
      cartd.service.create(
        uid,
        parseCartRequest(JSON.stringify({
          fileids: ids.map((i) => archive.request.fileids.find((f) => f.id === files[i].id)),
        })),
      )
    ),
  );
  const carts = created.map(({ cart }) => ({ id: cart.id, uid: cart.uid }));
  let most = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      most = Math.max(most, await bytesOnVolume(cartd.volume.root));
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  const stop = new AbortController();
  const working = cartd.worker().run(stop.signal);
  try {
    const deadline = Date.now() + 60_000;
    for (const cart of carts) {
      while ((await cartd.store.carts.byId(cart.id))?.status === "staging") {
        if (Date.now() > deadline) {
          const files = (await cartd.store.work.all()).filter((f) => f.state !== "ready");
          const state = files.map((f) => `${f.cart_id} ${f.archive_id} ${f.state} ${f.error}`);
          throw new Error(`not all ready in time:\n${state.join("\n")}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  } finally {
    stop.abort();
    await working;
    sampling = false;
    await sampler;
  }
  return { most, carts };
}

/** Every cart ended ready (and maybe was evicted since), holding no promise of space. */
async function assertAllReady(cartd: TestCartd, carts: { id: number; uid: string }[]) {
  for (const cart of carts) {
    const row = await cartd.store.carts.byId(cart.id);
    assertEquals([row?.uid, row?.status], [cart.uid, "ready"], row?.message);
    assertEquals(row?.promised_bytes, 0);
  }
}

const tightVolume = (limit: number) => ({
  CARTD_VOLUME_SIZE_LIMIT: String(limit),
  CARTD_VOLUME_RESERVE: "0",
  // A ready cart may be evicted for the next at once.
  LRU_BUFFER_TIME: "0",
  CARTD_SPACE_WAIT: "120s",
});

Deno.test("carts that each fit the volume_size_limit but not together are staged one after the other, never part of the way each", async () => {
  const ten = Array.from({ length: 10 }, (_, i) => ({ id: `whole/f${i}`, size: 60_000 }));
  const limit = 400_000;
  await withSimulator(
    ten,
    { mode: "tape", tapeDelayMs: 100 },
    tightVolume(limit),
    async (setup) => {
      const { most, carts } = await stageTogether(setup, ten, {
        x: [0, 1, 2, 3, 4],
        y: [5, 6, 7, 8, 9],
      });
      await assertAllReady(setup.cartd, carts);
      assert(most > 0 && most <= limit, `at most ${most} bytes on the volume (limit ${limit})`);
      for (const file of ten) assertEquals(setup.simulator.count("pull", file.id), 1);
      const [first, second] = (await setup.cartd.store.carts.all())
        .sort((a, b) => Number(a.ready_at) - Number(b.ready_at));
      assertEquals(first.delete_reason, "evicted", "the first was evicted for the second");
      assert(
        Number(second.admitted_at) >= Number(first.ready_at),
        "admitted once the first was done",
      );
    },
  );
});

Deno.test("carts sharing files that each fit the volume_size_limit but not together: each is admitted whole in turn, all end ready, and the limit is never passed", async () => {
  // Twelve files; each cart needs eight of them (480 000 bytes), any two together ten or more.
  const twelve = Array.from({ length: 12 }, (_, i) => ({ id: `share/f${i}`, size: 60_000 }));
  const limit = 600_000;
  await withSimulator(
    twelve,
    { mode: "tape", tapeDelayMs: 100 },
    tightVolume(limit),
    async (setup) => {
      const { most, carts } = await stageTogether(setup, twelve, {
        a: [0, 1, 2, 3, 4, 5, 6, 7],
        b: [4, 5, 6, 7, 8, 9, 10, 11],
        c: [0, 1, 2, 3, 8, 9, 10, 11],
      });
      await assertAllReady(setup.cartd, carts);
      assert(most > 0 && most <= limit, `at most ${most} bytes on the volume (limit ${limit})`);
      // A file is pulled again only when the carts that held it were evicted meanwhile.
      const pulls = twelve.reduce((n, f) => n + setup.simulator.count("pull", f.id), 0);
      assert(pulls < 24, `${pulls} pulls for 24 files asked for`);
      await assertTotalsKept(setup.cartd);
    },
  );
});
