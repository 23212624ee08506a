/**
 * The only code that writes SQL. Carts and their files are rows; work is claimed by leasing file
 * rows, so any number of workers, in one process or many, share it without a broker, and a killed
 * worker's files are picked up again once its lease runs out.
 */
import { type ExpressionBuilder, Kysely, type RawBuilder, sql } from "kysely";
import { Migrator } from "kysely/migration";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { CartdError, configError } from "../errors.ts";
import { parseDatabaseUrl } from "./database_url.ts";
import { type Dialect, migrationProvider } from "./migrations.ts";
import type { Cart, CartFile, Database, FileState, FileTable, NewFile } from "./schema.ts";
import { sleep } from "../time.ts";
import { sqliteDialect } from "./sqlite.ts";

export type { Cart, CartFile, FileState };

/** States a worker still has something to do for. */
const pendingStates: FileState[] = ["waiting", "staging", "staged", "pulling"];

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
}

/** What `createCart` did. */
export interface CreateCartResult {
  cart: Cart;
  /** False when an identical cart already existed and nothing changed. */
  created: boolean;
  /** The cart this one replaced, whose files the caller must release. */
  replaced?: Cart;
}

const insertBatch = 1000;

/** Options that shape what counts as a live cart. */
export interface StoreOptions {
  /** A ready or failed cart expires this long (ms) after it finished; 0 means never. */
  cartLifetime?: number;
  /** How long (ms) to wait for a database another process has locked. */
  busyTimeout?: number;
}

/** A cart with the bytes its verified files take on the volume. */
export type SizedCart = Cart & { bytes: number };

/** The volume's accounting at the moment a reservation was tried. */
export interface SpaceCheck {
  fits: boolean;
  /** Bytes held by other pulls in progress and not yet on disk. */
  reserved: number;
  /** What cartd's carts and reservations take, for `volume_size_limit`. */
  used: number;
}

/** The database: carts, files, leases, reservations and downloads, behind typed methods. */
export class Store {
  private constructor(
    private readonly db: Kysely<Database>,
    readonly dialect: Dialect,
    private readonly cartLifetime: number,
  ) {}

  /** Opens the database a URL names, creating a SQLite file (and its folder) when needed. */
  static open(url: string, options: StoreOptions = {}): Store {
    const target = parseDatabaseUrl(url);
    if (target.kind === "postgres") {
      throw configError("PostgreSQL is not supported by this build yet; use a SQLite database");
    }
    try {
      mkdirSync(dirname(target.file), { recursive: true });
    } catch (err) {
      throw configError(`cannot create the database folder for ${target.file}: ${err}`);
    }
    const db = new Kysely<Database>({
      dialect: sqliteDialect(target.file, options.busyTimeout ?? 30_000),
    });
    return new Store(db, "sqlite", options.cartLifetime ?? 0);
  }

  private migrator() {
    return new Migrator({ db: this.db, provider: migrationProvider(this.dialect) });
  }

  /** Applies every migration not yet applied; returns their names. */
  async migrate(): Promise<string[]> {
    const { error, results } = await this.migrator().migrateToLatest();
    if (error) {
      if (error instanceof CartdError) throw error;
      throw new CartdError("failure", `database migration failed: ${error}`);
    }
    return (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
  }

  /** Names of migrations not yet applied. */
  async pendingMigrations(): Promise<string[]> {
    const all = await this.migrator().getMigrations();
    return all.filter((m) => m.executedAt === undefined).map((m) => m.name);
  }

  /** Every cart row, deleted ones and drafts included, in creation order: for audits and tests. */
  allCarts(): Promise<Cart[]> {
    return this.db.selectFrom("carts").selectAll().orderBy("id").execute();
  }

  /** Every file row of every cart: for audits and tests. */
  allFiles(): Promise<CartFile[]> {
    return this.db.selectFrom("files").selectAll().orderBy("id").execute();
  }

  /** Answers when the database does; throws when it cannot be reached. */
  async ping(): Promise<void> {
    await this.db.selectFrom("carts").select("id").limit(1).execute();
  }

  close(): Promise<void> {
    return this.db.destroy();
  }

  // ---- carts ----------------------------------------------------------------------------------

  /** Not deleted and not expired. */
  private isLive(now: number) {
    return (eb: ExpressionBuilder<Database, "carts">) => {
      const notDeleted = eb.and([
        eb("carts.deleted_at", "is", null),
        eb("carts.status", "!=", "creating"),
      ]);
      if (this.cartLifetime <= 0) return notDeleted;
      return eb.and([
        notDeleted,
        eb.or([
          eb("carts.finished_at", "is", null),
          eb("carts.finished_at", ">", now - this.cartLifetime),
        ]),
      ]);
    };
  }

  /** The cart a uid names now: not deleted, not expired. */
  liveCart(uid: string, now = Date.now()): Promise<Cart | undefined> {
    return this.db.selectFrom("carts").selectAll()
      .where("uid", "=", uid).where(this.isLive(now))
      .executeTakeFirst();
  }

  /**
   * Registers a cart. The same uid with the same fingerprint is left as it is; with another
   * fingerprint the old cart is marked deleted and the new one takes the uid.
   *
   * The files go in first, a batch per transaction under a draft cart row no one else sees
   * (status `creating`), so a cart of 100 000 files never holds the database for long; the uid
   * then moves to the new cart in one short transaction. A draft left by a crash is only a
   * leftover for `deleteStaleDrafts`.
   */
  async createCart(input: CreateCartInput, now: number): Promise<CreateCartResult> {
    const existing = await this.liveCart(input.uid, now);
    if (existing?.fingerprint === input.fingerprint) return { cart: existing, created: false };

    const draft = await this.createDraft(input, now);

    const result = await this.db.transaction().execute(async (tx) => {
      const current = await tx.selectFrom("carts").selectAll()
        .where("uid", "=", input.uid).where("deleted_at", "is", null)
        .where("status", "!=", "creating").executeTakeFirst();
      const live = current !== undefined && (await tx.selectFrom("carts").select("id")
            .where("id", "=", current.id).where(this.isLive(now)).executeTakeFirst()) !== undefined;
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
      }).where("id", "=", draft.id).returningAll().executeTakeFirstOrThrow();
      return { cart, created: true, replaced: current };
    });
    if (!result.created) await this.db.deleteFrom("carts").where("id", "=", draft.id).execute();
    return result;
  }

  /**
   * The first half of `createCart`: a draft row (status `creating`, seen by no one) with all the
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
      created_at: now,
      used_at: now,
      ready_at: null,
      deleted_at: null,
      finished_at: null,
      removed_at: null,
      delete_reason: null,
      bytes: 0,
      claimed_at: 0,
    }).returning("id").executeTakeFirstOrThrow();
    try {
      await insertFiles(this.db, draft.id, input.files, now);
    } catch (err) {
      await this.db.deleteFrom("carts").where("id", "=", draft.id).execute().catch(() => {});
      throw err;
    }
    return { id: Number(draft.id) };
  }

  /**
   * Starts a failed cart again: its failed files go back to the start of the pipeline (verified
   * files stay as they are), and the cart is staging once more. Returns how many files restart,
   * or undefined when the cart is not in error (someone else retried it first).
   */
  async retryCart(cartId: number, now: number): Promise<number | undefined> {
    return await this.db.transaction().execute(async (tx) => {
      const cart = await tx.updateTable("carts").set({
        status: "staging",
        message: "",
        finished_at: null,
        ready_at: null,
        used_at: now,
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
      }).where("cart_id", "=", cartId).where("state", "=", "error").executeTakeFirst();
      // Files still under way keep their place; what they last waited for is old news.
      await tx.updateTable("files").set({ outage_since: null, space_wait_since: null, error: "" })
        .where("cart_id", "=", cartId).where("state", "in", pendingStates).execute();
      return Number(result.numUpdatedRows);
    });
  }

  /** Removes drafts of carts whose creation stopped (a crash) before `before`. */
  async deleteStaleDrafts(before: number): Promise<number> {
    const result = await this.db.deleteFrom("carts")
      .where("status", "=", "creating").where("created_at", "<", before).executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  /** Marks the live cart of `uid` deleted; returns it, or undefined when there was none. */
  async deleteCart(uid: string, now: number): Promise<Cart | undefined> {
    return await this.db.updateTable("carts").set({ deleted_at: now, delete_reason: "deleted" })
      .where("uid", "=", uid).where(this.isLive(now))
      .returningAll().executeTakeFirst();
  }

  /** Marks one cart deleted (evicted, expired, ...); false when it already was. */
  async markDeleted(cartId: number, now: number, reason: string): Promise<boolean> {
    const result = await this.db.updateTable("carts").set({
      deleted_at: now,
      delete_reason: reason,
    })
      .where("id", "=", cartId).where("deleted_at", "is", null).executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }

  /** Deleted carts whose files are still on the volume and that no download holds. */
  removableCarts(now: number): Promise<Cart[]> {
    return this.db.selectFrom("carts").selectAll()
      .where("deleted_at", "is not", null).where("removed_at", "is", null)
      .where(({ not, exists, selectFrom }) =>
        not(exists(
          selectFrom("downloads").select("downloads.id")
            .whereRef("downloads.cart_id", "=", "carts.id")
            .where("downloads.lease_until", ">", now),
        ))
      )
      .execute();
  }

  async markRemoved(cartId: number, now: number): Promise<void> {
    await this.db.updateTable("carts").set({ removed_at: now }).where("id", "=", cartId).execute();
  }

  /** Ids of every cart whose files may be on the volume (not yet removed). */
  async cartIdsOnVolume(): Promise<Set<number>> {
    const rows = await this.db.selectFrom("carts").select("id").where("removed_at", "is", null)
      .execute();
    return new Set(rows.map((r) => Number(r.id)));
  }

  /**
   * Live carts with their size on the volume, least recently used first. `evictable` keeps only
   * those eviction may take: finished (ready or failed), not being downloaded, and unused since
   * `unusedSince`.
   */
  async sizedCarts(
    now: number,
    filter: { evictable?: boolean; unusedSince?: number; excludeCart?: number } = {},
  ): Promise<SizedCart[]> {
    let query = this.db.selectFrom("carts").selectAll("carts")
      .where(this.isLive(now))
      .orderBy("used_at").orderBy("id");
    if (filter.unusedSince !== undefined) query = query.where("used_at", "<", filter.unusedSince);
    if (filter.excludeCart !== undefined) query = query.where("id", "!=", filter.excludeCart);
    if (filter.evictable) {
      query = query.where("status", "in", ["ready", "error"])
        .where(({ not, exists, selectFrom }) =>
          not(exists(
            selectFrom("downloads").select("downloads.id")
              .whereRef("downloads.cart_id", "=", "carts.id")
              .where("downloads.lease_until", ">", now),
          ))
        );
    }
    const rows = await query.execute();
    return rows.map((r) => ({ ...r, bytes: Number(r.bytes) }));
  }

  /** Carts that are not deleted but whose lifetime has run out. */
  async expiredCarts(now: number): Promise<SizedCart[]> {
    if (this.cartLifetime <= 0) return [];
    const rows = await this.db.selectFrom("carts").selectAll("carts")
      .where("deleted_at", "is", null).where("status", "!=", "creating")
      .where("finished_at", "<=", now - this.cartLifetime)
      .orderBy("finished_at").execute();
    return rows.map((r) => ({ ...r, bytes: Number(r.bytes) }));
  }

  cartFiles(cartId: number): Promise<CartFile[]> {
    return this.db.selectFrom("files").selectAll().where("cart_id", "=", cartId)
      .orderBy("seq").execute();
  }

  async touchCart(cartId: number, now: number): Promise<void> {
    await this.db.updateTable("carts").set({ used_at: now }).where("id", "=", cartId).execute();
  }

  async cartById(cartId: number): Promise<Cart | undefined> {
    return await this.db.selectFrom("carts").selectAll().where("id", "=", cartId)
      .executeTakeFirst();
  }

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
   * error, and it is ready once every file is. Returns the cart as it now stands.
   */
  async settleCart(cartId: number, now: number): Promise<Cart | undefined> {
    return await this.db.transaction().execute(async (tx) => {
      const cart = await tx.selectFrom("carts").selectAll().where("id", "=", cartId)
        .executeTakeFirst();
      if (!cart || cart.status !== "staging") return cart;
      const failed = await tx.selectFrom("files").select(["path", "error"])
        .where("cart_id", "=", cartId).where("state", "=", "error")
        .orderBy("seq").limit(1).executeTakeFirst();
      if (failed) {
        return await tx.updateTable("carts").set({
          status: "error",
          message: `Failed to pull file(${failed.path}: ${failed.error})`,
          used_at: now,
          finished_at: now,
        }).where("id", "=", cartId).returningAll().executeTakeFirst();
      }
      // An IN list over the (cart_id, state) index: a few seeks, not a walk over the cart.
      const unfinished = await tx.selectFrom("files").select("id")
        .where("cart_id", "=", cartId).where("state", "in", pendingStates)
        .limit(1).executeTakeFirst();
      if (unfinished) return cart;
      return await tx.updateTable("carts")
        .set({ status: "ready", ready_at: now, used_at: now, finished_at: now })
        .where("id", "=", cartId).returningAll().executeTakeFirst();
    });
  }

  // ---- work -----------------------------------------------------------------------------------

  /**
   * Leases a file that is due: of a live cart still staging, not leased (or its lease ran out),
   * and past its `next_try_at`. Carts take turns (the one whose work was taken longest ago goes
   * first), so a small cart is not stuck behind a large one. Limited to one cart when `cartId`
   * is given. Pulls under way are taken over before new stage requests start.
   */
  async claimFile(
    owner: string,
    now: number,
    leaseMs: number,
    cartId?: number,
  ): Promise<CartFile | undefined> {
    return await this.db.transaction().execute(async (tx) => {
      const target = cartId ?? await this.cartWithDueWork(tx, now);
      if (target === undefined) return undefined;
      let query = tx.selectFrom("files").select("id")
        .where("cart_id", "=", target)
        .where("state", "in", pendingStates)
        .where("next_try_at", "<=", now)
        .where((eb) => eb.or([eb("lease_until", "is", null), eb("lease_until", "<", now)]))
        .where("cart_id", "in", (eb) =>
          eb.selectFrom("carts").select("id")
            .where("status", "=", "staging").where("deleted_at", "is", null))
        .limit(1);
      if (this.dialect === "postgres") query = query.forUpdate().skipLocked();
      const due = await query.executeTakeFirst();
      if (!due) return undefined;
      if (cartId === undefined) {
        await tx.updateTable("carts").set({ claimed_at: now }).where("id", "=", target).execute();
      }
      return await tx.updateTable("files")
        .set({ owner, lease_until: now + leaseMs, updated_at: now })
        .where("id", "=", due.id).returningAll().executeTakeFirst();
    });
  }

  /** The staging cart with a due, unleased file whose turn it is, if any. */
  private async cartWithDueWork(tx: Kysely<Database>, now: number): Promise<number | undefined> {
    const cart = await tx.selectFrom("carts").select("id")
      .where("status", "=", "staging").where("deleted_at", "is", null)
      .where(({ exists, selectFrom }) =>
        exists(
          selectFrom("files").select("files.id")
            .whereRef("files.cart_id", "=", "carts.id")
            .where("files.state", "in", pendingStates)
            .where("files.next_try_at", "<=", now)
            .where((eb) =>
              eb.or([eb("files.lease_until", "is", null), eb("files.lease_until", "<", now)])
            ),
        )
      )
      .orderBy("claimed_at").orderBy("id").limit(1).executeTakeFirst();
    return cart === undefined ? undefined : Number(cart.id);
  }

  /** Extends a lease; false when the file is no longer ours or its cart is gone. */
  async renewLease(fileId: number, owner: string, until: number): Promise<boolean> {
    const result = await this.db.updateTable("files").set({ lease_until: until })
      .where("id", "=", fileId).where("owner", "=", owner)
      .where("cart_id", "in", (eb) =>
        eb.selectFrom("carts").select("id")
          .where("status", "=", "staging").where("deleted_at", "is", null))
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }

  /**
   * Records a step's outcome on a file this worker holds, and hands the lease back when
   * `release` is set. False when the lease was lost meanwhile (the change is then not made).
   */
  async saveFile(
    fileId: number,
    owner: string,
    changes: Partial<Omit<FileTable, "id" | "cart_id">>,
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
   * Records a verified file (with `changes`) and adds its bytes to its cart's total, in one
   * transaction; releases the lease. False when the lease was lost meanwhile.
   */
  async completeFile(
    file: { id: number; cart_id: number },
    owner: string,
    changes: Partial<Omit<FileTable, "id" | "cart_id">> & { size: number },
    now: number,
  ): Promise<boolean> {
    return await this.db.transaction().execute(async (tx) => {
      const result = await tx.updateTable("files")
        .set({
          ...changes,
          state: "ready",
          updated_at: now,
          owner: null,
          lease_until: null,
          reserved: 0,
        })
        .where("id", "=", file.id).where("owner", "=", owner).where("state", "!=", "ready")
        .executeTakeFirst();
      if (result.numUpdatedRows === 0n) return false;
      await tx.updateTable("carts").set((eb) => ({ bytes: eb("bytes", "+", changes.size) }))
        .where("id", "=", file.cart_id).execute();
      return true;
    });
  }

  /** Hands back every lease `owner` holds (on shutdown), so others need not wait them out. */
  async releaseLeases(owner: string): Promise<void> {
    await this.db.updateTable("files").set({ owner: null, lease_until: null, reserved: 0 })
      .where("owner", "=", owner).execute();
    await this.db.deleteFrom("downloads").where("owner", "=", owner).execute();
  }

  /** Frees the leases of owners `isDead` says are gone; returns how many files were freed. */
  async reapLeases(isDead: (owner: string) => boolean): Promise<number> {
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

  // ---- space ----------------------------------------------------------------------------------

  /**
   * Reserves `bytes` for a file this worker holds, if they fit: in what the volume has free
   * (`freeBytes`, read inside the transaction) less what other pulls hold and have not written yet,
   * and, when `limit` > 0, in cartd's own cap. Reservations of every process count, and one
   * expires with its file's lease, so a crashed worker's space comes back.
   */
  async reserveSpace(
    fileId: number,
    owner: string,
    bytes: number,
    freeBytes: () => number,
    limit: number,
    now: number,
  ): Promise<SpaceCheck> {
    return await this.db.transaction().execute(async (tx) => {
      if (this.dialect === "postgres") {
        await sql`select pg_advisory_xact_lock(7347001)`.execute(tx);
      }
      const held = await tx.selectFrom("files")
        .select((eb) => [
          eb.fn.coalesce(eb.fn.sum<number>("reserved"), eb.lit(0)).as("reserved"),
          eb.fn.coalesce(
            eb.fn.sum<number>(
              this.larger(sql`reserved - bytes_pulled`, sql`0`) as RawBuilder<number>,
            ),
            eb.lit(0),
          )
            .as("unwritten"),
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

  /** Registers a download of a cart, so its files stay while it runs. */
  async startDownload(cartId: number, owner: string, until: number): Promise<number> {
    const row = await this.db.insertInto("downloads")
      .values({ cart_id: cartId, owner, lease_until: until })
      .returning("id").executeTakeFirstOrThrow();
    return Number(row.id);
  }

  async renewDownload(id: number, until: number): Promise<void> {
    await this.db.updateTable("downloads").set({ lease_until: until }).where("id", "=", id)
      .execute();
  }

  async endDownload(id: number): Promise<void> {
    await this.db.deleteFrom("downloads").where("id", "=", id).execute();
  }

  /** The earliest time a pending file of the cart may be claimed, or undefined if none is left. */
  async nextDue(cartId: number): Promise<number | undefined> {
    const due = this.larger(sql.ref("next_try_at"), sql`coalesce(lease_until, 0)`);
    const row = await this.db.selectFrom("files")
      .select(sql<number | null>`min(${due})`.as("due"))
      .where("cart_id", "=", cartId).where("state", "in", pendingStates)
      .executeTakeFirst();
    return row?.due === null || row?.due === undefined ? undefined : Number(row.due);
  }

  /** The larger of two values, in this database's words. */
  private larger(a: RawBuilder<unknown> | ReturnType<typeof sql.ref>, b: RawBuilder<unknown>) {
    return this.dialect === "postgres" ? sql`greatest(${a}, ${b})` : sql`max(${a}, ${b})`;
  }
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
    }));
    await db.insertInto("files").values(rows).execute();
    // node:sqlite is synchronous: let other requests in between batches.
    if (i + insertBatch < files.length) await sleep(0);
  }
}
