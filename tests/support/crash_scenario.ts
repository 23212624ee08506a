/**
 * The crash scenario shared by tests/crash_test.ts and bench/soak.ts: `cartd serve` under load
 * (creates, pulls, downloads) is killed with SIGKILL at random moments and restarted, then every
 * cart must finish with the archive's exact bytes, no verified file pulled again, and the
 * database and volume consistent. Returns the figures it saw.
 */
import { sleep } from "../../src/time.ts";
import { join } from "node:path";
import { startArchiveSimulator } from "../../fixtures/archive_server.ts";
import { openTestCartd } from "./cartd.ts";
import { assert, assertEquals } from "./assert.ts";
import { makeArchive } from "./archive.ts";
import { cartdEnv } from "./cli.ts";
import { type RunningServer, startServer, waitWhileStaging } from "./server.ts";
import { extractWithPython } from "./tar.ts";

const json = { "content-type": "application/json" };

export interface CrashScenario {
  carts: number;
  filesPerCart: number;
  kills: number;
  seed: number;
  /** Archive pull speed per file, bytes per second (slow enough for kills to land mid-pull). */
  bytesPerSecond?: number;
}

export interface CrashFigures {
  requests: number;
  failedRequests: number;
  pulls: number;
  verifiedBeforeKill: number;
  recoveryMs: number;
  totalMs: number;
}

export async function runCrashScenario(scenario: CrashScenario): Promise<CrashFigures> {
  const { carts, filesPerCart, kills, seed } = scenario;
  let x = seed || 1;
  const random = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const specs = Array.from({ length: carts * filesPerCart }, (_, i) => ({
    id: `c${Math.floor(i / filesPerCart)}-f${i % filesPerCart}`,
    path: `part${i % filesPerCart}/data.bin`,
    size: 20_000 + ((i * 7919) % 200_000),
  }));
  const archive = await makeArchive(specs);
  const requestOf = (c: number) => ({
    fileids: archive.request.fileids.slice(c * filesPerCart, (c + 1) * filesPerCart),
  });
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    faults: [{ op: "pull", kind: "slow", bytesPerSecond: scenario.bytesPerSecond ?? 600_000 }],
  });
  const volume = await Deno.makeTempDir();
  // A long lease: work must resume because the dead server's claims are taken back, not because
  // they run out.
  const env = cartdEnv(volume, simulator.url, { CARTD_LEASE_TIME: "10m" });
  let server: RunningServer = await startServer(env);
  const created = new Set<number>();
  /** Files seen verified, and when: none may be pulled after that. */
  const verifiedAt = new Map<string, number>();
  let requests = 0;
  let failedRequests = 0;
  const started = Date.now();

  const create = async (c: number) => {
    requests++;
    const response = await fetch(`${server.url}cart-${c}`, {
      method: "POST",
      headers: json,
      body: JSON.stringify(requestOf(c)),
    }).catch(() => undefined);
    if (response?.status === 201) created.add(c);
    else failedRequests++;
    await response?.body?.cancel();
  };
  const snapshot = async () => {
    for (const c of created) {
      const detail = await fetch(`${server.url}-/carts/cart-${c}`).then((r) => r.json()).catch(() =>
        undefined
      );
      for (const f of detail?.files ?? []) {
        if (f.state === "ready" && !verifiedAt.has(f.id)) verifiedAt.set(f.id, Date.now());
      }
    }
  };
  const download = async (c: number) => {
    requests++;
    const response = await fetch(`${server.url}cart-${c}?filename=d`).catch(() => undefined);
    if (!response) return failedRequests++;
    await response.arrayBuffer().catch(() => failedRequests++);
  };

  try {
    let next = 0;
    for (let k = 0; k < kills; k++) {
      // Creates, then downloads of whatever is ready, then a kill at a random moment.
      const perRound = Math.ceil(carts / (kills + 1));
      const batch = Array.from({ length: perRound }, () => next++).filter((c) => c < carts);
      await Promise.all(batch.map(create));
      const load = [...created].slice(0, 4).map(download);
      await sleep(200 + random() * 800);
      await snapshot();
      server.child.kill("SIGKILL");
      await server.exited;
      await Promise.allSettled(load);
      server = await startServer(env);
    }
    for (; next < carts; next++) await create(next);
    // Whatever failed while the server was down is sent again: creating is idempotent.
    for (let c = 0; c < carts; c++) if (!created.has(c)) await create(c);
    assertEquals(created.size, carts);

    const restartedAt = Date.now();
    for (let c = 0; c < carts; c++) {
      const head = await waitWhileStaging(`${server.url}cart-${c}`, 100, 120_000);
      assertEquals(
        head.headers.get("x-pacifica-status"),
        "ready",
        `cart-${c}: ${head.headers.get("x-pacifica-message")}`,
      );
    }
    const recovery = Date.now() - restartedAt;

    // Every cart's tar holds exactly the archive's bytes.
    for (let c = 0; c < carts; c++) {
      const tar = new Uint8Array(
        await (await fetch(`${server.url}cart-${c}?filename=t`)).arrayBuffer(),
      );
      const dir = await extractWithPython(tar);
      for (const f of archive.files.slice(c * filesPerCart, (c + 1) * filesPerCart)) {
        assertEquals(await Deno.readFile(join(dir, "t", f.path)), f.data, `cart-${c} ${f.path}`);
      }
    }

    // No verified file was pulled again.
    for (const [id, at] of verifiedAt) {
      const later = (simulator.pullStarts.get(id) ?? []).filter((t) => t > at);
      assertEquals(later, [], `${id} pulled again after it was verified`);
    }

    // The database and the volume agree, and nothing is left half-done.
    const audit = await openTestCartd("file:///nowhere", { VOLUME_PATH: volume });
    try {
      const files = await audit.store.work.all();
      assert(files.every((f) => f.state === "ready"), "every file ready");
      const held = files.filter((f) => Number(f.reserved) > 0).length;
      assertEquals(held, 0, "no reservation left");
      // Every cart folder on the volume, whatever its id (drafts and replaced carts included).
      for await (const folder of Deno.readDir(join(volume, "carts"))) {
        const partial = join(volume, "carts", folder.name, "partial");
        const left = await Array.fromAsync(Deno.readDir(partial)).catch(() => []);
        assertEquals(left, [], `no partial file in cart folder ${folder.name}`);
      }
    } finally {
      await audit.close();
    }
    const pulls = [...simulator.pullStarts.values()].reduce((n, t) => n + t.length, 0);
    return {
      requests,
      failedRequests,
      pulls,
      verifiedBeforeKill: verifiedAt.size,
      recoveryMs: recovery,
      totalMs: Date.now() - started,
    };
  } finally {
    server.child.kill("SIGTERM");
    await server.exited;
    await simulator.stop();
  }
}
