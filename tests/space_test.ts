/** Disk space: reservations, least-recently-used eviction, lifetimes, deferred removal, gc. */
import { sleep } from "../src/time.ts";
import { join } from "node:path";
import { createApp } from "../src/http/app.ts";
import { Downloads } from "../src/http/downloads.ts";
import { parseCartRequest } from "../src/cart/request.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { openTestCartd, stageCart, type TestCartd, withSimulator } from "./support/cartd.ts";
import { cartdEnv, cliCommand, runCli } from "./support/cli.ts";
import { startServer, waitWhileStaging } from "./support/server.ts";

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

/** A one-file cart request for a file of `size` bytes in `archive`. */
function requestFor(archive: Awaited<ReturnType<typeof makeArchive>>, id: string) {
  return { fileids: archive.request.fileids.filter((f) => f.id === id) };
}

async function isLive(cartd: TestCartd, uid: string) {
  return await cartd.store.carts.live(uid) !== undefined;
}

Deno.test("with a small volume_size_limit, carts are evicted least recently used first, never one being downloaded", async () => {
  const archive = await makeArchive([
    { id: "A", size: 30_000 },
    { id: "B", size: 30_000 },
    { id: "C", size: 30_000 },
    { id: "D", size: 40_000 },
    { id: "E", size: 50_000 },
  ]);
  const cartd = await openTestCartd(`file://${archive.dir}`, {
    CARTD_VOLUME_SIZE_LIMIT: "100000",
    CARTD_VOLUME_RESERVE: "0",
  });
  try {
    for (const id of ["A", "B", "C"]) {
      assertEquals((await stageCart(cartd, id, requestFor(archive, id))).done?.status, "ready");
      await sleep(5);
    }
    await cartd.service.report("A"); // A is now the most recently used.

    // A download of B is running: B must not be evicted, although it is the least recently used.
    const b = await cartd.service.download("B", "b");
    await cartd.store.carts.touch((await cartd.service.find("B")).id, 0); // B is the oldest for sure
    const download = await b.open();

    const d = await stageCart(cartd, "D", requestFor(archive, "D"));
    assertEquals(d.done?.status, "ready", d.done?.message);
    assertEquals(await isLive(cartd, "C"), false, "C, least recently used and idle, was evicted");
    assertEquals(await isLive(cartd, "B"), true, "B is being downloaded");
    assertEquals(await isLive(cartd, "A"), true);
    assertEquals(await exists(cartd.volume.cartDir(d.cart.id - 1)), false, "C's files are gone");
    const bytes = new Uint8Array(await new Response(download).arrayBuffer());
    assertEquals(bytes.length, b.size, "B's download was not cut");

    // Now B (oldest) goes first, then A, to make room for E.
    const e = await stageCart(cartd, "E", requestFor(archive, "E"));
    assertEquals(e.done?.status, "ready", e.done?.message);
    assertEquals([await isLive(cartd, "B"), await isLive(cartd, "A"), await isLive(cartd, "D")], [
      false,
      false,
      true,
    ]);
    const reasons = (await cartd.store.carts.all()).filter((c) => c.deleted_at !== null)
      .sort((a, b) => Number(a.deleted_at) - Number(b.deleted_at) || a.id - b.id);
    // C went alone for D; B and A went together (in one eviction) for E.
    const evicted = reasons.map((r) => `${r.uid}:${r.delete_reason}`);
    assertEquals(evicted[0], "C:evicted");
    assertEquals(evicted.slice(1).sort(), ["A:evicted", "B:evicted"]);
  } finally {
    await cartd.close();
  }
});

Deno.test("a cart used within lru_buffer_time is not evicted, and a file that does not fit is never pulled", async () => {
  const files = [{ id: "old", size: 30_000 }, { id: "new", size: 30_000 }];
  const env = {
    CARTD_VOLUME_SIZE_LIMIT: "50000",
    CARTD_VOLUME_RESERVE: "0",
    LRU_BUFFER_TIME: "3600",
    CARTD_SPACE_WAIT: "1s",
  };
  await withSimulator(files, {}, env, async ({ archive, simulator, cartd }) => {
    assertEquals((await stageCart(cartd, "old", requestFor(archive, "old"))).done?.status, "ready");
    const { done } = await stageCart(cartd, "new", requestFor(archive, "new"));
    assertEquals(done?.status, "error");
    assertMatch(
      done!.message,
      /Not enough space to download file \(needs 29\.3 KiB; .* free on the volume after its reserve, 0 B of it held for pulls in progress and other carts; cartd uses 29\.3 KiB of its 48\.8 KiB limit, what is held included\)/,
    );
    assertEquals(await isLive(cartd, "old"), true, "protected by lru_buffer_time");
    assertEquals(simulator.count("pull", "new"), 0, "no pull without a reservation");
    assertEquals(simulator.count("status", "new"), 1, "its size was asked, nothing more");
  });
});

Deno.test("a file larger than the volume could ever hold fails at once, evicting nothing", async () => {
  const files = [{ id: "small", size: 22_000 }, { id: "huge", size: 150_000 }];
  const env = {
    CARTD_VOLUME_SIZE_LIMIT: "100000",
    CARTD_VOLUME_RESERVE: "0",
    CARTD_SPACE_WAIT: "10m",
  };
  await withSimulator(files, {}, env, async ({ archive, simulator, cartd }) => {
    assertEquals(
      (await stageCart(cartd, "small", requestFor(archive, "small"))).done?.status,
      "ready",
    );
    const started = Date.now();
    const { done } = await stageCart(cartd, "huge", requestFor(archive, "huge"));
    assertEquals(done?.status, "error");
    assert(Date.now() - started < 5000, "no waiting for space that can never come");
    assertMatch(
      done!.message,
      /Not enough space to download file: it needs 146\.5 KiB, and its volume_size_limit is 97\.7 KiB/,
    );
    assertEquals(await isLive(cartd, "small"), true, "nothing was evicted for it");
    assertEquals(simulator.count("pull", "huge"), 0);
  });
});

Deno.test("a cart that could never fit as a whole fails once its sizes are known, evicting nothing", async () => {
  const archive = await makeArchive([
    { id: "old", size: 30_000 },
    ...["a", "b", "c"].map((id) => ({ id, size: 40_000 })),
  ]);
  const cartd = await openTestCartd(`file://${archive.dir}`, {
    CARTD_VOLUME_SIZE_LIMIT: "100000",
    CARTD_VOLUME_RESERVE: "0",
    CARTD_SPACE_WAIT: "10m",
    LRU_BUFFER_TIME: "0",
  });
  try {
    assertEquals((await stageCart(cartd, "old", requestFor(archive, "old"))).done?.status, "ready");
    const started = Date.now();
    // Each file fits the limit, but the three together (120 000 bytes) never can.
    const whole = { fileids: archive.request.fileids.filter((f) => f.id !== "old") };
    const { done } = await stageCart(cartd, "three", whole);
    assertEquals(done?.status, "error");
    assertMatch(
      done!.message,
      /its cart needs at least 117\.2 KiB in all, and its volume_size_limit is 97\.7 KiB/,
    );
    assert(Date.now() - started < 10_000, "no waiting out space_wait");
    assertEquals(await isLive(cartd, "old"), true, "nothing was evicted for it");
  } finally {
    await cartd.close();
  }
});

Deno.test("eviction happens only when it makes the file fit; otherwise the file waits and evicts nothing", async () => {
  const archive = await makeArchive([
    { id: "held", size: 40_000 },
    { id: "idle", size: 30_000 },
    { id: "big", size: 65_000 },
    { id: "fits", size: 50_000 },
  ]);
  const cartd = await openTestCartd(`file://${archive.dir}`, {
    CARTD_VOLUME_SIZE_LIMIT: "100000",
    CARTD_VOLUME_RESERVE: "0",
    CARTD_SPACE_WAIT: "500ms",
  });
  try {
    for (const id of ["held", "idle"]) {
      assertEquals((await stageCart(cartd, id, requestFor(archive, id))).done?.status, "ready");
    }
    // "held" is being downloaded, so only "idle" (30 000 bytes) may be evicted: not enough for
    // 65 000 bytes in a 100 000-byte limit that holds 70 000.
    const download = await (await cartd.service.download("held", "held")).open();
    const big = await stageCart(cartd, "big", requestFor(archive, "big"));
    assertEquals(big.done?.status, "error");
    assertMatch(
      big.done!.message,
      /^Failed to pull file\(big: Not enough space to download file \(needs/,
    );
    assertEquals(await isLive(cartd, "idle"), true, "evicting it would not have made room");

    // 50 000 bytes fit once "idle" goes: then it goes.
    const fits = await stageCart(cartd, "fits", requestFor(archive, "fits"));
    assertEquals(fits.done?.status, "ready", fits.done?.message);
    assertEquals(await isLive(cartd, "idle"), false);
    assertEquals(await isLive(cartd, "held"), true);
    await download.cancel();
  } finally {
    await cartd.close();
  }
});

Deno.test("while a file waits for space, the cart's message says so, since when and why", async () => {
  const archive = await makeArchive([{ id: "a", size: 60_000 }, { id: "b", size: 60_000 }]);
  const cartd = await openTestCartd(`file://${archive.dir}`, {
    CARTD_VOLUME_SIZE_LIMIT: "100000",
    CARTD_VOLUME_RESERVE: "0",
    CARTD_SPACE_WAIT: "3s",
    LRU_BUFFER_TIME: "3600",
  });
  try {
    assertEquals((await stageCart(cartd, "a", requestFor(archive, "a"))).done?.status, "ready");
    const { cart } = await cartd.service.create(
      "b",
      parseCartRequest(JSON.stringify(requestFor(archive, "b"))),
    );
    const draining = cartd.worker().drainCart(cart.id);
    let report = await cartd.service.report("b");
    for (let i = 0; i < 40 && !report.message; i++) {
      await sleep(50);
      report = await cartd.service.report("b");
    }
    assertEquals(report.status, "staging");
    assertMatch(
      report.message,
      /^Waiting for space on the volume since \d{4}-.*Z: Not enough space to download file \(needs 58\.6 KiB;/,
    );
    assert(report.progress.waitingForSpaceSince !== null);
    assertEquals((await draining)?.status, "error");
  } finally {
    await cartd.close();
  }
});

Deno.test("a file waiting for space says so once, not at every try", async () => {
  const archive = await makeArchive([{ id: "a", size: 60_000 }, { id: "b", size: 60_000 }]);
  const volume = await Deno.makeTempDir();
  const env = cartdEnv(volume, `file://${archive.dir}`, {
    CARTD_VOLUME_SIZE_LIMIT: "100000",
    CARTD_VOLUME_RESERVE: "0",
    CARTD_SPACE_WAIT: "2s",
    LRU_BUFFER_TIME: "3600",
    CARTD_LOG: "info",
  });
  const first = await runCli(["create", "a", "-", "--wait"], {
    env,
    stdin: JSON.stringify(requestFor(archive, "a")),
  });
  assertEquals(first.code, 0, first.stderr);
  const second = await runCli(["create", "b", "-", "--wait"], {
    env,
    stdin: JSON.stringify(requestFor(archive, "b")),
  });
  assertEquals(second.code, 5);
  const lines = second.stderr.split("\n").filter((l) => l.includes("waiting for space"));
  assertEquals(lines.length, 1, second.stderr);
});

Deno.test("with lru_purge off nothing is evicted", async () => {
  const files = [{ id: "a", size: 30_000 }, { id: "b", size: 30_000 }];
  const env = {
    CARTD_VOLUME_SIZE_LIMIT: "50000",
    CARTD_VOLUME_RESERVE: "0",
    LRU_PURGE: "off",
    CARTD_SPACE_WAIT: "200ms",
  };
  await withSimulator(files, {}, env, async ({ archive, cartd }) => {
    await stageCart(cartd, "a", requestFor(archive, "a"));
    assertEquals((await stageCart(cartd, "b", requestFor(archive, "b"))).done?.status, "error");
    assertEquals(await isLive(cartd, "a"), true);
  });
});

Deno.test("two workers whose reservations together exceed the space do not both pull", async () => {
  const files = [{ id: "one", size: 100_000 }, { id: "two", size: 100_000 }];
  const faults = [{ op: "pull" as const, kind: "slow" as const, bytesPerSecond: 200_000 }];
  await withSimulator(files, { faults }, {}, async ({ archive, simulator }) => {
    const volume = await Deno.makeTempDir();
    const env = cartdEnv(volume, simulator.url, {
      CARTD_VOLUME_SIZE_LIMIT: "150000",
      CARTD_VOLUME_RESERVE: "0",
      // The first cart may be evicted for the second once it has been idle this long.
      LRU_BUFFER_TIME: "1",
    });
    for (const id of ["one", "two"]) {
      const created = await runCli(["create", id, "-"], {
        env,
        stdin: JSON.stringify(requestFor(archive, id)),
      });
      assertEquals(created.code, 0, created.stderr);
    }
    // Two separate processes, one per cart, started together.
    const runs = ["one", "two"].map((id) => cliCommand(["bundle", id], { env }).output());
    const results = await Promise.all(runs);
    assertEquals(simulator.maxConcurrentPulls, 1, "never two pulls at once");
    assertEquals(simulator.count("pull", "one") + simulator.count("pull", "two"), 2);
    // The second cart made room by evicting the first once that one was ready and idle.
    const codes = results.map((r) => r.code).sort();
    assertEquals(codes, [0, 0], results.map((r) => new TextDecoder().decode(r.stderr)).join("\n"));
    const list = JSON.parse((await runCli(["list", "--json"], { env })).stdout);
    assertEquals(list.length, 1);
  });
});

Deno.test("gc --dry-run removes nothing and reports what gc removes; a second gc removes nothing", async () => {
  const archive = await makeArchive([{ id: "x", size: 1000 }, { id: "y", size: 2000 }, {
    id: "z",
    size: 3000,
  }]);
  const volume = await Deno.makeTempDir();
  const env = cartdEnv(volume, `file://${archive.dir}`);
  for (const id of ["x", "y", "z"]) {
    await runCli(["create", id, "-", "--wait"], {
      env,
      stdin: JSON.stringify(requestFor(archive, id)),
    });
  }
  // x and y were last used a day ago; z just now.
  const cartd = await openTestCartd("file:///nowhere", { VOLUME_PATH: volume });
  for (const uid of ["x", "y"]) {
    await cartd.store.carts.touch((await cartd.service.find(uid)).id, Date.now() - 86_400_000);
  }
  await cartd.close();
  // A stray directory no cart owns.
  await Deno.mkdir(join(volume, "carts", "999", "data"), { recursive: true });

  const dry = await runCli(["gc", "--dry-run", "--json", "--older-than", "1h"], { env });
  assertEquals(dry.code, 0, dry.stderr);
  const planned = JSON.parse(dry.stdout);
  assertEquals(planned.dryRun, true);
  assertEquals(planned.removed.map((r: { uid: string }) => r.uid), ["x", "y"]);
  assertEquals(planned.removed.map((r: { bytes: number }) => r.bytes), [1000, 2000]);
  assertEquals(planned.strayDirectories, 1);
  assertEquals(
    JSON.parse((await runCli(["list", "--json"], { env })).stdout).length,
    3,
    "nothing removed",
  );
  assert(await exists(join(volume, "carts", "999")));

  const real = await runCli(["gc", "--json", "--older-than", "1h"], { env });
  const done = JSON.parse(real.stdout);
  assertEquals(done.removed.map((r: { uid: string }) => r.uid), ["x", "y"]);
  assertEquals(done.strayDirectories, 1);
  assertEquals((await runCli(["status", "x"], { env })).code, 3);
  assertEquals(await exists(join(volume, "carts", "999")), false);

  const again = await runCli(["gc", "--older-than", "1h"], { env });
  assertEquals(again.code, 0);
  assertMatch(again.stdout, /^nothing to do/);

  const text = await runCli(["purge", "--time-ago", "0 seconds ago", "--dry-run"], { env });
  assertMatch(text.stdout, /^would remove z \(2\.9 KiB\): unused since/);
});

Deno.test("gc --free evicts least-recently-used carts until the target would be met", async () => {
  const archive = await makeArchive([{ id: "p", size: 1000 }, { id: "q", size: 1000 }]);
  const volume = await Deno.makeTempDir();
  const env = cartdEnv(volume, `file://${archive.dir}`);
  for (const id of ["p", "q"]) {
    await runCli(["create", id, "-", "--wait"], {
      env,
      stdin: JSON.stringify(requestFor(archive, id)),
    });
  }
  const some = JSON.parse(
    (await runCli(["gc", "--dry-run", "--json", "--free", "1%"], { env })).stdout,
  );
  assertEquals(some.removed, [], "1% is already free on the test machine");
  const all = JSON.parse(
    (await runCli(["gc", "--dry-run", "--json", "--free", "100%"], { env })).stdout,
  );
  assertEquals(all.removed.map((r: { uid: string; cause: string }) => `${r.uid}:${r.cause}`), [
    "p:evicted",
    "q:evicted",
  ]);
});

Deno.test("gc and DELETE while a download streams do not cut it; the files go when it ends", async () => {
  const archive = await makeArchive([{ id: "big", size: 4_000_000 }]);
  const volume = await Deno.makeTempDir();
  const env = cartdEnv(volume, `file://${archive.dir}`);
  const server = await startServer(env);
  try {
    const post = (uid: string) =>
      fetch(`${server.url}${uid}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(archive.request),
      });
    await (await post("g")).body?.cancel();
    await (await post("h")).body?.cancel();
    await waitWhileStaging(`${server.url}g`, 50);
    await waitWhileStaging(`${server.url}h`, 50);

    for (
      const [uid, remove] of [
        [
          "g",
          () =>
            runCli(["gc", "--older-than", "0s"], { env }).then((r) =>
              assertEquals(r.code, 0, r.stderr)
            ),
        ],
        ["h", () => fetch(`${server.url}h`, { method: "DELETE" }).then((r) => r.body?.cancel())],
      ] as const
    ) {
      const response = await fetch(`${server.url}${uid}?filename=${uid}`);
      const expected = Number(response.headers.get("content-length"));
      const reader = response.body!.getReader();
      let received = (await reader.read()).value!.length;
      await remove();
      const head = await fetch(`${server.url}${uid}`, { method: "HEAD" });
      assertEquals(head.status, 404, "new requests see it gone at once");
      while (true) {
        await sleep(2);
        const { value, done } = await reader.read();
        if (done) break;
        received += value.length;
      }
      assertEquals(received, expected, `${uid}: the running download finished whole`);
    }
    // The files leave once the downloads have ended.
    for (
      let i = 0;
      i < 100 &&
      (await exists(join(volume, "carts", "1")) || await exists(join(volume, "carts", "2")));
      i++
    ) {
      await sleep(50);
    }
    assertEquals(await exists(join(volume, "carts", "1")), false);
    assertEquals(await exists(join(volume, "carts", "2")), false);
  } finally {
    server.child.kill("SIGTERM");
    await server.exited;
  }
});

Deno.test("an expired cart answers 404 over HTTP and not found on the CLI, and gc reclaims it", async () => {
  const archive = await makeArchive([{ id: "e", size: 1000 }]);
  const volume = await Deno.makeTempDir();
  const env = cartdEnv(volume, `file://${archive.dir}`, { CARTD_CART_LIFETIME: "4s" });
  const created = await runCli(["create", "exp", "-", "--wait"], {
    env,
    stdin: JSON.stringify(archive.request),
  });
  assertEquals(created.code, 0, created.stderr);
  const finishedBy = Date.now();
  assertEquals((await runCli(["status", "exp"], { env })).code, 0, "alive within its lifetime");
  await sleep(finishedBy + 4200 - Date.now());

  const status = await runCli(["status", "exp"], { env });
  assertEquals(status.code, 3);
  assertMatch(status.stderr, /No cart with uid exp found/);

  const cartd = await openTestCartd(`file://${archive.dir}`, {
    VOLUME_PATH: volume,
    CARTD_CART_LIFETIME: "1s",
  });
  try {
    const app = createApp({ ...cartd, downloads: new Downloads() });
    const head = await app(new Request("http://x/exp", { method: "HEAD" }));
    assertEquals(head.status, 404);
    assertEquals(head.headers.get("x-pacifica-message"), "No cart with uid exp found");
    assertEquals((await app(new Request("http://x/exp"))).status, 404);
  } finally {
    await cartd.close();
  }

  const gc = JSON.parse((await runCli(["gc", "--json"], { env })).stdout);
  assertEquals(gc.removed.map((r: { uid: string; cause: string }) => `${r.uid}:${r.cause}`), [
    "exp:expired",
  ]);
  assertEquals(await exists(join(volume, "carts", "1")), false);

  // The uid can be used again.
  const again = await runCli(["create", "exp", "-"], {
    env,
    stdin: JSON.stringify(archive.request),
  });
  assertEquals(again.code, 0, again.stderr);
});

Deno.test("the server's housekeeping removes what a crashed process left: its downloads' hold on a deleted cart", async () => {
  const { ownerNameFor } = await import("../src/cart/owner.ts");
  const { serveApp } = await import("./support/app.ts");
  const archive = await makeArchive([{ id: "a", size: 1000 }]);
  const cartd = await openTestCartd(`file://${archive.dir}`);
  // Housekeeping every second: a sweep between the DELETE and the first check below would
  // remove the folder before the check sees it held.
  const { url, close } = serveApp(cartd, 1000);
  try {
    const { cart, done } = await stageCart(cartd, "c", requestFor(archive, "a"));
    assertEquals(done?.status, "ready");
    // A download registered by a cartd process of this host that has since died.
    const gone = new Deno.Command("true").spawn();
    await gone.status;
    const owner = ownerNameFor(gone.pid);
    await cartd.store.space.startDownload(cart.id, owner, Date.now() + 3_600_000);
    assertEquals((await fetch(`${url}c`, { method: "DELETE" })).status, 200);
    assert(await exists(cartd.volume.cartDir(cart.id)), "held by the dead download");
    const deadline = Date.now() + 5000;
    while (await exists(cartd.volume.cartDir(cart.id)) && Date.now() < deadline) await sleep(50);
    assertEquals(await exists(cartd.volume.cartDir(cart.id)), false, "swept by housekeeping");
  } finally {
    await close();
  }
});
