/**
 * Kysely on Deno's built-in `node:sqlite`: an adapter to the better-sqlite3 shape Kysely expects,
 * and a dialect that opens every transaction with `BEGIN IMMEDIATE`. With Kysely's plain deferred
 * `BEGIN`, two processes doing read-then-write transactions fail with "database is locked" (a
 * snapshot conflict that the busy timeout cannot help); taking the write lock up front avoids it.
 */
import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import {
  CompiledQuery,
  type DatabaseConnection,
  type Driver,
  type SqliteDatabase,
  SqliteDialect,
} from "kysely";

const bind = (params: ReadonlyArray<unknown>) =>
  params.map((v) => (typeof v === "boolean" ? (v ? 1 : 0) : v)) as SQLInputValue[];

function adapt(db: DatabaseSync): SqliteDatabase {
  return {
    close: () => db.close(),
    prepare(query) {
      const stmt = db.prepare(query);
      return {
        reader: stmt.columns().length > 0,
        all: (params) => stmt.all(...bind(params)),
        run: (params) => stmt.run(...bind(params)),
        iterate: (params) => stmt.iterate(...bind(params)) as IterableIterator<unknown>,
      };
    },
  };
}

class ImmediateSqliteDialect extends SqliteDialect {
  override createDriver(): Driver {
    const driver = super.createDriver();
    driver.beginTransaction = async (connection: DatabaseConnection) => {
      await connection.executeQuery(CompiledQuery.raw("begin immediate"));
    };
    return driver;
  }
}

/** A Kysely dialect for the SQLite file at `file`, in WAL mode with a generous busy timeout. */
export function sqliteDialect(file: string, busyTimeoutMs = 30_000): SqliteDialect {
  return new ImmediateSqliteDialect({
    database: () => {
      const raw = new DatabaseSync(file, { timeout: busyTimeoutMs });
      raw.exec("pragma journal_mode=WAL; pragma synchronous=NORMAL; pragma foreign_keys=ON");
      return Promise.resolve(adapt(raw));
    },
  });
}
