/**
 * Faults: archive outages, a full disk, a locked database. Each scenario ends with every cart
 * ready or in error with a clear message, nothing stuck, and no partial file in any tar. The
 * figures each one sees are printed for the record.
 */
import { sleep } from "../src/time.ts";
import { join } from "node:path";
import { isKind } from "../src/errors.ts";
import { createApp } from "../src/http/app.ts";
import { Downloads } from "../src/http/downloads.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { listFiles, openTestCartd, stageCart, withSimulator } from "./support/cartd.ts";
import { cartdEnv, runCli } from "./support/cli.ts";
import { serveApp } from "./support/app.ts";
import { startServer } from "./support/server.ts";

const retryEnv = { CARTD_RETRY_INTERVAL: "200ms", CARTD_RETRY_LIMIT: "6" };

Deno.test("an archive outage shorter than the retry budget during staging: the cart waits and recovers", async () => {
  const files = ["a", "b", "c"].map((id) => ({ id, size: 100_000 }));
  await withSimulator(files, {}, retryEnv, async ({ archive, simulator, cartd }) => {
    await simulator.stop();
    const { cart } = await cartd.service.create(
      "c",
      (await import("../src/cart/request.ts")).parseCartRequest(JSON.stringify(archive.request)),
    );
    const draining = cartd.worker().drainCart(cart.id);
    await sleep(1000);
    const restarted = Date.now();
    await simulator.start();
    const done = await draining;
    assertEquals(done?.status, "ready", done?.message);
    console.log(
      `outage of 1 s before staging: recovered ${
        Date.now() - restarted
      } ms after the archive came back`,
    );
  });
});

Deno.test("an archive outage in the middle of pulls: cut bodies are pulled again once it is back", async () => {
  const files = ["a", "b"].map((id) => ({ id, size: 400_000 }));
  const faults = [{ op: "pull" as const, kind: "slow" as const, bytesPerSecond: 400_000 }];
  await withSimulator(files, { faults }, retryEnv, async ({ archive, simulator, cartd }) => {
    const { parseCartRequest } = await import("../src/cart/request.ts");
    const { cart } = await cartd.service.create(
      "c",
      parseCartRequest(JSON.stringify(archive.request)),
    );
    const draining = cartd.worker().drainCart(cart.id);
    while (simulator.activePulls < 2) await sleep(20);
    await sleep(300);
    await simulator.stop();
    await sleep(800);
    simulator.faults = [];
    const restarted = Date.now();
    await simulator.start();
    const done = await draining;
    assertEquals(done?.status, "ready", done?.message);
    console.log(
      `outage of 0.8 s during 2 pulls: recovered ${Date.now() - restarted} ms after, pulls a=${
        simulator.count("pull", "a")
      } b=${simulator.count("pull", "b")}`,
    );
    const tarDownload = await cartd.service.download("c", "c");
    const tar = new Uint8Array(
      await new Response(await tarDownload.open()).arrayBuffer(),
    );
    assertEquals(tar.length, tarDownload.size);
    assertEquals(
      await exists(join(cartd.volume.cartDir(cart.id), "partial")),
      false,
      "no partial file left, nor their folder",
    );
  });
});

Deno.test("an archive down for longer than the retry budget is waited out: the cart says since when, and recovers", async () => {
  const files = ["a", "b"].map((id) => ({ id, size: 10_000 }));
  // The old budget (3 tries, 100 ms apart) would have failed the cart within half a second.
  const env = { CARTD_RETRY_INTERVAL: "100ms", CARTD_RETRY_LIMIT: "3" };
  await withSimulator(files, {}, env, async ({ archive, simulator, cartd }) => {
    const { url, close } = serveApp(cartd);
    try {
      await simulator.stop();
      const created = await fetch(`${url}c`, {
        method: "POST",
        body: JSON.stringify(archive.request),
        headers: { "content-type": "application/json" },
      });
      assertEquals(created.status, 201);
      await sleep(2000);
      const head = await fetch(`${url}c`, { method: "HEAD" });
      assertEquals(head.status, 204);
      assertEquals(head.headers.get("x-pacifica-status"), "staging");
      const waiting = new RegExp(
        "^Waiting for the archive since \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z: cannot reach archive " +
          `${simulator.url.replaceAll(".", "\\.")} to stage file [ab]: connection refused$`,
      );
      assertMatch(head.headers.get("x-pacifica-message")!, waiting);
      const status = await (await fetch(`${url}-/carts/c`)).json();
      assertMatch(status.message, waiting);
      assert(status.progress.waitingForArchiveSince !== null);
      assertEquals(status.files[0].state, "waiting");
      assertMatch(status.files[0].error, /connection refused/);

      const restarted = Date.now();
      await simulator.start();
      let report;
      while ((report = await cartd.service.report("c")).status === "staging") await sleep(50);
      assertEquals(report.status, "ready", report.message);
      assertEquals(report.message, "");
      console.log(
        `archive down 2 s (3-try budget): ready ${Date.now() - restarted} ms after it came back`,
      );
    } finally {
      await close();
    }
  });
});

Deno.test("an archive that answers 503 to everything is an outage: one probe at a time, then recovery", async () => {
  const files = ["a", "b", "c", "d", "e"].map((id) => ({ id, size: 1000 }));
  const faults = [{ op: "stage" as const, kind: "503" as const }];
  const env = { CARTD_RETRY_INTERVAL: "100ms", CARTD_RETRY_LIMIT: "2" };
  await withSimulator(files, { faults }, env, async ({ archive, simulator, cartd }) => {
    const { cart } = await cartd.service.create(
      "c",
      (await import("../src/cart/request.ts")).parseCartRequest(JSON.stringify(archive.request)),
    );
    const draining = cartd.worker().drainCart(cart.id);
    await sleep(2000);
    const requests = [...simulator.counts.stage.values()].reduce((a, b) => a + b, 0);
    // Five files failing on their own, each with its backoff, would have made 25 or more.
    assert(requests <= 12, `${requests} stage requests during 2 s of outage`);
    assertEquals(simulator.maxConcurrentRequests, 1, "one probe at a time");
    assertMatch((await cartd.service.report("c")).message, /^Waiting for the archive since .*503/);
    simulator.faults = [];
    const done = await draining;
    assertEquals(done?.status, "ready", done?.message);
    console.log(`503 on every request for 2 s: ${requests} stage requests, then ready`);
  });
});

Deno.test("an archive down for longer than archive_outage_wait ends the cart in error naming the archive", async () => {
  await withSimulator(
    [{ id: "a", size: 10 }],
    {},
    { ...retryEnv, CARTD_ARCHIVE_OUTAGE_WAIT: "2s" },
    async ({ archive, simulator, cartd }) => {
      await simulator.stop();
      const started = Date.now();
      const { done } = await stageCart(cartd, "c", archive.request);
      assertEquals(done?.status, "error");
      assertMatch(
        done!.message,
        new RegExp(
          `cannot reach archive ${
            simulator.url.replaceAll(".", "\\.")
          } to stage file a: connection refused \\(the archive has been unavailable since .*Z; ` +
            "gave up after archive_outage_wait, 2s\\)",
        ),
      );
      const waited = Date.now() - started;
      assert(waited >= 2000 && waited < 8000, `gave up after ${waited} ms`);
      console.log(`archive down for good: cart in error after ${waited} ms (outage wait 2 s)`);
    },
  );
});

Deno.test("the database locked by another process: requests wait, or fail with a clear 503, and nothing is corrupted", async () => {
  const archive = await makeArchive([{ id: "a", size: 1000 }]);
  const cartd = await openTestCartd(`file://${archive.dir}`, { CARTD_DB_BUSY_TIMEOUT: "1s" });
  const app = createApp({ ...cartd, downloads: new Downloads() });
  const database = cartd.config.databaseUrl;
  const lock = (seconds: number) =>
    new Deno.Command("python3", {
      args: [
        "-c",
        `import sqlite3,sys,time
c=sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(${seconds}); c.execute('COMMIT')`,
        database,
      ],
      stdout: "piped",
    }).spawn();
  const locked = async (child: Deno.ChildProcess) => {
    const reader = child.stdout.getReader();
    await reader.read();
    reader.releaseLock();
  };
  const post = () =>
    app(
      new Request("http://x/c", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(archive.request),
      }),
    );
  try {
    // Shorter than the busy timeout: the request waits and succeeds.
    const short = lock(0.5);
    await locked(short);
    const started = Date.now();
    const created = await post();
    assertEquals(created.status, 201);
    const waited = Date.now() - started;
    assert(waited >= 300, `waited ${waited} ms`);
    await short.status;

    // Longer: a clear 503 with Retry-After, and the server answers others meanwhile.
    const long = lock(2.5);
    await locked(long);
    const refused = await app(new Request("http://x/c", { method: "DELETE" }));
    assertEquals(refused.status, 503);
    assertEquals(refused.headers.get("retry-after"), "5");
    const body = await refused.json();
    assertEquals(
      body.message,
      "The database is busy (locked by another process); try again shortly",
    );
    assertEquals((await app(new Request("http://x/"))).status, 200, "the server still answers");
    await long.status;
    console.log(
      `locked database: a request waited ${waited} ms for a 0.5 s lock; a 2.5 s lock gave 503 after the 1 s busy timeout`,
    );

    const after = await app(new Request("http://x/c", { method: "HEAD" }));
    assertEquals(after.status, 204);
    const check = await new Deno.Command("python3", {
      args: [
        "-c",
        "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('pragma integrity_check').fetchone()[0])",
        database,
      ],
      stdout: "piped",
    }).output();
    assertEquals(new TextDecoder().decode(check.stdout).trim(), "ok");
  } finally {
    await cartd.close();
  }
});

Deno.test("the volume runs out of space during a pull: no partial file, the reservation is released, the cart says so", async () => {
  // A 2 MiB tmpfs as the volume, in a private mount namespace (no root needed); the database
  // lives elsewhere, as the volume is what runs out.
  const archive = await makeArchive([
    { id: "big", size: 1_200_000 },
    { id: "small", size: 900_000 },
  ]);
  const simulator = await (await import("../fixtures/archive_server.ts")).startArchiveSimulator({
    prefix: archive.dir,
    faults: [{ op: "pull", kind: "slow", id: "big", bytesPerSecond: 1_000_000 }],
  });
  const work = await Deno.makeTempDir();
  const volume = join(work, "volume");
  await Deno.mkdir(volume);
  await Deno.writeTextFile(
    join(work, "big.json"),
    JSON.stringify({ fileids: archive.request.fileids.slice(0, 1) }),
  );
  await Deno.writeTextFile(
    join(work, "small.json"),
    JSON.stringify({ fileids: archive.request.fileids.slice(1) }),
  );
  const main = new URL("../main.ts", import.meta.url).pathname;
  const cartd = `${Deno.execPath()} run -A --quiet ${main}`;
  const script = `
set -u
mount -t tmpfs -o size=2m tmpfs "$VOLUME_PATH"
${cartd} create big "$WORK/big.json" >/dev/null
${cartd} bundle big > "$WORK/bundle.out" 2>&1 &
bundle=$!
# Fill the disk while the big file is being pulled.
sleep 0.6
dd if=/dev/zero of="$VOLUME_PATH/filler" bs=64k count=100 2>/dev/null
wait $bundle; echo "bundle exit $?" >> "$WORK/bundle.out"
${cartd} status big --json > "$WORK/status.json"
find "$VOLUME_PATH/carts" -type f > "$WORK/files.txt"
rm -f "$VOLUME_PATH/filler"
# The reservation was released: a file that needs most of the disk still gets one.
${cartd} create small "$WORK/small.json" --wait > "$WORK/small.out" 2>&1; echo "small exit $?" >> "$WORK/small.out"
`;
  try {
    const env = cartdEnv(volume, simulator.url, {
      WORK: work,
      PEEWEE_URL: join(work, "cartd.sqlite3"),
      CARTD_VOLUME_RESERVE: "0",
      NO_COLOR: "1",
      CARTD_SPACE_WAIT: "2s",
    });
    const out = await new Deno.Command("unshare", {
      args: ["-rm", "sh", "-c", script],
      env,
      stderr: "piped",
    }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
    const bundled = await Deno.readTextFile(join(work, "bundle.out"));
    assertMatch(bundled, /bundle exit 5/);
    const status = JSON.parse(await Deno.readTextFile(join(work, "status.json")));
    assertEquals(status.status, "error");
    assertMatch(status.message, /Not enough space to download file \(volume full\)/);
    assertEquals(
      (await Deno.readTextFile(join(work, "files.txt"))).trim(),
      "",
      "no partial file left",
    );
    const small = await Deno.readTextFile(join(work, "small.out"));
    assertMatch(small, /small: ready, 1\/1 files ready/);
    assertMatch(small, /small exit 0/);
    console.log(
      `disk full during a pull: cart failed with "${status.message}"; a 900 kB file fitted afterwards`,
    );
  } finally {
    await simulator.stop();
  }
});

Deno.test("cartd serve answers a locked database without freezing: downloads keep streaming", async () => {
  const archive = await makeArchive([{ id: "a", size: 3_000_000 }]);
  const volume = await Deno.makeTempDir();
  const env = cartdEnv(volume, `file://${archive.dir}`);
  const created = await runCli(["create", "d", "-", "--wait"], {
    env,
    stdin: JSON.stringify(archive.request),
  });
  assertEquals(created.code, 0, created.stderr);
  const server = await startServer(env);
  try {
    const response = await fetch(`${server.url}d?filename=d`);
    const reader = response.body!.getReader();
    let received = (await reader.read()).value!.length;
    const locker = new Deno.Command("python3", {
      args: [
        "-c",
        `import sqlite3,sys,time
c=sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(2); c.execute('COMMIT')`,
        join(volume, "cartd.sqlite3"),
      ],
      stdout: "piped",
    }).spawn();
    const lockReader = locker.stdout.getReader();
    await lockReader.read();
    const lockedAt = Date.now();
    const head = fetch(`${server.url}d`, { method: "HEAD" });
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      received += value.length;
    }
    assertEquals(received, Number(response.headers.get("content-length")));
    assert(Date.now() - lockedAt < 1500, "the download finished while the database was locked");
    assertEquals((await head).status, 204, "the HEAD waited for the lock and then answered");
    lockReader.releaseLock();
    await locker.status;
  } finally {
    server.child.kill("SIGTERM");
    await server.exited;
  }
});

Deno.test("a create cut short by a crash leaves only an invisible draft, which gc removes", async () => {
  const archive = await makeArchive([{ id: "a", size: 10 }]);
  const volume = await Deno.makeTempDir();
  const cartd = await openTestCartd(`file://${archive.dir}`, { VOLUME_PATH: volume });
  try {
    // What a process killed between its file batches leaves behind: a draft row with files.
    const hourAgo = Date.now() - 2 * 3_600_000;
    await cartd.store.carts.createDraft({
      uid: "half",
      fingerprint: "x",
      bundle: false,
      files: [{ seq: 0, archive_id: "a", path: "a", hash_type: "md5", hash_sum: "" }],
    }, hourAgo);
    assertEquals(
      await cartd.store.work.claim("w", Date.now(), 1000),
      undefined,
      "no work from a draft",
    );
  } finally {
    await cartd.close();
  }
  const env = cartdEnv(volume, `file://${archive.dir}`);
  assertEquals((await runCli(["status", "half"], { env })).code, 3, "invisible");
  assertEquals(JSON.parse((await runCli(["list", "--json"], { env })).stdout), []);
  // The uid is free: a new create of it goes through.
  const created = await runCli(["create", "half", "-", "--wait"], {
    env,
    stdin: JSON.stringify(archive.request),
  });
  assertEquals(created.code, 0, created.stderr);
  assertEquals((await runCli(["gc"], { env })).code, 0);
  const check = await openTestCartd(`file://${archive.dir}`, { VOLUME_PATH: volume });
  try {
    const left = (await check.store.carts.all()).filter((c) => c.uid === "half");
    assertEquals(
      left.map((c) => c.status),
      ["ready"],
      "the stale draft is gone, the new cart stays",
    );
  } finally {
    await check.close();
  }
});

Deno.test("a cart deleted mid-pull stops its pull soon, leaves nothing, and records no error", async () => {
  const faults = [{ op: "pull" as const, kind: "slow" as const, bytesPerSecond: 200_000 }];
  // A long lease: only the heartbeat (at most 5 s apart) tells the worker its cart is gone.
  const env = { CARTD_LEASE_TIME: "60s" };
  await withSimulator([{ id: "big", size: 2_000_000 }], { faults }, env, async (setup) => {
    const { archive, simulator, cartd } = setup;
    const { parseCartRequest } = await import("../src/cart/request.ts");
    const { cart } = await cartd.service.create(
      "d",
      parseCartRequest(JSON.stringify(archive.request)),
    );
    // Staged in the foreground, as `cartd bundle` does.
    const staging = cartd.stage("d").catch((err) => err);
    while (simulator.activePulls === 0) await sleep(20);
    await sleep(300);
    await cartd.service.delete("d");
    const deleted = Date.now();
    const outcome = await staging;
    assert(isKind(outcome, "notFound"), String(outcome));
    assertMatch(
      outcome.message,
      /cart d was deleted, replaced or evicted while it was being staged/,
    );
    while (simulator.activePulls > 0 && Date.now() - deleted < 7000) await sleep(20);
    assertEquals(simulator.activePulls, 0, "the pull was cut, not run to its end (10 s)");
    await sleep(200);
    const [file] = await cartd.service.fileReports(cart);
    assertEquals(file.error, "", "no internal error recorded");
    assertEquals(await listFiles(cartd.volume.cartDir(cart.id)).catch(() => []), []);
  });
});

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}
