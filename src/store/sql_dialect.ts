/**
 * What differs between the two databases, in one place, so the queries in src/store are written
 * once: row locks (PostgreSQL's `FOR UPDATE` / `FOR SHARE`, where SQLite's `BEGIN IMMEDIATE`
 * already serialises every writer), the greater of two values, the lock that serialises space
 * reservations across nodes, and how a unique violation is recognised.
 */
import { type Kysely, type RawBuilder, sql } from "kysely";
import type { Database } from "./schema.ts";

/** The database engines cartd runs on. */
export type DialectName = "sqlite" | "postgres";

/** A query that can take row locks (Kysely's select builders). */
interface Lockable {
  forUpdate(): this;
  forShare(): this;
  skipLocked(): this;
}

/** The helpers the queries use where the engines differ. */
export interface SqlDialect {
  readonly name: DialectName;
  /** Whether rows are locked one by one (PostgreSQL); else every writer takes its turn (SQLite). */
  readonly rowLocks: boolean;
  /** Locks the selected rows for an update (no-op on SQLite, whose writers take turns). */
  forUpdate<Q extends Lockable>(query: Q): Q;
  /** Locks the selected rows against updates while reading them. */
  forShare<Q extends Lockable>(query: Q): Q;
  /** Locks the selected rows, skipping those another transaction holds (work claims). */
  forUpdateSkipLocked<Q extends Lockable>(query: Q): Q;
  /** The greater of two values. */
  larger(a: RawBuilder<unknown>, b: RawBuilder<unknown>): RawBuilder<number>;
  /** Serialises space reservations, across nodes, for the rest of the transaction. */
  lockReservations(tx: Kysely<Database>): Promise<void>;
  /** Whether `err` is a unique-constraint violation (two creates of one uid racing). */
  isUniqueViolation(err: unknown): boolean;
  /** Whether a table of this name exists where cartd's tables live (its own schema). */
  tableExists(db: Kysely<Database>, name: string): Promise<boolean>;
}

/** SQLite: every write transaction begins with `BEGIN IMMEDIATE`, so writers already take turns. */
export const sqliteSql: SqlDialect = {
  name: "sqlite",
  rowLocks: false,
  forUpdate: (query) => query,
  forShare: (query) => query,
  forUpdateSkipLocked: (query) => query,
  larger: (a, b) => sql<number>`max(${a}, ${b})`,
  lockReservations: () => Promise.resolve(),
  isUniqueViolation: (err) =>
    typeof (err as Error)?.message === "string" &&
    (err as Error).message.startsWith("UNIQUE constraint failed"),
  tableExists: async (db, name) =>
    (await sql<{ n: number }>`select count(*) as n from sqlite_master
      where type = 'table' and name = ${name}`.execute(db)).rows[0].n > 0,
};

/** An arbitrary, fixed key for the advisory lock that serialises reservations. */
const reservationLock = 7347001;

/** PostgreSQL: row locks where rows are read to be changed, an advisory lock for reservations. */
export const postgresSql: SqlDialect = {
  name: "postgres",
  rowLocks: true,
  forUpdate: (query) => query.forUpdate(),
  forShare: (query) => query.forShare(),
  forUpdateSkipLocked: (query) => query.forUpdate().skipLocked(),
  larger: (a, b) => sql<number>`greatest(${a}, ${b})`,
  lockReservations: async (tx) => {
    await sql`select pg_advisory_xact_lock(${sql.lit(reservationLock)})`.execute(tx);
  },
  isUniqueViolation: (err) => (err as { code?: unknown })?.code === "23505",
  tableExists: async (db, name) =>
    (await sql<{ present: boolean }>`select to_regclass(${name}) is not null as present`
      .execute(db)).rows[0].present,
};
