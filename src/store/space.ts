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
import { noLiveDownload, stagingCart } from "./predicates.ts";
import { addToCacheTotal, waitingMessage } from "./cache.ts";
import type { Database } from "./schema.ts";
import type { SqlDialect } from "./sql_dialect.ts";
import type { FileChanges } from "./work.ts";

/** The volume's accounting at the moment a reservation was tried. */
export interface SpaceCheck {
  fits: boolean;
  /** The file is no longer this worker's: nothing was reserved, and nothing need be made room for. */
  leaseLost?: boolean;
  /**
   * What had to fit: the file alone when its cart was promised it; otherwise every file its cart
   * still needs whose size is known (the cart is admitted whole, see `reserve`).
   */
  need: number;
  /** Bytes held for others and not on disk yet: pulls in progress and other carts' promises. */
  reserved: number;
  /** What cartd's carts, pulls and promises take, for `volume_size_limit`. */
  used: number;
}

/** Reservations, downloads and removals; see the module comment. */
export class SpaceRecords {
  constructor(private readonly db: Kysely<Database>, private readonly dialect: SqlDialect) {}

  /**
   * Reserves `bytes` for a file this worker holds, if they fit in what the volume has free
   * (`freeBytes`, read inside the transaction) and, when `limit` > 0, in cartd's own cap. When
   * they fit, the file's row takes `changes` in the same transaction.
   *
   * Carts are admitted whole: a file whose cart has not promised it room is reserved only with
   * every other file the cart still needs (see `admitIn`). A promised file only needs room on the
   * disk (something besides cartd may have filled it).
   */
  async reserve(
    file: { id: number; cart_id: number },
    owner: string,
    bytes: number,
    freeBytes: () => number,
    limit: number,
    now: number,
    changes: FileChanges = {},
  ): Promise<SpaceCheck> {
    return await this.db.transaction().execute(async (tx) => {
      await this.dialect.lockReservations(tx);
      const free = freeBytes();
      const held = await heldNow(tx, now, { id: file.id, owner });
      if (!held.file) return { fits: false, leaseLost: true, need: bytes, reserved: 0, used: 0 };
      const promised = held.file.promised > 0;
      if (promised) {
        const fits = bytes <= free - held.pulls;
        if (fits) {
          await tx.updateTable("files")
            .set({ ...changes, reserved: bytes, space_wait_since: null, error: "" })
            .where("id", "=", file.id).execute();
        }
        return { fits, need: bytes, reserved: held.pulls, used: held.used };
      }
      // Another admitted cart may hold the promise for this same file (it was to pull it, and
      // this one pulls it now): that share comes over with the pull, rather than counting twice.
      const donor = await tx.selectFrom("files").innerJoin("carts", "carts.id", "files.cart_id")
        .select(["files.id", "files.cart_id", "files.promised"])
        .where("files.archive_id", "=", held.file.archiveId).where("files.promised", ">", 0)
        .where("files.cart_id", "<>", file.cart_id).where(stagingCart)
        .limit(1).executeTakeFirst();
      const covered = Math.min(Number(donor?.promised ?? 0), bytes);
      const own = { id: file.id, bytes: bytes - covered };
      const from = donor && { id: Number(donor.id), cartId: Number(donor.cart_id) };
      const check = await admitIn(tx, this.dialect, file.cart_id, own, free, limit, now, held, {
        donor: from,
        fileBytes: bytes,
      });
      if (check.fits) {
        await tx.updateTable("files")
          .set({
            ...changes,
            reserved: bytes,
            space_wait_since: null,
            error: "",
            promised: bytes,
          })
          .where("id", "=", file.id).execute();
      }
      return check;
    });
  }

  /**
   * Admits a cart that has no file to pull yet (its next file is in the cache): promises it the
   * room for every other file it still needs, if that fits, so it may take cached files. A cart
   * that took cached files before it was admitted could hold them from eviction while it waits
   * for room it never gets.
   */
  async admit(
    cartId: number,
    freeBytes: () => number,
    limit: number,
    now: number,
  ): Promise<SpaceCheck> {
    return await this.db.transaction().execute(async (tx) => {
      await this.dialect.lockReservations(tx);
      const free = freeBytes();
      const held = await heldNow(tx, now);
      return await admitIn(tx, this.dialect, cartId, undefined, free, limit, now, held);
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

  /**
   * What a cart's files need in all, as far as their sizes are known, and how many are not (sizes
   * another cart's request learnt count too, but for very large carts; see `admitIn`).
   */
  async cartNeeds(cartId: number): Promise<{ bytes: number; unknown: number }> {
    const cart = await this.db.selectFrom("carts").select("file_count").where("id", "=", cartId)
      .executeTakeFirst();
    const size = Number(cart?.file_count) > wideLookupFiles ? sql<number>`files.size` : knownSize;
    const row = await this.db.selectFrom("files")
      .select([
        sql<number>`coalesce(sum(${size}), 0)`.as("bytes"),
        sql<number>`count(*) - count(${size})`.as("unknown"),
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

/**
 * A file's size as far as it is known: a size not asked for yet may be known from another cart's
 * request of the same file (this cart's file may be waiting for that cart's pull).
 */
const knownSize = sql<number>`coalesce(files.size,
  (select max(other.size) from files other where other.archive_id = files.archive_id))`;

/** Carts of more files than this are admitted on their files' own sizes only (see `admitIn`). */
const wideLookupFiles = 10_000;

/** What space is held now, besides the verified files on the volume. */
interface Held {
  /** Pulls in progress outside any cart's promise. */
  pulls: number;
  /** What staging carts were promised and have not written yet. */
  promises: number;
  /** Verified files (each cached file once), pulls and promises: what counts against the limit. */
  used: number;
  /** The asking file's share of its cart's promise and its archive id; none when not the asker's. */
  file?: { promised: number; archiveId: string };
}

/** What is held now, in one statement; the pull of `asking` left out, and its row read. */
async function heldNow(
  tx: Kysely<Database>,
  now: number,
  asking?: { id: number; owner: string },
): Promise<Held> {
  const id = asking?.id ?? 0;
  const totals = await sql<{
    pulls: number;
    promises: number;
    stored: number;
    promised: number | null;
    archive_id: string | null;
  }>`select
      (select coalesce(sum(reserved), 0) from files
        where reserved > 0 and lease_until > ${now} and id <> ${id} and promised = 0) as pulls,
      (select coalesce(sum(promised_bytes), 0) from carts
        where promised_bytes > 0 and status = 'staging' and deleted_at is null) as promises,
      (select bytes from cache_totals where id = 1) as stored,
      (select promised from files where id = ${id} and owner = ${asking?.owner ?? ""})
        as promised,
      (select archive_id from files where id = ${id}) as archive_id`.execute(tx);
  const row = totals.rows[0];
  const [pulls, promises, stored] = [row.pulls, row.promises, row.stored].map(Number);
  return {
    pulls,
    promises,
    used: stored + pulls + promises,
    file: row.promised === null ? undefined : {
      promised: Number(row.promised),
      archiveId: row.archive_id ?? "",
    },
  };
}

/**
 * Admits the cart (with `file`, when a pull asks): the bytes of every file it still needs that no
 * promise covers must fit beside everything held, and are then promised to it
 * (`carts.promised_bytes`, each file's share in `files.promised`) until each is on the volume. So
 * carts that each fit but not together never all stage part of the way and then wait on each
 * other: the second waits until the first is done. Files it will take from the cache, or that
 * another staging cart was promised room for, need no room (each file is promised once, whoever
 * pulls it: see `reserve`); files of unknown size are admitted once it is known.
 * Promises outlive leases (another worker carries on with the cart) and end with the cart.
 */
async function admitIn(
  tx: Kysely<Database>,
  dialect: SqlDialect,
  cartId: number,
  /** The asking file and the bytes it needs beyond what another cart's promise covers. */
  file: { id: number; bytes: number } | undefined,
  free: number,
  limit: number,
  now: number,
  held: Held,
  /** Another cart's file whose promised share comes over to `file`, and `file`'s whole size. */
  transfer?: { donor?: { id: number; cartId: number }; fileBytes: number },
): Promise<SpaceCheck> {
  const cart = await tx.selectFrom("carts").select(["admitted_at", "file_count"])
    .where("id", "=", cartId).executeTakeFirst();
  const admitted = cart?.admitted_at !== null;
  // The first admission looks at every file (sizes known from other carts' requests included);
  // later ones (as sizes become known), and those of very large carts, only at files with a size
  // of their own, which an index finds without walking the cart (once per file, or at length).
  const narrow = admitted || Number(cart?.file_count) > wideLookupFiles;
  const size = narrow ? sql<number>`files.size` : knownSize;
  const needed = sql<boolean>`files.cart_id = ${cartId} and files.promised = 0
    and ${size} is not null and files.blob_id is null and files.id <> ${file?.id ?? 0}
    and files.state not in ('ready', 'error')
    and not exists (select 1 from blobs where blobs.archive_id = files.archive_id
      and blobs.key is not null)
    and not exists (select 1 from files other join carts promising on promising.id = other.cart_id
      where other.archive_id = files.archive_id and other.promised > 0
        and other.cart_id <> files.cart_id
        and promising.status = 'staging' and promising.deleted_at is null)`;
  const rest = await tx.selectFrom("files").select(
    sql<number>`coalesce(sum(${size}), 0)`.as("bytes"),
  )
    .where(needed).executeTakeFirstOrThrow();
  const need = (file?.bytes ?? 0) + Number(rest.bytes);
  const reserved = held.pulls + held.promises;
  const fits = need === 0 ||
    (need <= free - reserved && (limit <= 0 || held.used + need <= limit));
  if (!fits) return { fits, need, reserved, used: held.used };
  // Cart rows are locked before file rows, as every transaction touching both locks them. What
  // the files take is what their rows say as they are written (another transaction may have
  // changed one since they were counted), so a cart's promise stays the sum of its files' shares.
  await dialect.forUpdate(tx.selectFrom("carts").select("id").where("id", "=", cartId)).execute();
  let donorShare = 0;
  const donor = transfer?.donor;
  if (donor) {
    await dialect.forUpdate(tx.selectFrom("carts").select("id").where("id", "=", donor.cartId))
      .execute();
    const row = await dialect.forUpdate(
      tx.selectFrom("files").select("promised").where("id", "=", donor.id),
    ).executeTakeFirst();
    donorShare = Number(row?.promised ?? 0);
  }
  // (The asking file's own share is written with its reservation.)
  const promisedRest = Number(rest.bytes) > 0
    ? (await tx.updateTable("files").set({ promised: size }).where(needed).returning("promised")
      .execute()).reduce((sum, r) => sum + Number(r.promised), 0)
    : 0;
  if (donor && donorShare > 0) {
    await tx.updateTable("files").set({ promised: 0 }).where("id", "=", donor.id).execute();
    await tx.updateTable("carts")
      .set((eb) => ({ promised_bytes: eb("promised_bytes", "-", donorShare) }))
      .where("id", "=", donor.cartId).execute();
  }
  const ownShare = transfer?.fileBytes ?? file?.bytes ?? 0;
  await tx.updateTable("carts")
    .set((eb) => ({
      promised_bytes: eb("promised_bytes", "+", ownShare + promisedRest),
      admitted_at: eb.fn.coalesce("admitted_at", sql<number>`${now}`),
    }))
    .where("id", "=", cartId).execute();
  // Newly admitted, its files waiting for another cart's pull look again now: a pull whose cart
  // waits to be admitted is theirs to take over (see CacheRecords.leadPull).
  if (!admitted) {
    await tx.updateTable("files").set({ next_try_at: now })
      .where("cart_id", "=", cartId).where("state", "=", "waiting")
      .where("error", "=", waitingMessage).where("next_try_at", ">", now).execute();
  }
  // Its files that waited for space have it now (when others than the asking one were promised
  // room): they go on at once, and say so.
  if (!admitted || Number(rest.bytes) > 0) {
    await tx.updateTable("files").set({ next_try_at: now, space_wait_since: null, error: "" })
      .where("cart_id", "=", cartId).where("state", "in", ["waiting", "staged"])
      .where("space_wait_since", "is not", null).execute();
  }
  return { fits, need, reserved, used: held.used };
}
