/**
 * What every subcommand needs, opened from the global flags: the resolved configuration, the
 * database (migrated on first use), the volume, the archive and the cart service.
 */
import { openArchive } from "../src/archive/mod.ts";
import type { Archive } from "../src/archive/mod.ts";
import { CartService } from "../src/cart/service.ts";
import { Worker, type WorkerEvent } from "../src/cart/worker.ts";
import { type Config, loadConfig } from "../src/config.ts";
import { Store } from "../src/store/store.ts";
import { Volume } from "../src/volume/volume.ts";

/** Flags every subcommand accepts. */
export interface GlobalOptions {
  config?: string;
  volume?: string;
  archiveUrl?: string;
  database?: string;
}

export interface Context {
  config: Config;
  store: Store;
  volume: Volume;
  service: CartService;
  archive(): Archive;
  worker(onEvent?: WorkerEvent): Worker;
  close(): Promise<void>;
}

export function resolveConfig(options: GlobalOptions): Config {
  return loadConfig({
    configFile: options.config,
    flags: {
      "cartd.volume_path": options.volume,
      "archiveinterface.url": options.archiveUrl,
      "database.peewee_url": options.database,
    },
  });
}

/** Opens the database without migrating it (for `cartd db`). */
export function openStore(config: Config): Store {
  return Store.open(config.databaseUrl, {
    cartLifetime: config.cartLifetime,
    busyTimeout: config.databaseBusyTimeout,
  });
}

export async function openContext(options: GlobalOptions): Promise<Context> {
  const config = resolveConfig(options);
  const store = openStore(config);
  await store.migrate();
  const volume = new Volume(config.volumePath);
  let archive: Archive | undefined;
  const context: Context = {
    config,
    store,
    volume,
    service: new CartService(store, volume, config),
    archive: () => archive ??= openArchive(config.archiveUrl, config),
    worker: (onEvent) => new Worker(store, context.archive(), volume, config, onEvent),
    close: () => store.close(),
  };
  return context;
}

/** Runs `body` with an open context, closing it afterwards. */
export async function withContext<T>(
  options: GlobalOptions,
  body: (context: Context) => Promise<T>,
): Promise<T> {
  const context = await openContext(options);
  try {
    return await body(context);
  } finally {
    await context.close();
  }
}
