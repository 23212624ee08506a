/** An in-process cartd on a fresh volume and SQLite file, for tests that drive the service. */
import {
  type ArchiveSimulator,
  type SimulatorOptions,
  startArchiveSimulator,
} from "../../fixtures/archive_server.ts";
import { type CartdCore, openCartdCore } from "../../src/cartd.ts";
import { parseCartRequest } from "../../src/cart/request.ts";
import { loadConfig } from "../../src/config.ts";
import { type FileSpec, makeArchive, type TestArchive } from "./archive.ts";
import { currentEngine } from "./databases.ts";

/** cartd opened on a fresh temporary volume, which `dir` names. */
export type TestCartd = CartdCore & { dir: string };

/** Opens cartd (as the CLI does, with its parts in reach) on a fresh volume with quick timings. */
export async function openTestCartd(
  archiveUrl: string,
  env: Record<string, string> = {},
): Promise<TestCartd> {
  const dir = await Deno.makeTempDir({ prefix: "cartd-volume-" });
  // Under testOnEngines, a fresh database of that engine (SQLite on the volume otherwise).
  const engine = currentEngine();
  const database = engine?.name === "postgres" ? { PEEWEE_URL: await engine.freshDatabase() } : {};
  const config = loadConfig({
    env: {
      VOLUME_PATH: dir,
      ...database,
      ARCHIVE_INTERFACE_URL: archiveUrl,
      CARTD_POLL_INTERVAL: "100ms",
      CARTD_RETRY_INTERVAL: "50ms",
      CARTD_LEASE_TIME: "2s",
      ...env,
    },
  });
  return { ...await openCartdCore(config, { create: true }), dir };
}

/** Every regular file under `dir`, as paths relative to it. */
export async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory) out.push(...await listFiles(`${dir}/${entry.name}`, rel));
    else out.push(rel);
  }
  return out.sort();
}

/** Creates a cart from a request object and works on it until it ends; returns both states. */
export async function stageCart(cartd: TestCartd, uid: string, request: unknown) {
  const { cart } = await cartd.service.create(uid, parseCartRequest(JSON.stringify(request)));
  const done = await cartd.worker().drainCart(cart.id);
  return { cart, done };
}

export interface SimulatedSetup {
  archive: TestArchive;
  simulator: ArchiveSimulator;
  cartd: TestCartd;
}

/**
 * Runs `body` with `files` in an archive served by the simulator and an in-process cartd pointed
 * at it; stops both afterwards.
 */
export async function withSimulator(
  files: FileSpec[],
  options: Omit<SimulatorOptions, "prefix">,
  env: Record<string, string>,
  body: (setup: SimulatedSetup) => Promise<void>,
): Promise<void> {
  const archive = await makeArchive(files);
  const simulator = await startArchiveSimulator({ prefix: archive.dir, ...options });
  const cartd = await openTestCartd(simulator.url, env);
  try {
    await body({ archive, simulator, cartd });
  } finally {
    await cartd.close();
    await simulator.stop();
  }
}
