/**
 * What every subcommand needs, opened from the global flags: the resolved configuration, the
 * database (migrated on first use), the volume, the archive and the cart service. Only commands
 * that make carts (`create`, `serve`, `db migrate`) create a database; the others look for the
 * one the configuration names and say so when it is not there.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { openArchive } from "../src/archive/mod.ts";
import type { Archive } from "../src/archive/mod.ts";
import { CartService } from "../src/cart/service.ts";
import { Worker, type WorkerEvent } from "../src/cart/worker.ts";
import { type Config, type ConfigSources, loadConfig } from "../src/config.ts";
import { CartdError, ExitCode } from "../src/errors.ts";
import { parseDatabaseUrl } from "../src/store/database_url.ts";
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

/** Where the configuration comes from, given the global flags. */
export function configSources(
  options: GlobalOptions,
  flags: Record<string, string | undefined> = {},
): ConfigSources {
  return {
    configFile: options.config,
    flags: {
      "cartd.volume_path": options.volume,
      "archiveinterface.url": options.archiveUrl,
      "database.peewee_url": options.database,
      ...flags,
    },
  };
}

export function resolveConfig(options: GlobalOptions): Config {
  return loadConfig(configSources(options));
}

export interface OpenOptions {
  /** Create the database when there is none (else refuse, naming it). */
  create?: boolean;
  /** Keys a subcommand's own flags set (`section.key` → value), as the global flags do. */
  flags?: Record<string, string | undefined>;
}

/** Opens the database without migrating it (for `cartd db`). */
export function openStore(config: Config, options: OpenOptions = {}): Store {
  if (!options.create) assertDatabaseExists(config.databaseUrl);
  return Store.open(config.databaseUrl, {
    cartLifetime: config.cartLifetime,
    busyTimeout: config.databaseBusyTimeout,
  });
}

/** Refuses, naming the database looked for, when a SQLite database does not exist. */
function assertDatabaseExists(url: string): void {
  const target = parseDatabaseUrl(url);
  if (target.kind !== "sqlite" || existsSync(target.file)) return;
  throw new MissingDatabase(resolve(target.file));
}

/** No database where the configuration says: no cart has been made with this configuration. */
export class MissingDatabase extends CartdError {
  constructor(readonly file: string) {
    super(
      `there is no database at ${file} (no cart was ever created with this configuration; ` +
        "check --volume, --database or the config file)",
      404,
      ExitCode.notFound,
    );
  }
}

export async function openContext(
  options: GlobalOptions,
  open: OpenOptions = {},
): Promise<Context> {
  const config = loadConfig(configSources(options, open.flags));
  const store = openStore(config, open);
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
  open: OpenOptions = {},
): Promise<T> {
  const context = await openContext(options, open);
  try {
    return await body(context);
  } finally {
    await context.close();
  }
}
