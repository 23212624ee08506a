/**
 * Work as leased rows: a worker claims a due file (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so
 * nodes never claim the same file and never wait for each other), holds it by renewing its lease,
 * records each step's outcome only while it still holds it, and hands it back. A worker that dies
 * holds nothing past its lease; one of this host that has exited is reaped at once.
 *
 * Lock order: a claim that marks its cart's turn locks the cart row before the file row, as every
 * transaction touching both does (see carts.ts).
 */
import { type Kysely, sql } from "kysely";
import { readyIfDone, settleWithin } from "./carts.ts";
import type { Receivers } from "./outbox.ts";
import { type NewBlob, recordBlob } from "./cache.ts";
import { dueAndUnleased, ofStagingCart, pendingStates, stagingCart } from "./predicates.ts";
import type { CartFile, Database, FileTable } from "./schema.ts";
import type { SqlDialect } from "./sql_dialect.ts";

/** Thrown inside a transaction to roll it back when the file's lease turns out to be lost. */
const leaseLost = new Error("lease lost");
/** Thrown inside a transaction to roll it back when a file's cart is not admitted yet. */
const unadmitted = new Error("cart not admitted");

/** Columns a worker may change on a file it holds. */
export type FileChanges = Partial<Omit<FileTable, "id" | "cart_id">>;

/** Claims, leases and step outcomes; see the module comment. */
export class WorkRecords {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly dialect: SqlDialect,
    /** Where cart events go (see outbox.ts). */
    private readonly receivers: Receivers,
  ) {}

  /**
   * Leases a file that is due: of a cart still staging, not leased (or its lease ran out), and
   * past its `next_try_at`. Carts take turns (the one whose work was taken longest ago goes
   * first), so a small cart is not stuck behind a large one. Limited to one cart when `cartId`
   * is given.
   */
  async claim(
    owner: string,
    now: number,
    leaseMs: number,
    cartId?: number,
  ): Promise<CartFile | undefined> {
    // Within one cart, the claim is a single statement.
    if (cartId !== undefined) return await this.claimIn(this.db, cartId, owner, now, leaseMs);
    return await this.db.transaction().execute(async (tx) => {
      const target = await this.cartWithDueWork(tx, now);
      if (target === undefined) return undefined;
      // Its turn is taken (cart row first, as the lock order says).
      await tx.updateTable("carts").set({ claimed_at: now }).where("id", "=", target).execute();
      return await this.claimIn(tx, target, owner, now, leaseMs);
    });
  }

  /** Leases a due file of the cart, in one statement: the file is picked and leased at once. */
  private async claimIn(
    db: Kysely<Database>,
    cartId: number,
    owner: string,
    now: number,
    leaseMs: number,
  ): Promise<CartFile | undefined> {
    return await db.updateTable("files")
      .set({ owner, lease_until: now + leaseMs, updated_at: now })
      .where("id", "=", (eb) =>
        this.dialect.forUpdateSkipLocked(
          eb.selectFrom("files").select("id")
            .where("cart_id", "=", cartId)
            .where(dueAndUnleased(now))
            .where(ofStagingCart)
            .limit(1),
        ))
      .where(dueAndUnleased(now))
      .returningAll().executeTakeFirst();
  }

  /**
   * The staging cart with a due, unleased file whose turn it is, if any, locked for this claim.
   * Claimers on other nodes skip a cart one of them holds and take the next in turn, rather than
   * queueing on it; only when every cart with work is held does a claimer wait for one.
   */
  private async cartWithDueWork(tx: Kysely<Database>, now: number): Promise<number | undefined> {
    const query = tx.selectFrom("carts").select("id")
      .where(stagingCart)
      .where(({ exists, selectFrom }) =>
        exists(
          selectFrom("files").select("files.id")
            .whereRef("files.cart_id", "=", "carts.id")
            .where(dueAndUnleased(now)),
        )
      )
      .orderBy("claimed_at").orderBy("id").limit(1);
    let cart = await this.dialect.forUpdateSkipLocked(query).executeTakeFirst();
    if (!cart && this.dialect.rowLocks) {
      cart = await this.dialect.forUpdate(query).executeTakeFirst();
    }
    return cart === undefined ? undefined : Number(cart.id);
  }

  /** Extends a lease; false when the file is no longer ours or its cart is gone. */
  async renew(fileId: number, owner: string, until: number): Promise<boolean> {
    const result = await this.db.updateTable("files").set({ lease_until: until })
      .where("id", "=", fileId).where("owner", "=", owner)
      .where(ofStagingCart)
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }

  /**
   * Records a step's outcome on a file this worker holds, and hands the lease back when
   * `release` is set. False when the lease was lost meanwhile (the change is then not made).
   */
  async save(
    fileId: number,
    owner: string,
    changes: FileChanges,
    release: boolean,
    now: number,
  ): Promise<boolean> {
    const result = await this.db.updateTable("files")
      .set({
        ...changes,
        updated_at: now,
        // A file that is let go holds no claim and no space.
        ...(release ? { owner: null, lease_until: null, reserved: 0 } : {}),
      })
      .where("id", "=", fileId).where("owner", "=", owner)
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }

  /**
   * Records a verified file (with `changes`, and as the cached `blob`), adds its bytes to its
   * cart's total, marks the cart used, and makes it ready if that was its last file, in one
   * transaction; releases the lease.
   * False when the lease was lost meanwhile (nothing is changed then); otherwise whether the
   * cart's files were removed meanwhile (it was deleted while the file was pulled).
   */
  async complete(
    file: { id: number; cart_id: number },
    owner: string,
    changes: FileChanges & { size: number },
    now: number,
    blob?: NewBlob,
  ): Promise<false | { cartRemoved: boolean; cartReady: boolean }> {
    try {
      return await this.db.transaction().execute((tx) =>
        this.recordReady(tx, file, owner, changes.size, now, false, async (removed) => ({
          ...changes,
          // The verified file joins the cache in the same transaction (see cache.ts); one whose
          // cart's folder went meanwhile, and that is not in the cache folder, is on disk nowhere.
          blob_id: blob && (blob.key !== null || !removed)
            ? await recordBlob(tx, file.id, blob, now)
            : null,
        }))
      );
    } catch (err) {
      if (err === leaseLost) return false;
      throw err;
    }
  }

  /**
   * Makes a file this worker holds ready as the cached `blob` (already linked into its cart):
   * what `complete` does for a pull, with no pull. False when the lease was lost; `"gone"` when
   * the cached file was evicted meanwhile; `"unadmitted"` when its cart is not admitted yet (see
   * SpaceRecords.admit). Nothing is changed then.
   */
  async adopt(
    file: { id: number; cart_id: number },
    owner: string,
    blob: {
      id: number;
      size: number;
      mtime: number | null;
      verified: number;
      crc32: number | null;
    },
    now: number,
  ): Promise<false | "gone" | "unadmitted" | { cartRemoved: boolean; cartReady: boolean }> {
    const gone = new Error("blob gone");
    try {
      return await this.db.transaction().execute((tx) =>
        this.recordReady(tx, file, owner, blob.size, now, true, async () => {
          const taken = await tx.updateTable("blobs").set({ used_at: now })
            .where("id", "=", blob.id).executeTakeFirst();
          if (taken.numUpdatedRows === 0n) throw gone;
          return {
            size: blob.size,
            mtime: blob.mtime,
            verified: blob.verified,
            crc32: blob.crc32,
            bytes_pulled: blob.size,
            blob_id: blob.id,
            from_cache: 1,
            error: "",
          };
        })
      );
    } catch (err) {
      if (err === leaseLost) return false;
      if (err === gone) return "gone";
      if (err === unadmitted) return "unadmitted";
      throw err;
    }
  }

  /**
   * The end of a verified file, pulled or taken from the cache, in `tx`: its bytes added to its
   * cart (whose promise for it is given back), its row ready with `row(cartRemoved)`'s changes
   * and its lease released, the pull it led ended (files of other carts waiting for it take it
   * from the cache now), and its cart ready if that was its last file. Throws `leaseLost` when
   * the file is no longer this worker's; with `admittedOnly`, `unadmitted` when its cart is not
   * admitted. The cart row is locked first, as the lock order says.
   */
  private async recordReady(
    tx: Kysely<Database>,
    file: { id: number; cart_id: number },
    owner: string,
    size: number,
    now: number,
    admittedOnly: boolean,
    row: (cartRemoved: boolean) => Promise<FileChanges>,
  ): Promise<{ cartRemoved: boolean; cartReady: boolean }> {
    let update = tx.updateTable("carts")
      .set((eb) => ({
        bytes: eb("bytes", "+", size),
        used_at: now,
        promised_bytes: promiseKept(file.id),
      }))
      .where("id", "=", file.cart_id);
    if (admittedOnly) update = update.where("admitted_at", "is not", null);
    const cart = await update.returning("removed_at").executeTakeFirst();
    if (!cart && admittedOnly) throw unadmitted;
    const cartRemoved = cart === undefined || cart.removed_at !== null;
    const result = await tx.updateTable("files")
      .set({
        ...await row(cartRemoved),
        state: "ready",
        updated_at: now,
        owner: null,
        lease_until: null,
        reserved: 0,
        promised: 0,
      })
      .where("id", "=", file.id).where("owner", "=", owner).where("state", "!=", "ready")
      .executeTakeFirst();
    if (result.numUpdatedRows === 0n) throw leaseLost;
    await endPull(tx, file.id, now);
    const cartReady = await readyIfDone(tx, file.cart_id, now, this.receivers);
    return { cartRemoved, cartReady };
  }

  /**
   * Records that a file this worker holds failed for good, releases it, and settles its cart
   * (now in error), in one transaction. False when the lease was lost meanwhile; otherwise
   * whether this failure is what put the cart in error.
   */
  async fail(
    file: { id: number; cart_id: number },
    owner: string,
    error: string,
    now: number,
  ): Promise<false | { cartFailed: boolean }> {
    try {
      return await this.db.transaction().execute(async (tx) => {
        const cart = await this.dialect.forUpdate(
          tx.selectFrom("carts").select("status").where("id", "=", file.cart_id),
        ).executeTakeFirst();
        // Its share of its cart's promise goes back (read before the row is changed).
        await tx.updateTable("carts").set({ promised_bytes: promiseKept(file.id) })
          .where("id", "=", file.cart_id).execute();
        const result = await tx.updateTable("files")
          .set({
            state: "error",
            error,
            updated_at: now,
            owner: null,
            lease_until: null,
            reserved: 0,
            promised: 0,
          })
          .where("id", "=", file.id).where("owner", "=", owner).executeTakeFirst();
        if (result.numUpdatedRows === 0n) throw leaseLost;
        // Files of other carts waiting for its pull now try their own.
        await endPull(tx, file.id, now);
        const settled = await settleWithin(tx, file.cart_id, now, this.receivers);
        return { cartFailed: cart?.status === "staging" && settled?.status === "error" };
      });
    } catch (err) {
      if (err === leaseLost) return false;
      throw err;
    }
  }

  /**
   * Hands back every lease a process holds (on shutdown), so others need not wait them out: the
   * claims named `owner` and `owner#…` (each claim is named apart, see the worker).
   */
  async release(owner: string): Promise<void> {
    const claims = `${owner.replace(/[\\%_]/g, (c) => `\\${c}`)}#%`;
    await this.db.updateTable("files").set({ owner: null, lease_until: null, reserved: 0 })
      .where((eb) =>
        eb.or([eb("owner", "=", owner), sql<boolean>`owner like ${claims} escape '\\'`])
      ).execute();
    await this.db.deleteFrom("downloads").where("owner", "=", owner).execute();
  }

  /** Frees the leases of owners `isDead` says are gone; returns how many files were freed. */
  async reap(isDead: (owner: string) => boolean): Promise<number> {
    const owners = await this.db.selectFrom("files").select("owner").distinct()
      .where("owner", "is not", null)
      .union(this.db.selectFrom("downloads").select("owner").distinct())
      .execute();
    let freed = 0;
    for (const { owner } of owners) {
      if (owner === null || !isDead(owner)) continue;
      const result = await this.db.updateTable("files")
        .set({ owner: null, lease_until: null, reserved: 0 })
        .where("owner", "=", owner).executeTakeFirst();
      await this.db.deleteFrom("downloads").where("owner", "=", owner).execute();
      freed += Number(result.numUpdatedRows);
    }
    return freed;
  }

  /** The earliest time a pending file of the cart may be claimed, or undefined if none is left. */
  async nextDue(cartId: number): Promise<number | undefined> {
    const due = this.dialect.larger(sql.ref("next_try_at"), sql`coalesce(lease_until, 0)`);
    const row = await this.db.selectFrom("files")
      .select(sql<number | null>`min(${due})`.as("due"))
      .where("cart_id", "=", cartId).where("state", "in", pendingStates)
      .executeTakeFirst();
    return row?.due === null || row?.due === undefined ? undefined : Number(row.due);
  }

  /** Every file row of every cart: for audits and tests. */
  all(): Promise<CartFile[]> {
    return this.db.selectFrom("files").selectAll().orderBy("id").execute();
  }
}

/**
 * A cart's promise less the share of file `fileId` (see SpaceRecords.reserve): what it still
 * needs once that file is on the volume, or will never be.
 */
function promiseKept(fileId: number) {
  return sql<number>`promised_bytes - (select promised from files where id = ${fileId})`;
}

/**
 * Ends the pull a file led (see `CacheRecords.leadPull`), waking the files of other carts that
 * wait for it: they take it from the cache, or (if it failed) one of them pulls it.
 */
async function endPull(tx: Kysely<Database>, fileId: number, now: number): Promise<void> {
  const ended = await tx.deleteFrom("pulls").where("file_id", "=", fileId)
    .returning("identity").executeTakeFirst();
  if (!ended) return;
  let archiveId: string;
  try {
    [archiveId] = JSON.parse(ended.identity) as string[];
  } catch {
    return;
  }
  await tx.updateTable("files").set({ next_try_at: now })
    .where("archive_id", "=", archiveId).where("state", "in", ["waiting", "staged"])
    .where("next_try_at", ">", now).execute();
}
