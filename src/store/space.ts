/**
 * Space on the shared volume as records: reservations for pulls, downloads that hold a cart's
 * files, and the removal of a deleted cart's files once nothing holds them.
 *
 * Across nodes: reservations are made one at a time (an advisory lock on PostgreSQL; SQLite's
 * writers take turns), so two nodes never count the same free bytes. A download is registered
 * under a lock on its cart row, and a removal is claimed under the same lock after checking that
 * no download runs, so files are never removed under a download on any node.
 */
import { type Kysely, sql } from "kysely";
import { noLiveDownload } from "./predicates.ts";
import type { Database } from "./schema.ts";
import type { SqlDialect } from "./sql_dialect.ts";

/** The volume's accounting at the moment a reservation was tried. */
export interface SpaceCheck {
  fits: boolean;
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
   * expires with its file's lease, so a crashed worker's space comes back.
   */
  async reserve(
    fileId: number,
    owner: string,
    bytes: number,
    freeBytes: () => number,
    limit: number,
    now: number,
  ): Promise<SpaceCheck> {
    return await this.db.transaction().execute(async (tx) => {
      await this.dialect.lockReservations(tx);
      const unwritten = this.dialect.larger(sql`reserved - bytes_pulled`, sql`0`);
      const held = await tx.selectFrom("files")
        .select((eb) => [
          eb.fn.coalesce(eb.fn.sum<number>("reserved"), eb.lit(0)).as("reserved"),
          eb.fn.coalesce(eb.fn.sum<number>(unwritten), eb.lit(0)).as("unwritten"),
        ])
        .where("reserved", ">", 0).where("lease_until", ">", now).where("id", "!=", fileId)
        .executeTakeFirstOrThrow();
      const stored = await tx.selectFrom("carts")
        .select((eb) => eb.fn.coalesce(eb.fn.sum<number>("bytes"), eb.lit(0)).as("bytes"))
        .where("removed_at", "is", null)
        .executeTakeFirstOrThrow();
      const reserved = Number(held.unwritten);
      const used = Number(stored.bytes) + Number(held.reserved);
      const fits = bytes <= freeBytes() - reserved && (limit <= 0 || used + bytes <= limit);
      if (fits) {
        await tx.updateTable("files").set({ reserved: bytes, space_wait_since: null, error: "" })
          .where("id", "=", fileId).where("owner", "=", owner).execute();
      }
      return { fits, reserved, used };
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

  /** Keeps a download's hold on its cart for longer. */
  async renewDownload(id: number, until: number): Promise<void> {
    await this.db.updateTable("downloads").set({ lease_until: until }).where("id", "=", id)
      .execute();
  }

  /** Ends a download's hold on its cart. */
  async endDownload(id: number): Promise<void> {
    await this.db.deleteFrom("downloads").where("id", "=", id).execute();
  }

  /** Deleted carts whose files are still on the volume and that no download holds. */
  async removable(now: number): Promise<number[]> {
    const rows = await this.db.selectFrom("carts").select("id")
      .where("deleted_at", "is not", null).where("removed_at", "is", null)
      .where(noLiveDownload(now))
      .execute();
    return rows.map((r) => Number(r.id));
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
      return result.numUpdatedRows > 0n;
    });
  }
}
