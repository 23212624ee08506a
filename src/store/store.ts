/**
 * The only code that writes SQL. Carts and their files are rows; work is claimed by leasing file
 * rows, so any number of workers, in one process or many, share it without a broker, and a killed
 * worker's files are picked up again once its lease runs out.
 */
import { Kysely, type Transaction } from "kysely";
import { Migrator } from "kysely/migration";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { CartdError, configError, ExitCode } from "../errors.ts";
import { parseDatabaseUrl } from "./database_url.ts";
import { type Dialect, migrationProvider } from "./migrations.ts";
import type { Cart, CartFile, Database, FileState, FileTable, NewFile } from "./schema.ts";
import { sqliteDialect } from "./sqlite.ts";

export type { Cart, CartFile, FileState };

/** States a worker still has something to do for. */
export const pendingStates: FileState[] = ["waiting", "staging", "staged", "pulling"];

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
}

export interface CreateCartInput {
  uid: string;
  fingerprint: string;
  bundle: boolean;
  files: NewFile[];
}

export interface CreateCartResult {
  cart: Cart;
  /** False when an identical cart already existed and nothing changed. */
  created: boolean;
  /** The cart this one replaced, whose files the caller must release. */
  replaced?: Cart;
}

const insertBatch = 1000;

export class Store {
  private constructor(readonly db: Kysely<Database>, readonly dialect: Dialect) {}

  /** Opens the database a URL names, creating a SQLite file (and its folder) when needed. */
  static open(url: string): Store {
    const target = parseDatabaseUrl(url);
    if (target.kind === "postgres") {
      throw configError("PostgreSQL is not supported by this build yet; use a SQLite database");
    }
    try {
      mkdirSync(dirname(target.file), { recursive: true });
    } catch (err) {
      throw configError(`cannot create the database folder for ${target.file}: ${err}`);
    }
    const db = new Kysely<Database>({ dialect: sqliteDialect(target.file) });
    return new Store(db, "sqlite");
  }

  private migrator() {
    return new Migrator({ db: this.db, provider: migrationProvider(this.dialect) });
  }

  /** Applies every migration not yet applied; returns their names. */
  async migrate(): Promise<string[]> {
    const { error, results } = await this.migrator().migrateToLatest();
    if (error) {
      throw new CartdError(`database migration failed: ${error}`, 500, ExitCode.failure);
    }
    return (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
  }

  /** Names of migrations not yet applied. */
  async pendingMigrations(): Promise<string[]> {
    const all = await this.migrator().getMigrations();
    return all.filter((m) => m.executedAt === undefined).map((m) => m.name);
  }

  async ping(): Promise<void> {
    await this.db.selectFrom("carts").select("id").limit(1).execute();
  }

  close(): Promise<void> {
    return this.db.destroy();
  }

  // ---- carts ----------------------------------------------------------------------------------

  liveCart(uid: string): Promise<Cart | undefined> {
    return this.db.selectFrom("carts").selectAll()
      .where("uid", "=", uid).where("deleted_at", "is", null)
      .executeTakeFirst();
  }

  /**
   * Registers a cart. The same uid with the same fingerprint is left as it is; with another
   * fingerprint the old cart is marked deleted and the new one takes the uid.
   */
  async createCart(input: CreateCartInput, now: number): Promise<CreateCartResult> {
    return await this.db.transaction().execute(async (tx) => {
      const existing = await tx.selectFrom("carts").selectAll()
        .where("uid", "=", input.uid).where("deleted_at", "is", null)
        .executeTakeFirst();
      if (existing && existing.fingerprint === input.fingerprint) {
        return { cart: existing, created: false };
      }
      if (existing) {
        await tx.updateTable("carts").set({ deleted_at: now }).where("id", "=", existing.id)
          .execute();
      }
      const empty = input.files.length === 0;
      const cart = await tx.insertInto("carts").values({
        uid: input.uid,
        fingerprint: input.fingerprint,
        bundle: input.bundle ? 1 : 0,
        status: empty ? "ready" : "staging",
        message: "",
        file_count: input.files.length,
        created_at: now,
        used_at: now,
        ready_at: empty ? now : null,
        deleted_at: null,
      }).returningAll().executeTakeFirstOrThrow();
      await insertFiles(tx, cart.id, input.files, now);
      return { cart, created: true, replaced: existing };
    });
  }

  /** Marks the live cart of `uid` deleted; returns it, or undefined when there was none. */
  async deleteCart(uid: string, now: number): Promise<Cart | undefined> {
    return await this.db.updateTable("carts").set({ deleted_at: now })
      .where("uid", "=", uid).where("deleted_at", "is", null)
      .returningAll().executeTakeFirst();
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
    };
    for (const row of rows) {
      const count = Number(row.count);
      p.files += count;
      p.sizesKnown += Number(row.sized);
      p.bytesTotal += Number(row.size ?? 0);
      if (row.state === "ready") {
        p.filesReady += count;
        p.bytesDone += Number(row.size ?? 0);
      }
      if (row.state === "pulling") {
        p.filesPulling += count;
        p.bytesDone += Number(row.pulled ?? 0);
      }
      if (row.state === "staging") p.filesOnTape += count;
      if (row.state === "error") p.filesError += count;
    }
    return p;
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
        }).where("id", "=", cartId).returningAll().executeTakeFirst();
      }
      const unfinished = await tx.selectFrom("files").select("id")
        .where("cart_id", "=", cartId).where("state", "!=", "ready")
        .limit(1).executeTakeFirst();
      if (unfinished) return cart;
      return await tx.updateTable("carts").set({ status: "ready", ready_at: now, used_at: now })
        .where("id", "=", cartId).returningAll().executeTakeFirst();
    });
  }

  // ---- work -----------------------------------------------------------------------------------

  /**
   * Leases the next file that is due: of a live cart still staging, not leased (or its lease ran
   * out), and past its `next_try_at`. Limited to one cart when `cartId` is given.
   */
  async claimFile(
    owner: string,
    now: number,
    leaseMs: number,
    cartId?: number,
  ): Promise<CartFile | undefined> {
    return await this.db.transaction().execute(async (tx) => {
      let query = tx.selectFrom("files").select("id")
        .where("state", "in", pendingStates)
        .where("next_try_at", "<=", now)
        .where((eb) => eb.or([eb("lease_until", "is", null), eb("lease_until", "<", now)]))
        .where("cart_id", "in", (eb) =>
          eb.selectFrom("carts").select("id")
            .where("status", "=", "staging").where("deleted_at", "is", null))
        .orderBy("next_try_at").orderBy("id").limit(1);
      if (cartId !== undefined) query = query.where("cart_id", "=", cartId);
      if (this.dialect === "postgres") query = query.forUpdate().skipLocked();
      const due = await query.executeTakeFirst();
      if (!due) return undefined;
      return await tx.updateTable("files")
        .set({ owner, lease_until: now + leaseMs, updated_at: now })
        .where("id", "=", due.id).returningAll().executeTakeFirst();
    });
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
        ...(release ? { owner: null, lease_until: null } : {}),
      })
      .where("id", "=", fileId).where("owner", "=", owner)
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }

  /** Hands back every lease `owner` holds (on shutdown), so others need not wait them out. */
  async releaseLeases(owner: string): Promise<void> {
    await this.db.updateTable("files").set({ owner: null, lease_until: null })
      .where("owner", "=", owner).execute();
  }

  /** Frees the leases of owners `isDead` says are gone; returns how many files were freed. */
  async reapLeases(isDead: (owner: string) => boolean): Promise<number> {
    const owners = await this.db.selectFrom("files").select("owner").distinct()
      .where("owner", "is not", null).execute();
    let freed = 0;
    for (const { owner } of owners) {
      if (owner === null || !isDead(owner)) continue;
      const result = await this.db.updateTable("files").set({ owner: null, lease_until: null })
        .where("owner", "=", owner).executeTakeFirst();
      freed += Number(result.numUpdatedRows);
    }
    return freed;
  }

  /** The earliest time a pending file of the cart may be claimed, or undefined if none is left. */
  async nextDue(cartId: number): Promise<number | undefined> {
    const files = await this.db.selectFrom("files").select(["next_try_at", "lease_until"])
      .where("cart_id", "=", cartId).where("state", "in", pendingStates).execute();
    if (files.length === 0) return undefined;
    return Math.min(
      ...files.map((f) => Math.max(Number(f.next_try_at), Number(f.lease_until ?? 0))),
    );
  }
}

async function insertFiles(
  tx: Transaction<Database>,
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
    }));
    await tx.insertInto("files").values(rows).execute();
  }
}
