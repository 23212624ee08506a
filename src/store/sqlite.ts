/**
 * Kysely on Deno's built-in `node:sqlite`: an adapter to the better-sqlite3 shape Kysely expects,
 * and a dialect that opens every transaction with `BEGIN IMMEDIATE`. With Kysely's plain deferred
 * `BEGIN`, two processes doing read-then-write transactions fail with "database is locked" (a
 * snapshot conflict that the busy timeout cannot help); taking the write lock up front avoids it.
 *
 * node:sqlite is synchronous, and SQLite's own busy handler sleeps inside the call: a database
 * locked by another process for seconds would freeze the whole server (downloads included). So
 * SQLite waits only briefly, and a statement refused as busy (which then has done nothing) is
 * tried again after an asynchronous pause, until the busy timeout runs out.
 */
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import {
  CompiledQuery,
  type DatabaseConnection,
  type DialectAdapter,
  type Driver,
  SqliteAdapter,
  type SqliteDatabase,
  SqliteDialect,
} from "kysely";
import { CartdError, describe } from "../errors.ts";
import { sleep } from "../time.ts";

const bind = (params: ReadonlyArray<unknown>) =>
  params.map((v) => (typeof v === "boolean" ? (v ? 1 : 0) : v)) as SQLInputValue[];

/** Prepared statements kept per SQL text: Kysely sends the same few queries over and over. */
const statementCacheSize = 256;

function adapt(db: DatabaseSync): SqliteDatabase {
  const statements = new Map<string, { stmt: StatementSync; reader: boolean }>();
  const prepare = (query: string) => {
    let prepared = statements.get(query);
    if (!prepared) {
      const stmt = db.prepare(query);
      prepared = { stmt, reader: stmt.columns().length > 0 };
      if (statements.size >= statementCacheSize) statements.delete(statements.keys().next().value!);
      statements.set(query, prepared);
    }
    return prepared;
  };
  return {
    close: () => db.close(),
    prepare(query) {
      const { stmt, reader } = prepare(query);
      return {
        reader,
        all: (params) => stmt.all(...bind(params)),
        run: (params) => stmt.run(...bind(params)),
        iterate: (params) => stmt.iterate(...bind(params)) as IterableIterator<unknown>,
      };
    },
  };
}

/** SQLite's own (blocking) wait for a lock, kept short; the rest of the wait is asynchronous. */
const blockingWaitMs = 25;

/**
 * SQLite's own text for the result codes cartd acts on (`sqlite3_errstr`). node:sqlite in Deno
 * gives its errors `code: "ERR_SQLITE_ERROR"` and SQLite's message, which is this text, alone or
 * followed by `: detail`; it has no `errcode` (checked on Deno 2.9.6), so the fixed text stands in
 * for the code, here and nowhere else. A numeric `errcode`, should one appear, wins.
 */
const resultCodeTexts: [string, string][] = [
  ["database is locked", "SQLITE_BUSY"],
  ["database table is locked", "SQLITE_LOCKED"],
  ["database or disk is full", "SQLITE_FULL"],
  ["disk I/O error", "SQLITE_IOERR"],
  ["unable to open database file", "SQLITE_CANTOPEN"],
  ["attempt to write a readonly database", "SQLITE_READONLY"],
];

/** SQLite's primary result codes for the same failures, by number. */
const resultCodeNumbers: Record<number, string> = {
  5: "SQLITE_BUSY",
  6: "SQLITE_LOCKED",
  13: "SQLITE_FULL",
  10: "SQLITE_IOERR",
  14: "SQLITE_CANTOPEN",
  8: "SQLITE_READONLY",
};

/** The SQLite result code of a driver error (`SQLITE_BUSY`, ...), or undefined. */
export function sqliteResultCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; errcode?: unknown; message?: unknown };
  if (e?.code !== "ERR_SQLITE_ERROR") return undefined;
  if (typeof e.errcode === "number") return resultCodeNumbers[e.errcode & 0xff];
  if (typeof e.message !== "string") return undefined;
  const message = e.message;
  return resultCodeTexts.find(([text]) => message === text || message.startsWith(`${text}:`))?.[1];
}

const isBusy = (err: unknown) => {
  const code = sqliteResultCode(err);
  return code === "SQLITE_BUSY" || code === "SQLITE_LOCKED";
};

/** The error a user sees for a database failure cartd knows, or `err` itself. */
export function userError(err: unknown): unknown {
  const code = sqliteResultCode(err);
  if (code === "SQLITE_BUSY" || code === "SQLITE_LOCKED") {
    return new CartdError(
      "busy",
      "The database is busy (locked by another process); try again shortly",
      { cause: err },
    );
  }
  if (code === "SQLITE_FULL") {
    return new CartdError("unavailable", "The database's disk is full", { cause: err });
  }
  if (code === "SQLITE_IOERR" || code === "SQLITE_CANTOPEN" || code === "SQLITE_READONLY") {
    return new CartdError("failure", `The database cannot be used: ${describe(err)}`);
  }
  return err;
}

/**
 * SQLite's DDL is transactional: telling Kysely so makes its migrator run every migration in one
 * `BEGIN IMMEDIATE` transaction, so two processes starting at once migrate exactly once.
 */
class TransactionalDdlSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

class ImmediateSqliteDialect extends SqliteDialect {
  override createAdapter(): DialectAdapter {
    return new TransactionalDdlSqliteAdapter();
  }

  constructor(
    config: ConstructorParameters<typeof SqliteDialect>[0],
    private busyTimeoutMs: number,
  ) {
    super(config);
  }

  override createDriver(): Driver {
    const driver = super.createDriver();
    const busyTimeoutMs = this.busyTimeoutMs;
    const acquire = driver.acquireConnection.bind(driver);
    // The driver hands out one connection over and over: wrap it once.
    const wrapped = new WeakSet<DatabaseConnection>();
    driver.acquireConnection = async () => {
      const connection = await acquire();
      if (wrapped.has(connection)) return connection;
      wrapped.add(connection);
      const execute = connection.executeQuery.bind(connection);
      connection.executeQuery = async (query) => {
        const deadline = Date.now() + busyTimeoutMs;
        for (let pause = 10;; pause = Math.min(pause * 2, 250)) {
          try {
            return await execute(query);
          } catch (err) {
            if (!isBusy(err) || Date.now() + pause > deadline) throw userError(err);
            await sleep(pause);
          }
        }
      };
      return connection;
    };
    driver.beginTransaction = async (connection: DatabaseConnection) => {
      await connection.executeQuery(CompiledQuery.raw("begin immediate"));
    };
    return driver;
  }
}

/** A Kysely dialect for the SQLite file at `file`, in WAL mode, waiting `busyTimeoutMs` for locks. */
export function sqliteDialect(file: string, busyTimeoutMs = 30_000): SqliteDialect {
  return new ImmediateSqliteDialect({
    database: () => {
      try {
        const raw = new DatabaseSync(file, { timeout: blockingWaitMs });
        raw.exec("pragma journal_mode=WAL; pragma synchronous=NORMAL; pragma foreign_keys=ON");
        return Promise.resolve(adapt(raw));
      } catch (err) {
        return Promise.reject(userError(err));
      }
    },
  }, busyTimeoutMs);
}
