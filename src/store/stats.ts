/**
 * The site's figures for metrics and health, read at each scrape: a few grouped queries, so every
 * node of a site reports the same counts.
 */
import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.ts";

/** Counts of carts and files, and the bytes they hold or have reserved. */
export interface SiteCounts {
  cartsByStatus: Record<string, number>;
  filesByState: Record<string, number>;
  cartsDeletedByReason: Record<string, number>;
  /** Bytes held by pulls in progress (leases not run out). */
  reservedBytes: number;
  notificationsPending: number;
  /** Bytes of verified files on the volume, each counted once (the cache included). */
  cartBytes: number;
}

/** Grouped counts over carts and files. */
export class StatsRecords {
  constructor(private readonly db: Kysely<Database>) {}

  async counts(now: number): Promise<SiteCounts> {
    const carts = await this.db.selectFrom("carts")
      .select((eb) => ["status", eb.fn.countAll<number>().as("count")])
      .where("deleted_at", "is", null).where("status", "!=", "creating")
      .groupBy("status").execute();
    const files = await this.db.selectFrom("files")
      .innerJoin("carts", "carts.id", "files.cart_id")
      .select((eb) => ["files.state", eb.fn.countAll<number>().as("count")])
      .where("carts.deleted_at", "is", null).where("carts.status", "!=", "creating")
      .groupBy("files.state").execute();
    const deleted = await this.db.selectFrom("carts")
      .select((eb) => ["delete_reason", eb.fn.countAll<number>().as("count")])
      .where("deleted_at", "is not", null).groupBy("delete_reason").execute();
    const bytes = await sql<
      { reserved: number | string; stored: number | string; pending: number | string }
    >`
      select
        (select coalesce(sum(reserved), 0) from files where reserved > 0 and lease_until > ${now})
          as reserved,
        (select bytes from cache_totals where id = 1) as stored,
        (select count(*) from notifications) as pending`
      .execute(this.db);
    const byKey = <K extends string>(
      rows: ({ count: number | string } & Record<K, unknown>)[],
      key: K,
    ) => Object.fromEntries(rows.map((row) => [String(row[key] ?? "unknown"), Number(row.count)]));
    return {
      cartsByStatus: byKey(carts, "status"),
      filesByState: byKey(files, "state"),
      cartsDeletedByReason: byKey(deleted, "delete_reason"),
      reservedBytes: Number(bytes.rows[0].reserved),
      cartBytes: Number(bytes.rows[0].stored),
      notificationsPending: Number(bytes.rows[0].pending),
    };
  }
}
