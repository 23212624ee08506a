/**
 * Carts and their files as records: creating (under an invisible draft), finding the live cart of a
 * uid, deleting, settling a cart's status from its files, retrying a failed one, and the counts
 * behind status reports.
 *
 * Lock order, on both databases: a transaction that changes a cart row and its file rows takes the
 * cart row first (see also work.ts), so two such transactions can never wait on each other.
 */
import { type Kysely, sql } from "kysely";
import { CartdError } from "../errors.ts";
import { sleep } from "../time.ts";
import { liveCart, noLiveDownload, pendingStates } from "./predicates.ts";
import type { Cart, CartFile, Database, NewFile } from "./schema.ts";
import { type Receivers, recordCartEvent } from "./outbox.ts";
import type { SqlDialect } from "./sql_dialect.ts";

/** The counts behind every status report. */
export interface CartProgress {
  files: number;
  filesReady: number;
  filesError: number;
  filesPulling: number;
  filesOnTape: number;
  /** Sum of the sizes known so far (a size is known once the archive reported it). */
  bytesTotal: number;
  bytesDone: number;
  sizesKnown: number;
  /** Ready files whose request gave no checksum, so nothing could verify them. */
  filesUnverified: number;
  /** Since when the earliest of its pending files has been waiting for the archive, if any is. */
  archiveWaitSince: number | null;
  /** Since when the earliest of its pending files has been waiting for space, if any is. */
  spaceWaitSince: number | null;
}

/** A cart to create: its uid, its request's fingerprint, and its files. */
export interface CreateCartInput {
  uid: string;
  fingerprint: string;
  bundle: boolean;
  files: NewFile[];
  /** Who creates it (the token's name), when access control is on. */
  owner?: string;
  /** Whether it may replace another owner's cart of the same uid (an admin's may). */
  replacesOthers?: boolean;
}

/** What `create` did. */
export interface CreateCartResult {
  cart: Cart;
  /** False when an identical cart already existed and nothing changed. */
  created: boolean;
  /** The cart this one replaced, whose files the caller must release. */
  replaced?: Cart;
}

/** A cart with the bytes its verified files take on the volume. */
export type SizedCart = Cart & { bytes: number };

const insertBatch = 1000;

/** Carts and their files; see the module comment. */
export class CartRecords {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly dialect: SqlDialect,
    /** A ready or failed cart expires this long (ms) after it finished; 0 means never. */
    private readonly lifetime: number,
    /** Where cart events go (see outbox.ts). */
    private readonly receivers: Receivers = () => [],
  ) {}

  /** The cart a uid names now: not deleted, not expired. */
  async live(uid: string, now = Date.now()): Promise<Cart | undefined> {
    // Every status request starts here: plain SQL, without the query builder's cost.
    const found = await sql<Cart>`select * from carts
      where uid = ${uid} and ${liveCart(now, this.lifetime)}`.execute(this.db);
    return found.rows[0];
  }

  /** A cart by its id, whatever its state. */
  byId(cartId: number): Promise<Cart | undefined> {
    return this.db.selectFrom("carts").selectAll().where("id", "=", cartId).executeTakeFirst();
  }

  /**
   * Registers a cart. The same uid with the same fingerprint is left as it is; with another
   * fingerprint the old cart is marked deleted and the new one takes the uid.
   *
   * The files go in first, a batch per transaction under a draft cart row no one else sees
   * (status `creating`), so a cart of 100 000 files never holds the database for long; the uid
   * then moves to the new cart in one short transaction. A draft left by a crash is only a
   * leftover for `deleteStaleDrafts`. When another node moves the uid at the same moment, the
   * unique index refuses one of the two, which then looks again.
   */
  async create(input: CreateCartInput, now: number): Promise<CreateCartResult> {
    const existing = await this.live(input.uid, now);
    if (existing?.fingerprint === input.fingerprint) return { cart: existing, created: false };

    const draft = await this.createDraft(input, now);
    for (let attempt = 1;; attempt++) {
      try {
        const result = await this.takeUid(input, draft.id, now);
        if (!result.created) await this.deleteDraft(draft.id);
        return result;
      } catch (err) {
        if (!this.dialect.isUniqueViolation(err) || attempt >= 5) {
          // Only while it is still a draft: a commit cut off may have made it the live cart.
          await this.deleteDraft(draft.id).catch(() => {});
          throw err;
        }
      }
    }
  }

  /** The second half of `create`: the uid moves to the draft, retiring the cart that had it. */
  private takeUid(input: CreateCartInput, draftId: number, now: number) {
    return this.db.transaction().execute(async (tx): Promise<CreateCartResult> => {
      const current = await this.dialect.forUpdate(
        tx.selectFrom("carts").selectAll()
          .where("uid", "=", input.uid).where("deleted_at", "is", null)
          .where("status", "!=", "creating"),
      ).executeTakeFirst();
      const live = current !== undefined && (await tx.selectFrom("carts").select("id")
            .where("id", "=", current.id).where(liveCart(now, this.lifetime))
            .executeTakeFirst()) !== undefined;
      // Checked here, under the lock, as well as before: a cart of another owner that took the
      // uid meanwhile is not replaced.
      if (
        current && live && input.owner !== undefined && !input.replacesOthers &&
        current.owner !== null && current.owner !== input.owner
      ) {
        throw new CartdError("conflict", `uid ${input.uid} is taken by another user's cart`);
      }
      // Someone created the same cart meanwhile: theirs stands.
      if (current && live && current.fingerprint === input.fingerprint) {
        return { cart: current, created: false };
      }
      if (current) {
        await tx.updateTable("carts")
          .set({ deleted_at: now, delete_reason: live ? "replaced" : "expired" })
          .where("id", "=", current.id).execute();
      }
      const empty = input.files.length === 0;
      const cart = await tx.updateTable("carts").set({
        status: empty ? "ready" : "staging",
        ready_at: empty ? now : null,
        finished_at: empty ? now : null,
      }).where("id", "=", draftId).returningAll().executeTakeFirstOrThrow();
      if (empty) await recordCartEvent(tx, this.receivers, cart.id, now);
      return { cart, created: true, replaced: current };
    });
  }

  /**
   * The first half of `create`: a draft row (status `creating`, seen by no one) with all the
   * request's files, inserted a batch at a time. A crash from here on leaves only the draft.
   */
  async createDraft(input: CreateCartInput, now: number): Promise<{ id: number }> {
    const draft = await this.db.insertInto("carts").values({
      uid: input.uid,
      fingerprint: input.fingerprint,
      bundle: input.bundle ? 1 : 0,
      status: "creating",
      message: "",
      file_count: input.files.length,
      owner: input.owner ?? null,
      created_at: now,
      used_at: now,
      ready_at: null,
      deleted_at: null,
      finished_at: null,
      removed_at: null,
      delete_reason: null,
      bytes: 0,
      claimed_at: 0,
      promised_bytes: 0,
      admitted_at: null,
    }).returning("id").executeTakeFirstOrThrow();
    try {
      await insertFiles(this.db, Number(draft.id), input.files, now);
    } catch (err) {
      await this.deleteDraft(Number(draft.id)).catch(() => {});
      throw err;
    }
    return { id: Number(draft.id) };
  }

  /** Removes a draft, and only a draft. */
  private async deleteDraft(id: number): Promise<void> {
    await this.db.deleteFrom("carts").where("id", "=", id).where("status", "=", "creating")
      .execute();
  }

  /** Removes drafts of carts whose creation stopped (a crash) before `before`. */
  async deleteStaleDrafts(before: number): Promise<number> {
    const result = await this.db.deleteFrom("carts")
      .where("status", "=", "creating").where("created_at", "<", before).executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  /** Marks the live cart of `uid` deleted; returns it, or undefined when there was none. */
  async delete(uid: string, now: number, cartId?: number): Promise<Cart | undefined> {
    let query = this.db.updateTable("carts").set({ deleted_at: now, delete_reason: "deleted" })
      .where("uid", "=", uid).where(liveCart(now, this.lifetime));
    // Only that cart, if it is still the live one (not one that took the uid since).
    if (cartId !== undefined) query = query.where("id", "=", cartId);
    return await query.returningAll().executeTakeFirst();
  }

  /** Marks one cart deleted (expired, unused, ...); false when it already was. */
  async markDeleted(cartId: number, now: number, reason: string): Promise<boolean> {
    const result = await this.db.updateTable("carts")
      .set({ deleted_at: now, delete_reason: reason })
      .where("id", "=", cartId).where("deleted_at", "is", null).executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }

  /**
   * Evicts a cart to make room, if it still may be: finished (ready or failed), unused since
   * `unusedSince`, and no download of it running (on any node). The cart row is locked while that
   * is checked, as `startDownload` locks it before registering a download, so the two cannot pass
   * each other. False when it was not evicted.
   */
  evict(cartId: number, now: number, unusedSince: number): Promise<boolean> {
    return this.db.transaction().execute(async (tx) => {
      const locked = await this.dialect.forUpdate(
        tx.selectFrom("carts").select("id").where("id", "=", cartId)
          .where("deleted_at", "is", null),
      ).executeTakeFirst();
      if (!locked) return false;
      const result = await tx.updateTable("carts")
        .set({ deleted_at: now, delete_reason: "evicted" })
        .where("id", "=", cartId).where("deleted_at", "is", null)
        .where("status", "in", ["ready", "error"]).where("used_at", "<", unusedSince)
        .where(noLiveDownload(now)).executeTakeFirst();
      return result.numUpdatedRows > 0n;
    });
  }

  /** Ids of every cart whose files may be on the volume (not yet removed). */
  async idsOnVolume(): Promise<Set<number>> {
    const rows = await this.db.selectFrom("carts").select("id").where("removed_at", "is", null)
      .execute();
    return new Set(rows.map((r) => Number(r.id)));
  }

  /**
   * Live carts with their size on the volume, least recently used first. `evictable` keeps only
   * those eviction may take: finished (ready or failed), not being downloaded, and unused since
   * `unusedSince`.
   */
  async sized(
    now: number,
    filter: { evictable?: boolean; unusedSince?: number; excludeCart?: number } = {},
  ): Promise<SizedCart[]> {
    let query = this.db.selectFrom("carts").selectAll("carts")
      .where(liveCart(now, this.lifetime))
      .orderBy("used_at").orderBy("id");
    if (filter.unusedSince !== undefined) query = query.where("used_at", "<", filter.unusedSince);
    if (filter.excludeCart !== undefined) query = query.where("id", "!=", filter.excludeCart);
    if (filter.evictable) {
      query = query.where("status", "in", ["ready", "error"]).where(noLiveDownload(now));
    }
    const rows = await query.execute();
    return rows.map((r) => ({ ...r, bytes: Number(r.bytes) }));
  }

  /** Carts that are not deleted but whose lifetime has run out. */
  async expired(now: number): Promise<SizedCart[]> {
    if (this.lifetime <= 0) return [];
    const rows = await this.db.selectFrom("carts").selectAll("carts")
      .where("deleted_at", "is", null).where("status", "!=", "creating")
      .where("finished_at", "<=", now - this.lifetime)
      .orderBy("finished_at").execute();
    return rows.map((r) => ({ ...r, bytes: Number(r.bytes) }));
  }

  /** A cart's files, in request order. */
  files(cartId: number): Promise<CartFile[]> {
    return this.db.selectFrom("files").selectAll().where("cart_id", "=", cartId)
      .orderBy("seq").execute();
  }

  /** The cart's file at `path`, if it has one. */
  fileAt(cartId: number, path: string): Promise<CartFile | undefined> {
    return this.db.selectFrom("files").selectAll().where("cart_id", "=", cartId)
      .where("path", "=", path).executeTakeFirst();
  }

  /** What a cart's tar needs of each file: its path, size and the archive's mtime (and its id). */
  tarMembers(cartId: number): Promise<Pick<CartFile, "id" | "path" | "size" | "mtime">[]> {
    return this.db.selectFrom("files").select(["id", "path", "size", "mtime"])
      .where("cart_id", "=", cartId).execute();
  }

  /** How many of a cart's files have no size or mtime yet. */
  async unsized(cartId: number): Promise<number> {
    const row = await this.db.selectFrom("files").select(sql<number>`count(*)`.as("n"))
      .where("cart_id", "=", cartId)
      .where((eb) => eb.or([eb("size", "is", null), eb("mtime", "is", null)]))
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  /** A file by its id. */
  fileById(id: number): Promise<CartFile | undefined> {
    return this.db.selectFrom("files").selectAll().where("id", "=", id).executeTakeFirst();
  }

  /**
   * Asks workers to take this file of the cart first: the cart's turn comes next, and the file,
   * when its next step (a stage or a pull) is waiting, is due now.
   */
  async favour(cartId: number, fileId: number): Promise<void> {
    await this.db.updateTable("carts").set({ claimed_at: 0 }).where("id", "=", cartId).execute();
    await this.db.updateTable("files").set({ next_try_at: 0 })
      .where("id", "=", fileId).where("state", "in", ["waiting", "staged"])
      .where("space_wait_since", "is", null).execute();
  }

  /** What a cart's zip needs of each file: a tar's needs, and its CRC-32 when known. */
  zipMembers(
    cartId: number,
  ): Promise<Pick<CartFile, "id" | "path" | "size" | "mtime" | "crc32">[]> {
    return this.db.selectFrom("files").select(["id", "path", "size", "mtime", "crc32"])
      .where("cart_id", "=", cartId).execute();
  }

  /** Keeps the CRC-32s of verified files read after their pull, with their cached copies'. */
  async keepCrc32s(files: { id: number; crc32: number }[]): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      for (const { id, crc32 } of files) {
        await tx.updateTable("files").set({ crc32 }).where("id", "=", id).execute();
        await tx.updateTable("blobs").set({ crc32 })
          .where("id", "=", (eb) => eb.selectFrom("files").select("blob_id").where("id", "=", id))
          .where("crc32", "is", null).execute();
      }
    });
  }

  /** Records a use of the cart (for least-recently-used eviction). */
  async touch(cartId: number, now: number): Promise<void> {
    await this.db.updateTable("carts").set({ used_at: now }).where("id", "=", cartId).execute();
  }

  /** The counts of a cart's files by state, sizes and waits: one grouped query. */
  async progress(cartId: number): Promise<CartProgress> {
    const rows = await this.db.selectFrom("files")
      .select((eb) => [
        "state",
        eb.fn.countAll<number>().as("count"),
        eb.fn.count<number>("size").as("sized"),
        eb.fn.sum<number>("size").as("size"),
        eb.fn.sum<number>("bytes_pulled").as("pulled"),
        eb.fn.sum<number>(eb.case().when("verified", "=", 0).then(1).else(0).end())
          .as("unverified"),
        eb.fn.min<number | null>("outage_since").as("outage"),
        eb.fn.min<number | null>("space_wait_since").as("spaceWait"),
      ])
      .where("cart_id", "=", cartId).groupBy("state").execute();
    const p: CartProgress = {
      files: 0,
      filesReady: 0,
      filesError: 0,
      filesPulling: 0,
      filesOnTape: 0,
      bytesTotal: 0,
      bytesDone: 0,
      sizesKnown: 0,
      filesUnverified: 0,
      archiveWaitSince: null,
      spaceWaitSince: null,
    };
    for (const row of rows) {
      const count = Number(row.count);
      p.files += count;
      p.sizesKnown += Number(row.sized);
      p.bytesTotal += Number(row.size ?? 0);
      if (row.state === "ready") {
        p.filesReady += count;
        p.bytesDone += Number(row.size ?? 0);
        p.filesUnverified += Number(row.unverified ?? 0);
      }
      if (row.state === "pulling") {
        p.filesPulling += count;
        p.bytesDone += Number(row.pulled ?? 0);
      }
      if (row.state === "staging") p.filesOnTape += count;
      if (row.state === "error") p.filesError += count;
      if (pendingStates.includes(row.state)) {
        p.archiveWaitSince = earliest(p.archiveWaitSince, row.outage);
        p.spaceWaitSince = earliest(p.spaceWaitSince, row.spaceWait);
      }
    }
    return p;
  }

  /**
   * Why the cart's file that has waited longest (for the archive, or for space) waits: its last
   * failure.
   */
  async waitReason(
    cartId: number,
    waitingFor: "outage_since" | "space_wait_since",
  ): Promise<string | undefined> {
    const row = await this.db.selectFrom("files").select("error")
      .where("cart_id", "=", cartId).where("state", "in", pendingStates)
      .where(waitingFor, "is not", null)
      .orderBy(waitingFor).limit(1).executeTakeFirst();
    return row?.error;
  }

  /**
   * Brings a staging cart's status in line with its files: the first failed file puts it in
   * error, and it is ready once every file is. Returns the cart as it now stands. Safe to run
   * from any number of workers at once: only a cart still staging changes.
   */
  settle(cartId: number, now: number): Promise<Cart | undefined> {
    return this.db.transaction().execute((tx) => settleWithin(tx, cartId, now, this.receivers));
  }

  /**
   * Settles every staging cart whose files say it is done (all ready, or one failed) but which
   * was never settled: its worker died, or lost the database, between the two. Returns how many.
   */
  async settleStuck(now: number): Promise<number> {
    const stuck = await this.db.selectFrom("carts").select("id")
      .where("status", "=", "staging").where("deleted_at", "is", null)
      .where(({ or, not, exists, selectFrom }) =>
        or([
          not(exists(
            selectFrom("files").select("files.id").whereRef("files.cart_id", "=", "carts.id")
              .where("files.state", "in", pendingStates),
          )),
          exists(
            selectFrom("files").select("files.id").whereRef("files.cart_id", "=", "carts.id")
              .where("files.state", "=", "error"),
          ),
        ])
      ).execute();
    for (const { id } of stuck) await this.settle(Number(id), now);
    return stuck.length;
  }

  /**
   * Starts a failed cart again: its failed files go back to the start of the pipeline (verified
   * files stay as they are), and the cart is staging once more. Returns how many files restart,
   * or undefined when the cart is not in error (someone else retried it first).
   */
  async retry(cartId: number, now: number): Promise<number | undefined> {
    return await this.db.transaction().execute(async (tx) => {
      const cart = await tx.updateTable("carts").set({
        status: "staging",
        message: "",
        finished_at: null,
        ready_at: null,
        used_at: now,
        // It is admitted afresh, for what it needs now (see SpaceRecords).
        promised_bytes: 0,
        admitted_at: null,
      }).where("id", "=", cartId).where("status", "=", "error").where("deleted_at", "is", null)
        .returning("id").executeTakeFirst();
      if (!cart) return undefined;
      const result = await tx.updateTable("files").set({
        state: "waiting",
        error: "",
        attempts: 0,
        polls: 0,
        failures: 0,
        bytes_pulled: 0,
        next_try_at: 0,
        stage_requested_at: null,
        space_wait_since: null,
        outage_since: null,
        updated_at: now,
        promised: 0,
      }).where("cart_id", "=", cartId).where("state", "=", "error").executeTakeFirst();
      // Files still under way keep their place; what they last waited for is old news.
      await tx.updateTable("files")
        .set({ outage_since: null, space_wait_since: null, error: "", promised: 0 })
        .where("cart_id", "=", cartId).where("state", "in", pendingStates).execute();
      return Number(result.numUpdatedRows);
    });
  }

  /** Every cart row, deleted ones and drafts included, in creation order: for audits and tests. */
  all(): Promise<Cart[]> {
    return this.db.selectFrom("carts").selectAll().orderBy("id").execute();
  }
}

/**
 * `CartRecords.settle` within a transaction that may already hold the cart row (a file's last
 * step settles its cart in the same transaction, so no crash can come between the two).
 */
export async function settleWithin(
  tx: Kysely<Database>,
  cartId: number,
  now: number,
  receivers: Receivers,
): Promise<Cart | undefined> {
  const cart = await tx.selectFrom("carts").selectAll().where("id", "=", cartId)
    .executeTakeFirst();
  if (!cart || cart.status !== "staging") return cart;
  // Whether a file failed is a seek on the (cart_id, state) index; which failed first (by the
  // request's order) is looked up only when one did, once per cart.
  const anyFailure = await tx.selectFrom("files").select("id")
    .where("cart_id", "=", cartId).where("state", "=", "error").limit(1).executeTakeFirst();
  const failed = anyFailure && await tx.selectFrom("files").select(["path", "error"])
    .where("cart_id", "=", cartId).where("state", "=", "error")
    .orderBy("seq").limit(1).executeTakeFirst();
  let settled: Partial<Cart>;
  if (failed) {
    settled = {
      status: "error",
      message: `Failed to pull file(${failed.path}: ${failed.error})`,
      used_at: now,
      finished_at: now,
    };
  } else {
    // An IN list over the (cart_id, state) index: a few seeks, not a walk over the cart.
    const unfinished = await tx.selectFrom("files").select("id")
      .where("cart_id", "=", cartId).where("state", "in", pendingStates)
      .limit(1).executeTakeFirst();
    if (unfinished) return cart;
    settled = { status: "ready", ready_at: now, used_at: now, finished_at: now };
  }
  // A deleted (or replaced) cart keeps its status: its files' last steps do not revive it.
  const changed = await tx.updateTable("carts").set(settled)
    .where("id", "=", cartId).where("status", "=", "staging").where("deleted_at", "is", null)
    .returningAll().executeTakeFirst();
  if (changed) await recordCartEvent(tx, receivers, cartId, now);
  // Another worker settled it a moment before: its word stands.
  return changed ?? await tx.selectFrom("carts").selectAll().where("id", "=", cartId)
    .executeTakeFirst();
}

/**
 * Makes a staging cart ready if none of its files is left to do (or failed), in one statement
 * over the (cart_id, state) index: what a file's completion needs, where `settleWithin` would
 * also look for a failure (a failure settles its cart when it happens).
 */
export async function readyIfDone(
  tx: Kysely<Database>,
  cartId: number,
  now: number,
  receivers: Receivers,
): Promise<boolean> {
  const result = await tx.updateTable("carts")
    .set({ status: "ready", ready_at: now, used_at: now, finished_at: now })
    .where("id", "=", cartId).where("status", "=", "staging").where("deleted_at", "is", null)
    .where(({ not, exists, selectFrom }) =>
      not(exists(
        selectFrom("files").select("files.id").where("files.cart_id", "=", cartId)
          .where("files.state", "in", [...pendingStates, "error"]),
      ))
    ).executeTakeFirst();
  const ready = result.numUpdatedRows > 0n;
  if (ready) await recordCartEvent(tx, receivers, cartId, now);
  return ready;
}

/** The earlier of a time and a value read from the database (either may be missing). */
function earliest(known: number | null, value: number | string | null): number | null {
  if (value === null) return known;
  return known === null ? Number(value) : Math.min(known, Number(value));
}

async function insertFiles(
  db: Kysely<Database>,
  cartId: number,
  files: NewFile[],
  now: number,
): Promise<void> {
  for (let i = 0; i < files.length; i += insertBatch) {
    const rows = files.slice(i, i + insertBatch).map((f) => ({
      ...f,
      cart_id: cartId,
      state: "waiting" as const,
      size: null,
      mtime: null,
      bytes_pulled: 0,
      attempts: 0,
      polls: 0,
      failures: 0,
      error: "",
      verified: 0,
      owner: null,
      lease_until: null,
      next_try_at: 0,
      stage_requested_at: null,
      updated_at: now,
      reserved: 0,
      space_wait_since: null,
      outage_since: null,
      blob_id: null,
      from_cache: 0,
      promised: 0,
      crc32: null,
    }));
    await db.insertInto("files").values(rows).execute();
    // node:sqlite is synchronous: let other requests in between batches.
    if (i + insertBatch < files.length) await sleep(0);
  }
}
