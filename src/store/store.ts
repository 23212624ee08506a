/**
 * The only code that writes SQL. Carts and their files are rows; work is claimed by leasing file
 * rows, so any number of workers, in one process or on several nodes sharing a PostgreSQL
 * database, share it without a broker, and a killed worker's files are picked up again once its
 * lease runs out. The queries live by concern: carts.ts (carts and their files), work.ts (claims
 * and leases), space.ts (reservations, downloads, removals); what differs between SQLite and
 * PostgreSQL is in sql_dialect.ts and the two connection modules.
 */
import { Kysely, type LogEvent, sql } from "kysely";
import { Migrator } from "kysely/migration";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { backup as sqliteBackup, DatabaseSync } from "node:sqlite";
import { CartdError, configError, describe } from "../errors.ts";
import { earlyEnv, log } from "../log.ts";
import { sleep } from "../time.ts";
import { CartRecords } from "./carts.ts";
import { type CopyReport, copyRows } from "./copy.ts";
import { parseDatabaseUrl } from "./database_url.ts";
import { migrationProvider } from "./migrations.ts";
import { parse as parseConnectionString } from "pg-connection-string";
import { isPermanentConnectFailure, postgresDialect } from "./postgres.ts";
import type { Blob, Cart, CartFile, Database, FileState } from "./schema.ts";
import { SpaceRecords } from "./space.ts";
import { StatsRecords } from "./stats.ts";
import { CacheRecords } from "./cache.ts";
import { OutboxRecords, type Receivers } from "./outbox.ts";
import { type DialectName, postgresSql, type SqlDialect, sqliteSql } from "./sql_dialect.ts";
import { sqliteDialect } from "./sqlite.ts";
import { WorkRecords } from "./work.ts";

export type { Blob, Cart, CartFile, FileState };
export type { CartProgress, CreateCartInput, CreateCartResult, SizedCart } from "./carts.ts";
export type { SpaceCheck } from "./space.ts";
export type { SiteCounts } from "./stats.ts";
export type { CartEventData, Delivery, Receivers } from "./outbox.ts";
export type { NewBlob } from "./cache.ts";
export type { FileChanges } from "./work.ts";
export type { CopyReport } from "./copy.ts";

/** How to open the database. */
export interface StoreOptions {
  /** A ready or failed cart expires this long (ms) after it finished; 0 means never. */
  cartLifetime?: number;
  /** How long (ms) to wait for a database another process has locked. */
  busyTimeout?: number;
  /** PostgreSQL: connections the pool may open. */
  poolSize?: number;
  /** Where cart events go (`notify_url`), read as each event is written. */
  receivers?: Receivers;
}

/** Where the schema stands against the migrations this build knows. */
export interface SchemaState {
  /** Migrations applied to the database, in order. */
  applied: string[];
  /** Known migrations not applied yet. */
  pending: string[];
  /** Applied migrations this build does not know: a newer cartd wrote the database. */
  unknown: string[];
  /** The last migration this build knows. */
  latest: string;
  /** Nothing at all yet: a new database. */
  empty: boolean;
}

/** The database: carts, work and space records, the schema, and the connection. */
export class Store {
  /** Carts and their files. */
  readonly carts: CartRecords;
  /** Claims, leases and step outcomes. */
  readonly work: WorkRecords;
  /** Reservations, downloads and removals. */
  readonly space: SpaceRecords;
  /** Counts for metrics and health. */
  readonly stats: StatsRecords;
  /** Notifications waiting for delivery. */
  readonly outbox: OutboxRecords;
  /** The shared cache of verified files. */
  readonly cache: CacheRecords;

  private constructor(
    private readonly db: Kysely<Database>,
    readonly dialect: SqlDialect,
    /** Where the database is, for messages: never the password. */
    readonly location: string,
    cartLifetime: number,
    /** Kept only to be blotted out of error messages. */
    private readonly password: string,
    receivers: Receivers = () => [],
  ) {
    this.carts = new CartRecords(db, dialect, cartLifetime, receivers);
    this.work = new WorkRecords(db, dialect, receivers);
    this.outbox = new OutboxRecords(db, dialect);
    this.cache = new CacheRecords(db, dialect);
    this.space = new SpaceRecords(db, dialect);
    this.stats = new StatsRecords(db);
  }

  /**
   * Opens the database a URL names: a SQLite file (created with its folder when needed) or a
   * PostgreSQL server. Nothing is connected yet; `connect` waits for a server that is not up.
   */
  static open(url: string, options: StoreOptions = {}): Store {
    const target = parseDatabaseUrl(url);
    const busyTimeout = options.busyTimeout ?? 30_000;
    const lifetime = options.cartLifetime ?? 0;
    if (target.kind === "postgres") {
      const server = describeServer(target.url);
      const dialect = postgresDialect(target.url, {
        poolSize: options.poolSize ?? 10,
        busyTimeout,
      });
      const db = new Kysely<Database>({ dialect, log: databaseTime.log });
      return new Store(
        db,
        postgresSql,
        server.location,
        lifetime,
        server.password,
        options.receivers,
      );
    }
    try {
      mkdirSync(dirname(target.file), { recursive: true });
    } catch (err) {
      throw configError(`cannot create the database folder for ${target.file}: ${err}`);
    }
    const db = new Kysely<Database>({
      dialect: sqliteDialect(target.file, busyTimeout),
      log: databaseTime.log,
    });
    return new Store(db, sqliteSql, target.file, lifetime, "", options.receivers);
  }

  /** The engine behind this store. */
  get engine(): DialectName {
    return this.dialect.name;
  }

  /**
   * Waits for the database to answer: up to `attempts` tries, `waitMs` apart (the original's
   * `connect_attempts` and `connect_wait`). Throws a one-line error naming the server (never a
   * password) when it never does.
   */
  async connect(attempts: number, waitMs: number): Promise<void> {
    for (let attempt = 1;; attempt++) {
      try {
        await sql`select 1`.execute(this.db);
        if (this.dialect.name === "postgres") {
          const row = await sql<{ schema: string }>`select current_schema() as schema`
            .execute(this.db);
          this.schemaName = row.rows[0]?.schema ?? undefined;
        }
        return;
      } catch (err) {
        const reason = this.redact(describe(err));
        // A wrong password, user or database name does not mend with waiting.
        const cause = err instanceof CartdError ? err.cause : err;
        // Waiting is for a database server still starting; a SQLite file answers or never will.
        const permanent = this.dialect.name === "sqlite" || isPermanentConnectFailure(cause);
        if (attempt >= attempts || permanent) {
          throw new CartdError(
            "failure",
            `cannot connect to the database at ${this.location} after ${attempt} ` +
              `attempt${attempt === 1 ? "" : "s"}: ${reason}`,
          );
        }
        log.warn(
          `database at ${this.location} not answering (${reason}); ` +
            `try ${attempt} of ${attempts}, next in ${Math.round(waitMs / 1000)} s`,
        );
        await sleep(waitMs);
      }
    }
  }

  /** A message with the database password, should it appear, blotted out. */
  private redact(text: string): string {
    return this.password ? text.replaceAll(this.password, "…") : text;
  }

  /** PostgreSQL: the schema cartd's tables live in (the first of the search path). */
  private schemaName?: string;

  private migrator() {
    return new Migrator({
      db: this.db,
      provider: migrationProvider(this.dialect.name),
      // Only this schema's migration table counts, should other schemas have one too.
      migrationTableSchema: this.schemaName,
    });
  }

  /** Where the schema stands: applied, pending and unknown migrations. */
  async schemaState(): Promise<SchemaState> {
    const known = Object.keys(await migrationProvider(this.dialect.name).getMigrations()).sort();
    const applied = await this.dialect.tableExists(this.db, "kysely_migration")
      ? (await sql<{ name: string }>`select name from kysely_migration order by name`
        .execute(this.db)).rows.map((r) => r.name)
      : [];
    return {
      applied,
      pending: known.filter((name) => !applied.includes(name)),
      unknown: applied.filter((name) => !known.includes(name)),
      latest: known[known.length - 1],
      empty: applied.length === 0 && !(await this.dialect.tableExists(this.db, "carts")),
    };
  }

  /**
   * Applies every migration not yet applied; returns their names. Several processes starting at
   * once migrate exactly once: PostgreSQL takes an advisory lock, and SQLite runs the whole
   * migration in one `BEGIN IMMEDIATE` transaction.
   */
  async migrate(): Promise<string[]> {
    const { error, results } = await this.migrator().migrateToLatest();
    if (error) {
      if (error instanceof CartdError) throw error;
      throw new CartdError("failure", `database migration failed: ${describe(error)}`);
    }
    return (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
  }

  /** Copies every cart and file of this database into `target` (`cartd db copy`). */
  copyTo(target: Store, options: { force?: boolean } = {}): Promise<CopyReport> {
    return copyRows(
      { db: this.db, dialect: this.dialect },
      { db: target.db, dialect: target.dialect },
      options,
    );
  }

  /**
   * A consistent copy of a SQLite database in `file`, through SQLite's online backup (a snapshot
   * that blocks no writer, so a serving cartd need not stop), checked before it is reported done
   * and readable by its owner alone (it holds notification URLs). PostgreSQL has its own tools
   * for this (pg_dump), which cartd does not replace.
   */
  async backup(file: string): Promise<{ bytes: number }> {
    if (this.dialect.name !== "sqlite") throw sqliteOnlyBackup();
    const target = resolve(file);
    if (existsSync(target)) {
      throw new CartdError("invalid", `${target} already exists; a backup never overwrites a file`);
    }
    if (!existsSync(dirname(target))) {
      throw new CartdError("invalid", `there is no folder ${dirname(target)} for the backup`);
    }
    const partial = `${target}.partial-${Deno.pid}`;
    try {
      const source = new DatabaseSync(this.location, { readOnly: true });
      try {
        // All pages in one step: one consistent snapshot, however busy the writers.
        await sqliteBackup(source, partial, { rate: 1 << 30 });
      } finally {
        source.close();
      }
      Deno.chmodSync(partial, 0o600);
      // A file that stands alone: out of WAL mode, so no -wal or -shm file goes with it.
      const check = new DatabaseSync(partial);
      try {
        check.exec("pragma journal_mode = delete");
        const row = check.prepare("pragma quick_check").get() as { quick_check: string };
        if (row.quick_check !== "ok") throw new Error(`quick_check says ${row.quick_check}`);
      } finally {
        check.close();
      }
      Deno.renameSync(partial, target);
    } catch (err) {
      try {
        Deno.removeSync(partial);
      } catch { /* not made */ }
      if (err instanceof CartdError) throw err;
      throw new CartdError("failure", `backup to ${target} failed: ${describe(err)}`);
    }
    return { bytes: Deno.statSync(target).size };
  }

  /**
   * Answers when the database does; throws when it cannot be reached, or when a SQLite file was
   * removed under the open connection (which would go on answering, losing every write).
   */
  async ping(): Promise<void> {
    await sql`select 1`.execute(this.db);
    if (this.dialect.name === "sqlite" && !existsSync(this.location)) {
      throw new CartdError("unavailable", `the database file ${this.location} is gone`);
    }
  }

  /** Closes every connection (and, under `CARTD_DB_TIMING`, logs the time spent waiting on it). */
  async close(): Promise<void> {
    await this.db.destroy();
    databaseTime.report(this.location);
  }
}

/** `cartd db backup` of a PostgreSQL database: its own tools do that. */
export function sqliteOnlyBackup(): CartdError {
  return new CartdError("failure", "cartd db backup copies SQLite databases only")
    .withHint("back up PostgreSQL with its own tools: pg_dump DATABASE_URL > FILE");
}

/**
 * With `CARTD_DB_TIMING=1`, the time this process spent in database queries (waits for locks and
 * the network included), logged when the store closes: for benchmarks and capacity planning.
 */
const databaseTime = (() => {
  const enabled = earlyEnv("CARTD_DB_TIMING") === "1";
  let queries = 0;
  let ms = 0;
  return {
    log: enabled
      ? (event: LogEvent) => {
        queries++;
        ms += event.queryDurationMillis;
      }
      : undefined,
    report(location: string) {
      if (enabled) {
        log.info(`database time: ${queries} queries, ${Math.round(ms)} ms (${location})`);
      }
    },
  };
})();

/**
 * `host:port/database` of a PostgreSQL URL (or its socket folder), without user or password, and
 * the password apart (to keep it out of messages).
 */
function describeServer(url: string): { location: string; password: string } {
  // parseDatabaseUrl has read it once already.
  const parsed = parseConnectionString(url);
  const port = parsed.port ? `:${parsed.port}` : "";
  return {
    location: `${parsed.host || "localhost"}${port}/${parsed.database ?? ""}`,
    password: typeof parsed.password === "string" ? parsed.password : "",
  };
}
