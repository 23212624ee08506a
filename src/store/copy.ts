/**
 * `cartd db copy`: every cart and file of one database into another (SQLite to PostgreSQL as a
 * site grows, or back), ids kept, since cart folders on the volume are named by them. States, use
 * times and errors come along; claims do not: they belonged to the processes of the old site, so
 * files being pulled go back to staged. Running downloads are not copied either.
 *
 * The source is read in one transaction (one consistent state) and the target written in one, so
 * a failed copy leaves the target as it was.
 */
import { type Kysely, sql, type Transaction } from "kysely";
import { CartdError } from "../errors.ts";
import type { CartFile, Database } from "./schema.ts";
import type { SqlDialect } from "./sql_dialect.ts";

/** What a copy moved. */
export interface CopyReport {
  carts: number;
  files: number;
}

const batch = 1000;

/** Copies every cart and file from `source` into `target`; see the module comment. */
export async function copyRows(
  source: { db: Kysely<Database>; dialect: SqlDialect },
  target: { db: Kysely<Database>; dialect: SqlDialect },
  options: { force?: boolean },
): Promise<CopyReport> {
  return await inSnapshot(source, (from) =>
    target.db.transaction().execute(async (to) => {
      const existing = await to.selectFrom("carts").select((eb) => eb.fn.countAll<number>().as("n"))
        .executeTakeFirstOrThrow();
      if (Number(existing.n) > 0) {
        if (!options.force) {
          throw new CartdError(
            "failure",
            `the target database already holds ${existing.n} cart(s); nothing was copied`,
          ).withHint("--force replaces what it holds");
        }
        await to.deleteFrom("downloads").execute();
        await to.deleteFrom("notifications").execute();
        await to.deleteFrom("pulls").execute();
        await to.deleteFrom("files").execute();
        await to.deleteFrom("blobs").execute();
        await to.deleteFrom("carts").execute();
      }
      const report = { carts: 0, files: 0 };
      for (let after = -1;;) {
        const carts = await from.selectFrom("carts").selectAll().where("id", ">", after)
          .orderBy("id").limit(batch).execute();
        if (carts.length === 0) break;
        await to.insertInto("carts").values(carts).execute();
        report.carts += carts.length;
        after = Number(carts[carts.length - 1].id);
      }
      for (let after = -1;;) {
        const files = await from.selectFrom("files").selectAll().where("id", ">", after)
          .orderBy("id").limit(batch).execute();
        if (files.length === 0) break;
        await to.insertInto("files").values(files.map(withoutClaims)).execute();
        report.files += files.length;
        after = Number(files[files.length - 1].id);
      }
      // The cache's records, ids kept (files refer to them): its files are on the shared volume.
      for (let after = -1;;) {
        const blobs = await from.selectFrom("blobs").selectAll().where("id", ">", after)
          .orderBy("id").limit(batch).execute();
        if (blobs.length === 0) break;
        await to.insertInto("blobs").values(blobs).execute();
        after = Number(blobs[blobs.length - 1].id);
      }
      await sql`update cache_totals set bytes = (select coalesce(sum(size), 0) from blobs)
        where id = 1`.execute(to);
      // Notifications not delivered yet go along, free of any lease.
      const pending = await from.selectFrom("notifications").selectAll().orderBy("id").execute();
      for (let i = 0; i < pending.length; i += batch) {
        await to.insertInto("notifications").values(
          pending.slice(i, i + batch).map((n) => ({ ...n, owner: null, lease_until: null })),
        ).execute();
      }
      if (target.dialect.name === "postgres") await resetSequences(to);
      return report;
    }));
}

/** A file as the new site starts it: held by no one, a pull under way back to staged. */
function withoutClaims(file: CartFile): CartFile {
  return {
    ...file,
    owner: null,
    lease_until: null,
    reserved: 0,
    state: file.state === "pulling" ? "staged" : file.state,
    bytes_pulled: file.state === "ready" ? file.bytes_pulled : 0,
  };
}

/**
 * PostgreSQL's id sequences carry on after the copied ids, and never go back (cart ids name
 * folders on the volume, so an id must not come round again).
 */
async function resetSequences(tx: Transaction<Database>): Promise<void> {
  for (const table of ["carts", "files", "downloads", "notifications", "blobs"]) {
    const sequence = sql`pg_get_serial_sequence(${table}, 'id')`;
    await sql`select setval(${sequence}, greatest(
      (select coalesce(max(id), 0) from ${sql.table(table)}),
      coalesce(pg_sequence_last_value(${sequence}::regclass), 0),
      1))`.execute(tx);
  }
}

/**
 * Runs `body` on one consistent state of the source: a read-only repeatable-read transaction on
 * PostgreSQL; on SQLite a deferred transaction (a snapshot that blocks no writer).
 */
function inSnapshot<T>(
  source: { db: Kysely<Database>; dialect: SqlDialect },
  body: (db: Kysely<Database>) => Promise<T>,
): Promise<T> {
  if (source.dialect.name === "postgres") {
    return source.db.transaction().setIsolationLevel("repeatable read")
      .setAccessMode("read only").execute(body);
  }
  return source.db.connection().execute(async (connection) => {
    await sql`begin`.execute(connection);
    try {
      const result = await body(connection);
      await sql`commit`.execute(connection);
      return result;
    } catch (err) {
      await sql`rollback`.execute(connection).catch(() => {});
      throw err;
    }
  });
}
