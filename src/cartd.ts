/**
 * The one way into cartd's core: `openCartd(config)` assembles the store, volume, archive, cart
 * service, workers and housekeeping. The CLI, the server, the tests and bench/ all start here;
 * front ends then talk to `service` (and to workers for staging), never to the store or the
 * archive.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { openArchive } from "./archive/mod.ts";
import { ObservedArchive } from "./archive/observed.ts";
import { Housekeeping } from "./cart/housekeeping.ts";
import { Notifier } from "./cart/notifier.ts";
import { SiteStatus } from "./cart/site.ts";
import { type CartReport, CartService } from "./cart/service.ts";
import { Worker, type WorkerEvent } from "./cart/worker.ts";
import { WorkSignal } from "./cart/work_signal.ts";
import type { Config } from "./config.ts";
import { parse as parseConnectionString } from "pg-connection-string";
import { CartdError } from "./errors.ts";
import { log } from "./log.ts";
import { parseDatabaseUrl } from "./store/database_url.ts";
import { type CopyReport, type SchemaState, sqliteOnlyBackup, Store } from "./store/store.ts";
import { Volume } from "./volume/volume.ts";
import { linkEarlierFiles } from "./volume/space.ts";

/** How to open cartd. */
export interface OpenOptions {
  /** Create the database when there is none; otherwise refuse, naming the one looked for. */
  create?: boolean;
  /**
   * Check the schema on opening (default): a new database is set up, an older schema migrated
   * where `auto_migrate` allows (else refused), a newer one refused. `cartd db` checks itself.
   */
  checkSchema?: boolean;
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
  /** The site's health and the figures behind the metrics. */
  readonly site: SiteStatus;
  /** A worker: `run` stages every cart (a server), `drainCart` one cart. */
  worker(onEvent?: WorkerEvent): Worker;
  /** Delivers cart events to `notify_url` receivers (a server runs one). */
  notifier(): Notifier;
  /**
   * Stages the cart of `uid` in the foreground until it is ready or failed, and returns its
   * report. Throws `interrupted` when `signal` aborts, `notFound` when the cart goes meanwhile.
   */
  stage(uid: string, options?: { signal?: AbortSignal; onEvent?: WorkerEvent }): Promise<
    CartReport
  >;
  /** Where the schema stands, and applying what is pending (refused for a newer schema). */
  schema(): Promise<SchemaState>;
  /** A consistent copy of the (SQLite) database in a new file, while cartd may be serving. */
  backup(file: string): Promise<{ bytes: number }>;
  migrate(): Promise<string[]>;
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

/** Throws, before anything is opened, when the database is one `cartd db backup` cannot copy. */
export function assertBackupSupported(config: Config): void {
  if (parseDatabaseUrl(config.databaseUrl).kind === "postgres") throw sqliteOnlyBackup();
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
    // Every worker loop and a few requests at once, with room to spare.
    poolSize: Math.max(10, config.workers * 2 + 5),
    // Read as each event is written, so a reloaded configuration applies at once.
    receivers: () => config.notifyUrls,
  });
  try {
    await store.connect(config.connectAttempts, config.connectWait);
    if (options.checkSchema ?? true) await prepareSchema(store, config.autoMigrate);
  } catch (err) {
    await store.close();
    throw err;
  }
  const volume = new Volume(config.volumePath);
  volume.ensure();
  const workArrived = new WorkSignal();
  const service = new CartService(store, volume, config, workArrived);
  // Opened when first needed: most commands never ask the archive anything.
  let archive: ObservedArchive | undefined;
  const archiveOf = () => archive ??= new ObservedArchive(openArchive(config.archiveUrl, config));
  const worker = (onEvent?: WorkerEvent) =>
    new Worker(store, archiveOf(), volume, config, onEvent, workArrived);
  const housekeeping = new Housekeeping(store, volume);
  const site = new SiteStatus(store, volume, config, archiveOf);
  return {
    config,
    service,
    housekeeping,
    site,
    notifier: () => new Notifier(store, config),
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
    schema: () => store.schemaState(),
    backup: (file) => store.backup(file),
    async migrate() {
      const state = await store.schemaState();
      if (state.unknown.length) throw newerSchema(state);
      const applied = await store.migrate();
      // Files staged before the shared cache join it now (cartd serve also does, as it goes).
      const joined = await linkEarlierFiles(store, volume);
      if (joined > 0) log.info(`${joined} file(s) staged before the shared cache joined it`);
      return applied;
    },
    async close() {
      await housekeeping.stop();
      await store.close();
    },
  };
}

/**
 * Copies a whole site's database into another (`cartd db copy`): the source must exist and be at
 * this cartd's schema (it is never changed); the target is set up, and must be empty unless
 * `force`. Connection and timing settings come from `config`.
 */
export async function copyDatabase(
  fromUrl: string,
  toUrl: string,
  config: Config,
  options: { force?: boolean } = {},
): Promise<CopyReport> {
  assertDatabaseExists(fromUrl);
  if (sameDatabase(fromUrl, toUrl)) {
    throw new CartdError("invalid", "the source and the target are the same database");
  }
  const open = (url: string) =>
    Store.open(url, { busyTimeout: config.databaseBusyTimeout, poolSize: 2 });
  const source = open(fromUrl);
  const target = open(toUrl);
  try {
    await source.connect(config.connectAttempts, config.connectWait);
    await target.connect(config.connectAttempts, config.connectWait);
    const from = await source.schemaState();
    if (from.unknown.length) throw newerSchema(from);
    if (from.pending.length || from.empty) {
      throw new CartdError(
        "failure",
        `the source database's schema is not this cartd's (${
          from.empty ? "it is empty" : `pending: ${from.pending.join(", ")}`
        }); nothing was copied`,
      ).withHint('run "cartd db migrate" on the source first');
    }
    const to = await target.schemaState();
    if (to.unknown.length) throw newerSchema(to);
    await target.migrate();
    return await source.copyTo(target, options);
  } finally {
    await source.close();
    await target.close();
  }
}

/**
 * Gets the schema ready to use: a new database is set up; an older schema is migrated where
 * `autoMigrate` allows (by default with SQLite, not with PostgreSQL, where nodes of several
 * versions may share it) and refused otherwise; a newer schema is always refused.
 */
async function prepareSchema(store: Store, autoMigrate: boolean | undefined): Promise<void> {
  const state = await store.schemaState();
  if (state.unknown.length) throw newerSchema(state);
  if (state.empty) {
    await store.migrate();
    return;
  }
  if (state.pending.length === 0) return;
  if (autoMigrate ?? store.engine === "sqlite") {
    const applied = await store.migrate();
    log.info(`database schema migrated (auto_migrate): applied ${applied.join(", ")}`);
    return;
  }
  throw new CartdError(
    "failure",
    `the database schema is older than this cartd: it is at ${
      schemaVersion(state.applied[state.applied.length - 1])
    }, this cartd needs ${schemaVersion(state.latest)}`,
  ).withHint('run "cartd db migrate" to bring it up to date ([database] auto_migrate is off)');
}

/** The refusal of a database a newer cartd has written. */
export function newerSchema(state: SchemaState): CartdError {
  return new CartdError(
    "failure",
    `the database was written by a newer cartd: its schema is at ${
      schemaVersion(state.applied[state.applied.length - 1])
    }, this cartd knows up to ${schemaVersion(state.latest)}`,
  ).withHint("use a cartd at least as new as the one that last migrated it");
}

/** `version 5 (0005_outages)` for a migration name. */
function schemaVersion(migration: string | undefined): string {
  if (migration === undefined) return "no version";
  const number = /^(\d+)_/.exec(migration);
  return number ? `version ${Number(number[1])} (${migration})` : migration;
}

/** Whether two database URLs name one database (a file, or a server's database). */
function sameDatabase(a: string, b: string): boolean {
  const [x, y] = [parseDatabaseUrl(a), parseDatabaseUrl(b)];
  if (x.kind === "sqlite" && y.kind === "sqlite") return resolve(x.file) === resolve(y.file);
  if (x.kind === "postgres" && y.kind === "postgres") {
    const where = (url: string) => {
      const parsed = parseConnectionString(url);
      return `${parsed.host ?? ""}:${parsed.port ?? ""}/${parsed.database ?? ""}`;
    };
    return where(x.url) === where(y.url);
  }
  return false;
}

/** Refuses, naming the database looked for, when a SQLite database does not exist. */
function assertDatabaseExists(url: string): void {
  const target = parseDatabaseUrl(url);
  if (target.kind !== "sqlite" || existsSync(target.file)) return;
  throw new MissingDatabase(resolve(target.file));
}
