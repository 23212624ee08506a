/**
 * The shared cache as records: each verified file is a `blobs` row, held once on the volume and
 * referred to by the files of any number of carts. A blob is referenced while a cart whose files
 * are on the volume refers to it; unreferenced blobs stay as cache until space is needed, least
 * recently used first. Space accounting counts each blob once (see space.ts).
 */
import { type ExpressionBuilder, type Kysely, sql } from "kysely";
import { pendingStates, stagingCart } from "./predicates.ts";
import type { Blob, BlobTable, Database } from "./schema.ts";
import type { SqlDialect } from "./sql_dialect.ts";

/**
 * What a new blob is: the file a pull verified (its `key` null when it could not be linked into
 * the cache folder).
 */
export type NewBlob = Pick<
  BlobTable,
  "key" | "archive_id" | "hash_type" | "hash_sum" | "verified" | "size" | "mtime" | "crc32"
>;

/**
 * Whether a cart whose files are on the volume refers to the blob, or an admitted cart still
 * staging is to take it (its room was promised without it; see SpaceRecords).
 */
export function referenced(eb: ExpressionBuilder<Database, "blobs">) {
  return eb.or([
    eb.exists(
      eb.selectFrom("files").innerJoin("carts", "carts.id", "files.cart_id")
        .select("files.id")
        .whereRef("files.blob_id", "=", "blobs.id")
        .where("carts.removed_at", "is", null),
    ),
    eb.exists(
      eb.selectFrom("files").innerJoin("carts", "carts.id", "files.cart_id")
        .select("files.id")
        .whereRef("files.archive_id", "=", "blobs.archive_id")
        .where("files.state", "in", pendingStates)
        .where("carts.admitted_at", "is not", null)
        .where(stagingCart),
    ),
  ]);
}

/** Whether the cart (one waiting to be admitted) would not take the blob: what it would take is spared where it can be. */
function notWantedBy(cartId: number | undefined) {
  return (eb: ExpressionBuilder<Database, "blobs">) =>
    cartId === undefined ? sql<boolean>`1 = 1` : eb.not(eb.exists(
      eb.selectFrom("files").select("files.id")
        .where("files.cart_id", "=", cartId)
        .whereRef("files.archive_id", "=", "blobs.archive_id")
        .where("files.state", "in", pendingStates),
    ));
}

/** Cached files: what the cache holds, and evicting from it. */
export class CacheRecords {
  constructor(private readonly db: Kysely<Database>, private readonly dialect: SqlDialect) {}

  /**
   * Cached files no cart refers to (last used before `unusedSince`; none the cart `sparing`
   * would take), least recently used first.
   */
  unreferenced(limit: number, unusedSince?: number, sparing?: number): Promise<Blob[]> {
    let query = this.db.selectFrom("blobs").selectAll()
      .where("key", "is not", null)
      .where((eb) => eb.not(referenced(eb)))
      .where(notWantedBy(sparing));
    if (unusedSince !== undefined) query = query.where("used_at", "<", unusedSince);
    return query.orderBy("used_at").orderBy("id").limit(limit).execute();
  }

  /**
   * Takes a cached file out of the records if still no cart refers to it, and has `remove` remove
   * its file in the same transaction (a cart that takes it meanwhile keeps it). Its bytes leave
   * the accounting only with the file: a pull admitted in between would otherwise find room that
   * is not free yet. When `remove` throws, nothing changes. Returns the blob it removed.
   */
  async claimEviction(
    blobId: number,
    remove: (key: string) => Promise<void>,
  ): Promise<Blob | undefined> {
    return await this.db.transaction().execute(async (tx) => {
      await this.dialect.lockReservations(tx);
      // The row is locked first, and the check made by a statement after: on PostgreSQL a cart
      // taking it (which updates the row) has then committed, and the check sees its reference.
      const row = await this.dialect.forUpdate(
        tx.selectFrom("blobs").select("id").where("id", "=", blobId),
      ).executeTakeFirst();
      if (!row) return undefined;
      const gone = await tx.deleteFrom("blobs")
        .where("id", "=", blobId)
        .where((eb) => eb.not(referenced(eb)))
        .returningAll().executeTakeFirst();
      if (!gone) return undefined;
      await addToCacheTotal(tx, -Number(gone.size));
      if (gone.key) await remove(gone.key);
      return gone;
    });
  }

  /**
   * The bytes only these carts refer to (files no other cart whose files are on the volume holds):
   * what removing all of them frees.
   */
  async exclusiveBytes(cartIds: number[]): Promise<number> {
    return (await this.exclusiveTotals(cartIds)).bytes;
  }

  /** `exclusiveBytes`, with how many files they are. */
  async exclusiveTotals(cartIds: number[]): Promise<{ files: number; bytes: number }> {
    if (cartIds.length === 0) return { files: 0, bytes: 0 };
    const ids = sql.join(cartIds.map((id) => sql`${id}`));
    const row = await sql<{ files: number | string; bytes: number | string }>`select
        count(*) as files, coalesce(sum(b.size), 0) as bytes
      from blobs b
      where b.id in (select blob_id from files where cart_id in (${ids}) and blob_id is not null)
        and not exists (select 1 from files f join carts c on c.id = f.cart_id
          where f.blob_id = b.id and f.cart_id not in (${ids}) and c.removed_at is null)`
      .execute(this.db);
    return { files: Number(row.rows[0].files), bytes: Number(row.rows[0].bytes) };
  }

  /** How many cached files no cart refers to (none the cart `sparing` would take), and their bytes. */
  async unreferencedTotals(sparing?: number): Promise<{ files: number; bytes: number }> {
    const row = await this.db.selectFrom("blobs")
      .select([
        sql<number>`count(*)`.as("files"),
        sql<number>`coalesce(sum(size), 0)`.as("bytes"),
      ])
      .where("key", "is not", null)
      .where((eb) => eb.not(referenced(eb)))
      .where(notWantedBy(sparing))
      .executeTakeFirstOrThrow();
    return { files: Number(row.files), bytes: Number(row.bytes) };
  }

  /**
   * Cached files that are the file a request names: the same archive id and, when the request
   * gives a checksum, that checksum verified; without one, every cached copy of the id (the
   * caller compares the archive's size and mtime). Most recently used first.
   */
  matches(archiveId: string, hashType: string, hashSum: string): Promise<Blob[]> {
    let query = this.db.selectFrom("blobs").selectAll()
      .where("archive_id", "=", archiveId).where("key", "is not", null);
    if (hashSum !== "") {
      query = query.where("hash_sum", "=", hashSum.toLowerCase()).where("verified", "=", 1)
        .where(sql<boolean>`lower(hash_type) = ${hashType.toLowerCase()}`);
    }
    return query.orderBy("used_at", "desc").orderBy("id", "desc").limit(5).execute();
  }

  /**
   * Files staged before the cache (their one copy still their cart's), with where that copy is:
   * for linking into the cache.
   */
  async unlinked(
    limit: number,
    afterId: number,
  ): Promise<{ id: number; cartId: number; path: string; size: number }[]> {
    const rows = await this.db.selectFrom("blobs")
      .innerJoin("files", "files.id", "blobs.origin_file_id")
      .innerJoin("carts", "carts.id", "files.cart_id")
      .select([
        "blobs.id as id",
        "files.cart_id as cartId",
        "files.path as path",
        "blobs.size as size",
      ])
      .where("blobs.key", "is", null).where("carts.removed_at", "is", null)
      .where("blobs.id", ">", afterId)
      .orderBy("blobs.id").limit(limit).execute();
    return rows.map((r) => ({
      id: Number(r.id),
      cartId: Number(r.cartId),
      path: r.path,
      size: Number(r.size),
    }));
  }

  /** Records that a blob's file is now in the cache under `key`; false if the blob went. */
  async linked(blobId: number, key: string): Promise<boolean> {
    const result = await this.db.updateTable("blobs").set({ key })
      .where("id", "=", blobId).where("key", "is", null).executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }

  /**
   * Whether `fileId` may pull its file now: yes when no other file pulls the same identity, or
   * the one that did cannot any more (it failed or finished, or its cart was deleted or settled);
   * no ("wait") while another live file pulls it. Taking the lead is recorded, so of several
   * carts asking for one file at once, one pulls and the others take it from the cache.
   */
  async leadPull(
    identity: string,
    file: { id: number; owner: string },
    now: number,
    wait: { untilMs: number; abandonedMs: number },
  ): Promise<"lead" | "wait"> {
    const fileId = file.id;
    return await this.db.transaction().execute(async (tx) => {
      const current = await this.dialect.forUpdate(
        tx.selectFrom("pulls").selectAll().where("identity", "=", identity),
      ).executeTakeFirst();
      if (current && Number(current.file_id) !== fileId) {
        const leader = await tx.selectFrom("files")
          .innerJoin("carts", "carts.id", "files.cart_id")
          .select([
            "files.state",
            "files.lease_until",
            "files.next_try_at",
            "carts.status",
            "carts.deleted_at",
            "carts.admitted_at",
            "files.cart_id",
          ])
          .where("files.id", "=", current.file_id).executeTakeFirst();
        // Abandoned: due for a while, and no one took it (a foreground `cartd bundle` stopped).
        const abandoned = leader !== undefined &&
          (leader.lease_until === null || Number(leader.lease_until) < now) &&
          Number(leader.next_try_at) < now - wait.abandonedMs;
        // A leader whose cart waits for space to be admitted (see SpaceRecords) gives way to a
        // file whose cart was: the admitted cart may be what it waits on.
        const outranked = leader !== undefined && leader.admitted_at === null &&
          await tx.selectFrom("files").select("id")
              .where("cart_id", "=", leader.cart_id).where("space_wait_since", "is not", null)
              .limit(1).executeTakeFirst() !== undefined &&
          await tx.selectFrom("files").innerJoin("carts", "carts.id", "files.cart_id")
              .select("files.id").where("files.id", "=", fileId)
              .where("carts.admitted_at", "is not", null).limit(1).executeTakeFirst() !==
            undefined;
        const pulling = leader !== undefined && leader.deleted_at === null &&
          leader.status === "staging" && leader.state !== "ready" && leader.state !== "error" &&
          !abandoned && !outranked;
        if (pulling) {
          // Handed back to wait, in this transaction: a wake-up by the pull's end (which takes
          // this row's lock) comes after, and is not overwritten.
          await tx.updateTable("files")
            .set({
              next_try_at: now + wait.untilMs,
              owner: null,
              lease_until: null,
              updated_at: now,
              error: waitingMessage,
            })
            .where("id", "=", fileId).where("owner", "=", file.owner).execute();
          return "wait";
        }
      }
      if (current) {
        await tx.updateTable("pulls").set({ file_id: fileId, created_at: now })
          .where("identity", "=", identity).execute();
        return "lead";
      }
      // Another node may insert the same identity at the same moment: one of the two leads.
      const inserted = await tx.insertInto("pulls")
        .values({ identity, file_id: fileId, created_at: now })
        .onConflict((oc) => oc.column("identity").doNothing())
        .returning("identity").executeTakeFirst();
      if (inserted) return "lead";
      // The other leads: wait for it, but look again soon (its pull may have only begun).
      await tx.updateTable("files")
        .set({
          next_try_at: now + Math.min(wait.untilMs, 1000),
          owner: null,
          lease_until: null,
          error: waitingMessage,
        })
        .where("id", "=", fileId).where("owner", "=", file.owner).execute();
      return "wait";
    });
  }

  /** Which of these cache keys a blob row names. */
  async knownKeys(keys: string[]): Promise<Set<string>> {
    if (keys.length === 0) return new Set();
    const rows = await this.db.selectFrom("blobs").select("key").where("key", "in", keys)
      .execute();
    return new Set(rows.map((r) => r.key!));
  }

  /** Every blob row: for audits and tests. */
  all(): Promise<Blob[]> {
    return this.db.selectFrom("blobs").selectAll().orderBy("id").execute();
  }
}

/** Records a verified file as a blob that `fileId` refers to, within the file's completion. */
export async function recordBlob(
  tx: Kysely<Database>,
  fileId: number,
  blob: NewBlob,
  now: number,
): Promise<number> {
  await addToCacheTotal(tx, blob.size);
  const row = await tx.insertInto("blobs").values({
    ...blob,
    hash_sum: blob.hash_sum.toLowerCase(),
    origin_file_id: fileId,
    created_at: now,
    used_at: now,
  }).returning("id").executeTakeFirstOrThrow();
  return Number(row.id);
}

/** What a file waiting for another cart's pull of it says (in its status, until it moves on). */
export const waitingMessage = "waiting for another cart's pull of this file";

/** What makes two requests' files the same file, for the one-pull rule (see `leadPull`). */
export function fileIdentity(archiveId: string, hashType: string, hashSum: string): string {
  // JSON: unambiguous whatever the id holds, and no NUL (which PostgreSQL's text refuses).
  return hashSum === ""
    ? JSON.stringify([archiveId])
    : JSON.stringify([archiveId, hashType.toLowerCase(), hashSum.toLowerCase()]);
}

/** Keeps `cache_totals` in step with the blobs added or removed in the same transaction. */
export async function addToCacheTotal(tx: Kysely<Database>, bytes: number): Promise<void> {
  if (bytes === 0) return;
  await tx.updateTable("cache_totals")
    .set((eb) => ({ bytes: eb("bytes", "+", bytes) }))
    .where("id", "=", 1).execute();
}
