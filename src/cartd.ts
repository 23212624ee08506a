/**
 * The one way into cartd's core: `openCartd(config)` assembles the store, volume, archive, cart
 * service, workers and housekeeping. The CLI, the server, the tests and bench/ all start here;
 * front ends then talk to `service` (and to workers for staging), never to the store or the
 * archive.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { type Archive, openArchive } from "./archive/mod.ts";
import { Housekeeping } from "./cart/housekeeping.ts";
import { type CartReport, CartService } from "./cart/service.ts";
import { Worker, type WorkerEvent } from "./cart/worker.ts";
import type { Config } from "./config.ts";
import { CartdError } from "./errors.ts";
import { parseDatabaseUrl } from "./store/database_url.ts";
import { Store } from "./store/store.ts";
import { Volume } from "./volume/volume.ts";

/** How to open cartd. */
export interface OpenOptions {
  /** Create the database when there is none; otherwise refuse, naming the one looked for. */
  create?: boolean;
  /** Bring the schema up to date on opening (default); `cartd db` does it itself. */
  migrate?: boolean;
}

/** No database where the configuration says: no cart was ever made with this configuration. */
export class MissingDatabase extends CartdError {
  constructor(readonly file: string) {
    super("notFound", `there is no database at ${file} (no cart was ever created with it)`);
  }
}

/** An open cartd, as front ends use it: the service, workers, housekeeping, the schema. */
export interface Cartd {
  readonly config: Config;
  /** Everything a front end asks of carts. */
  readonly service: CartService;
  /** The periodic sweep a long-running process starts; `close` stops it. */
  readonly housekeeping: Housekeeping;
  /** A worker: `run` stages every cart (a server), `drainCart` one cart. */
  worker(onEvent?: WorkerEvent): Worker;
  /**
   * Stages the cart of `uid` in the foreground until it is ready or failed, and returns its
   * report. Throws `interrupted` when `signal` aborts, `notFound` when the cart goes meanwhile.
   */
  stage(uid: string, options?: { signal?: AbortSignal; onEvent?: WorkerEvent }): Promise<
    CartReport
  >;
  /** Schema migrations: apply the pending ones, or name them. */
  migrate(): Promise<string[]>;
  pendingMigrations(): Promise<string[]>;
  close(): Promise<void>;
}

/**
 * cartd with its parts in reach, for the core's own tests and benchmarks, which check what the
 * store and the volume hold. Front ends get `Cartd`, which the compiler keeps them to.
 */
export interface CartdCore extends Cartd {
  readonly store: Store;
  readonly volume: Volume;
}

/** Opens cartd on `config` for a front end; see `OpenOptions`. */
export function openCartd(config: Config, options: OpenOptions = {}): Promise<Cartd> {
  return openCartdCore(config, options);
}

/** Opens cartd on `config` with its parts in reach (tests, benchmarks); see `OpenOptions`. */
export async function openCartdCore(
  config: Config,
  options: OpenOptions = {},
): Promise<CartdCore> {
  if (!options.create) assertDatabaseExists(config.databaseUrl);
  const store = Store.open(config.databaseUrl, {
    cartLifetime: config.cartLifetime,
    busyTimeout: config.databaseBusyTimeout,
  });
  try {
    if (options.migrate ?? true) await store.migrate();
  } catch (err) {
    await store.close();
    throw err;
  }
  const volume = new Volume(config.volumePath);
  const service = new CartService(store, volume, config);
  let archive: Archive | undefined;
  const worker = (onEvent?: WorkerEvent) =>
    new Worker(store, archive ??= openArchive(config.archiveUrl, config), volume, config, onEvent);
  const housekeeping = new Housekeeping(store, volume);
  return {
    config,
    service,
    housekeeping,
    store,
    volume,
    worker,
    async stage(uid, { signal, onEvent } = {}) {
      const cart = await service.find(uid);
      if (cart.status === "staging") {
        const staging = worker(onEvent);
        let finished;
        try {
          finished = await staging.drainCart(cart.id, signal);
        } finally {
          await staging.releaseLeases();
        }
        if (signal?.aborted) {
          throw new CartdError(
            "interrupted",
            `staging of cart ${uid} interrupted; it carries on from here when run again`,
          );
        }
        if (!finished) {
          throw new CartdError(
            "notFound",
            `cart ${uid} was deleted, replaced or evicted while it was being staged`,
          );
        }
      }
      return await service.report(uid);
    },
    migrate: () => store.migrate(),
    pendingMigrations: () => store.pendingMigrations(),
    async close() {
      await housekeeping.stop();
      await store.close();
    },
  };
}

/** Refuses, naming the database looked for, when a SQLite database does not exist. */
function assertDatabaseExists(url: string): void {
  const target = parseDatabaseUrl(url);
  if (target.kind !== "sqlite" || existsSync(target.file)) return;
  throw new MissingDatabase(resolve(target.file));
}
