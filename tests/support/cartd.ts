/** An in-process cartd on a fresh volume and SQLite file, for tests that drive the service. */
import { openArchive } from "../../src/archive/mod.ts";
import { CartService } from "../../src/cart/service.ts";
import { Worker } from "../../src/cart/worker.ts";
import { type Config, loadConfig } from "../../src/config.ts";
import { Store } from "../../src/store/store.ts";
import { Volume } from "../../src/volume/volume.ts";

export interface TestCartd {
  dir: string;
  config: Config;
  store: Store;
  volume: Volume;
  service: CartService;
  worker(): Worker;
  close(): Promise<void>;
}

export async function openTestCartd(
  archiveUrl: string,
  env: Record<string, string> = {},
): Promise<TestCartd> {
  const dir = await Deno.makeTempDir({ prefix: "cartd-volume-" });
  const config = loadConfig({
    env: {
      VOLUME_PATH: dir,
      ARCHIVE_INTERFACE_URL: archiveUrl,
      CARTD_POLL_INTERVAL: "100ms",
      CARTD_RETRY_INTERVAL: "50ms",
      CARTD_LEASE_TIME: "2s",
      ...env,
    },
  });
  const store = Store.open(config.databaseUrl);
  await store.migrate();
  const volume = new Volume(config.volumePath);
  const archive = openArchive(config.archiveUrl, config.transferSize);
  return {
    dir,
    config,
    store,
    volume,
    service: new CartService(store, volume, config),
    worker: () => new Worker(store, archive, volume, config),
    close: () => store.close(),
  };
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
