/**
 * Kysely on PostgreSQL through the npm `pg` driver, for several nodes sharing one database.
 *
 * - 64-bit integers (ids, epoch milliseconds, byte counts) and sums come back as numbers, as they
 *   do from SQLite; every value cartd stores is far below 2^53.
 * - A database that restarts or drops connections must not bring cartd down: every pooled client
 *   gets an error listener (an unheard 'error' event would end the process), and broken clients
 *   leave the pool when released.
 * - Driver failures are classed once, here, by SQLSTATE or socket errno, into the errors users see
 *   (busy, unavailable); anything else passes through.
 */
// @ts-types="@types/pg"
import type pg from "pg";
import { type DatabaseConnection, type Driver, PostgresDialect } from "kysely";
import { CartdError, describe } from "../errors.ts";
import { log } from "../log.ts";

/** Socket errors that mean the server cannot be reached. */
const unreachable = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
]);

/**
 * pg's and pg-pool's own texts for a connection that ended, or could not be had in time; they
 * carry no code. Matched here and nowhere else.
 */
const connectionTexts = [
  "Connection terminated",
  "Client has encountered a connection error and is not queryable",
  "Client was closed and is not queryable",
  "timeout exceeded when trying to connect",
];

/** A failure that says the database cannot be used right now (reached, or reached in time). */
export function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code === "string") {
    // 08: connection exceptions; 53: out of resources (disk, memory, connections); 57: the
    // server is shutting down, starting, or cancelled the query; 58: its own I/O failed;
    // 25006: a read-only server (a replica during a failover).
    if (/^(08|53|57|58)/.test(code) || code === "25006") return true;
    if (unreachable.has(code)) return true;
  }
  const message = (err as Error)?.message;
  return typeof message === "string" && connectionTexts.some((text) => message.startsWith(text));
}

/** A failure no retry mends: a wrong password or user, a database that does not exist. */
export function isPermanentConnectFailure(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && (code.startsWith("28") || code === "3D000");
}

/** The error a user sees for a database failure cartd knows, or `err` itself. */
export function userError(err: unknown): unknown {
  if (err instanceof CartdError) return err;
  const code = (err as { code?: unknown })?.code;
  // Serialization failure, deadlock, lock not available, object in use: another transaction
  // was in the way.
  if (code === "40001" || code === "40P01" || code === "55P03" || code === "55006") {
    return new CartdError(
      "busy",
      "The database is busy (a conflicting transaction); try again shortly",
      { cause: err },
    );
  }
  if (code === "53100") {
    return new CartdError("unavailable", "The database's disk is full", { cause: err });
  }
  if (isUnavailable(err)) {
    return new CartdError("unavailable", "The database is unavailable", { cause: err });
  }
  return err;
}

/** No transaction of cartd's waits between its statements for longer than this. */
const idleInTransactionMs = 60_000;

/** Options of the PostgreSQL connection pool. */
export interface PostgresOptions {
  /** Connections the pool may open (workers and requests share them). */
  poolSize: number;
  /** How long (ms) to wait for a connection or for a lock before giving up. */
  busyTimeout: number;
}

/**
 * `sslmode` as libpq (and psql) read it: `require` encrypts without checking the certificate,
 * `verify-full` checks it. pg on its own treats `require` as `verify-full`, and warns.
 */
function withLibpqSslModes(url: string): string {
  if (!/[?&]sslmode=/.test(url) || /[?&]uselibpqcompat=/.test(url)) return url;
  return `${url}&uselibpqcompat=true`;
}

/**
 * A Kysely dialect for the PostgreSQL database at `url`. The driver is loaded when the first
 * connection is made, so a cartd on SQLite never loads it (it costs start time and memory).
 */
export function postgresDialect(url: string, options: PostgresOptions): PostgresDialect {
  return new ClassifyingPostgresDialect({
    pool: async () => {
      // @ts-types="@types/pg"
      const { default: driver } = await import("pg");
      return createPool(driver, url, options);
    },
  });
}

function createPool(pg: typeof import("pg").default, url: string, options: PostgresOptions) {
  const pool = new pg.Pool({
    connectionString: withLibpqSslModes(url),
    max: options.poolSize,
    connectionTimeoutMillis: Math.min(options.busyTimeout, 10_000),
    idleTimeoutMillis: 30_000,
    // A node cut off by the network is noticed in minutes, not the system's two hours.
    keepAlive: true,
    types: {
      getTypeParser: ((oid: number, format?: string) =>
        oid === pg.types.builtins.INT8 || oid === pg.types.builtins.NUMERIC
          ? (value: string) =>
            Number(value)
          : pg.types.getTypeParser(oid, format as "text")) as typeof pg.types.getTypeParser,
    },
  });
  pool.on("error", (err) => log.warn(`database connection lost while idle: ${describe(err)}`));
  pool.on("connect", (client) => {
    client.on("error", (err) => log.debug(`database connection failed: ${describe(err)}`));
    // Waits for row locks are bounded like SQLite's busy timeout, and a session that stops in
    // the middle of a transaction (a node that froze) gives its locks back. Set per session,
    // so a URL's own `options` cannot drop them; queued before any query of this client.
    client.query(
      `set lock_timeout = ${Math.round(options.busyTimeout)}; ` +
        `set idle_in_transaction_session_timeout = ${idleInTransactionMs}`,
    ).catch((err) => log.warn(`cannot set session timeouts: ${describe(err)}`));
  });
  return pool;
}

class ClassifyingPostgresDialect extends PostgresDialect {
  override createDriver(): Driver {
    const driver = super.createDriver();
    const acquire = driver.acquireConnection.bind(driver);
    const wrapped = new WeakSet<DatabaseConnection>();
    driver.acquireConnection = async () => {
      let connection: DatabaseConnection;
      try {
        connection = await acquire();
      } catch (err) {
        throw userError(err);
      }
      if (wrapped.has(connection)) return connection;
      wrapped.add(connection);
      const execute = connection.executeQuery.bind(connection);
      connection.executeQuery = async (query) => {
        try {
          return await execute(query);
        } catch (err) {
          throw userError(err);
        }
      };
      return connection;
    };
    return driver;
  }
}
