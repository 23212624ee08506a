/**
 * Space on the shared volume as records: reservations for pulls, downloads that hold a cart's
 * files, and the removal of a deleted cart's files once nothing holds them.
 *
 * Across nodes: reservations are made one at a time (an advisory lock on PostgreSQL; SQLite's
 * writers take turns), so two nodes never count the same free bytes. A download is registered
 * under a lock on its cart row, and a removal is claimed under the same lock after checking that
 * no download runs, so files are never removed under a download on any node.
 */
import { type Kysely, type RawBuilder, sql } from "kysely";
import { noLiveDownload } from "./predicates.ts";
import { addToCacheTotal } from "./cache.ts";
import type { Database } from "./schema.ts";
import type { SqlDialect } from "./sql_dialect.ts";
import type { FileChanges } from "./work.ts";

/** The volume's accounting at the moment a reservation was tried. */
export interface SpaceCheck {
  fits: boolean;
  /** The file is no longer this worker's: nothing was reserved, and nothing need be made room for. */
  leaseLost?: boolean;
  /** Bytes held by other pulls in progress and not yet on disk. */
  reserved: number;
  /** What cartd's carts and reservations take, for `volume_size_limit`. */
  used: number;
}

/** Reservations, downloads and removals; see the module comment. */
export class SpaceRecords {
  constructor(private readonly db: Kysely<Database>, private readonly dialect: SqlDialect) {}

  /**
   * Reserves `bytes` for a file this worker holds, if they fit: in what the volume has free
   * (`freeBytes`, read inside the transaction) less what other pulls hold and have not written yet,
   * and, when `limit` > 0, in cartd's own cap. Reservations of every process count, and one
   * expires with its file's lease, so a crashed worker's space comes back. When they fit, the
   * file's row takes `changes` in the same statement.
   */
  async reserve(
    fileId: number,
    owner: string,
    bytes: number,
    freeBytes: () => number,
    limit: number,
    now: number,
    changes: FileChanges = {},
  ): Promise<SpaceCheck> {
    return await this.db.transaction().execute(async (tx) => {
      await this.dialect.lockReservations(tx);
      // Under the lock, as few round trips as can be: the free space is read here, and the check
      // and the reservation (with the file's `changes`) are one statement. The totals are read
      // only when it does not fit.
      const free = freeBytes();
      const others = (column: RawBuilder<unknown>) =>
        sql`(select coalesce(sum(${column}), 0) from files
          where reserved > 0 and lease_until > ${now} and id <> ${fileId})`;
      // A pull's whole reservation counts until it completes: what it wrote may not show in the
      // file system's free space yet (a shared volume's client cache holds it for a while).
      const unwritten = others(sql`reserved`);
      // Every verified file on the volume counts once, however many carts refer to it.
      const stored = sql`(select bytes from cache_totals where id = 1)`;
      const need = sql`cast(${bytes} as bigint)`;
      const reserved = await tx.updateTable("files")
        .set({ ...changes, reserved: bytes, space_wait_since: null, error: "" })
        .where("id", "=", fileId).where("owner", "=", owner)
        .where(sql<boolean>`${need} <= cast(${free} as bigint) - ${unwritten}`)
        .where(sql<boolean>`(cast(${limit} as bigint) <= 0
            or ${stored} + ${others(sql`reserved`)} + ${need} <= cast(${limit} as bigint))`)
        .returning("id").execute();
      if (reserved.length > 0) return { fits: true, reserved: 0, used: 0 };
      const totals = await sql<{ unwritten: number; held: number; stored: number; ours: number }>`
        select ${unwritten} as unwritten, ${others(sql`reserved`)} as held, ${stored} as stored,
          (select count(*) from files where id = ${fileId} and owner = ${owner}) as ours`
        .execute(tx);
      const row = totals.rows[0];
      return {
        fits: false,
        leaseLost: Number(row.ours) === 0,
        reserved: Number(row.unwritten),
        used: Number(row.stored) + Number(row.held),
      };
    });
  }

  /**
   * Registers a download of a cart, so its files stay while it runs; undefined when the cart's
   * files are already gone (it was deleted and removed meanwhile).
   */
  startDownload(cartId: number, owner: string, until: number): Promise<number | undefined> {
    return this.db.transaction().execute(async (tx) => {
      const cart = await this.dialect.forShare(
        tx.selectFrom("carts").select("id").where("id", "=", cartId).where(
          "removed_at",
          "is",
          null,
        ),
      ).executeTakeFirst();
      if (!cart) return undefined;
      const row = await tx.insertInto("downloads")
        .values({ cart_id: cartId, owner, lease_until: until })
        .returning("id").executeTakeFirstOrThrow();
      return Number(row.id);
    });
  }

  /** Keeps a download's hold on its cart for longer; false when the hold is gone. */
  async renewDownload(id: number, until: number): Promise<boolean> {
    const result = await this.db.updateTable("downloads").set({ lease_until: until })
      .where("id", "=", id).executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }

  /** Ends a download's hold on its cart. */
  async endDownload(id: number): Promise<void> {
    await this.db.deleteFrom("downloads").where("id", "=", id).execute();
  }

  /** What a cart's files need in all, as far as their sizes are known, and how many are not. */
  async cartNeeds(cartId: number): Promise<{ bytes: number; unknown: number }> {
    const row = await this.db.selectFrom("files")
      .select([
        sql<number>`coalesce(sum(size), 0)`.as("bytes"),
        sql<number>`count(*) - count(size)`.as("unknown"),
      ])
      .where("cart_id", "=", cartId).executeTakeFirstOrThrow();
    return { bytes: Number(row.bytes), unknown: Number(row.unknown) };
  }

  /** Deleted carts whose files are still on the volume and that no download holds. */
  async removable(now: number): Promise<{ id: number; uid: string }[]> {
    const rows = await this.db.selectFrom("carts").select(["id", "uid"])
      .where("deleted_at", "is not", null).where("removed_at", "is", null)
      .where(noLiveDownload(now))
      .execute();
    return rows.map((r) => ({ id: Number(r.id), uid: r.uid }));
  }

  /**
   * Claims the removal of a deleted cart's files: true when they are this caller's to remove (no
   * download holds them, and no one else claimed them). The files are removed after the claim, so
   * a download can never be registered on a cart whose files are going.
   */
  claimRemoval(cartId: number, now: number): Promise<boolean> {
    return this.db.transaction().execute(async (tx) => {
      const cart = await this.dialect.forUpdate(
        tx.selectFrom("carts").select("id").where("id", "=", cartId)
          .where("deleted_at", "is not", null).where("removed_at", "is", null),
      ).executeTakeFirst();
      if (!cart) return false;
      const result = await tx.updateTable("carts").set({ removed_at: now })
        .where("id", "=", cartId).where(noLiveDownload(now)).executeTakeFirst();
      if (result.numUpdatedRows === 0n) return false;
      // Files whose one copy is this cart's (not linked into the cache) go with its folder.
      const gone = await tx.deleteFrom("blobs").where("key", "is", null)
        .where(
          "id",
          "in",
          (eb) =>
            eb.selectFrom("files").select("blob_id").where("cart_id", "=", cartId)
              .where("blob_id", "is not", null),
        )
        .returning("size").execute();
      await addToCacheTotal(tx, -gone.reduce((sum, b) => sum + Number(b.size), 0));
      return true;
    });
  }
}
