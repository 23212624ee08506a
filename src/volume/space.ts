/**
 * Space on the volume: every pull reserves its file's size first, against the file system's free
 * space (less `volume_reserve`) and cartd's own cap (`volume_size_limit`), counting what pulls in
 * every process hold and each cached file once. When a reservation does not fit and `lru_purge`
 * is on, cached files no cart refers to are evicted first, then least-recently-used carts, never
 * one that is being staged or downloaded or was used within `lru_buffer_time`.
 */
import type { Config } from "../config.ts";
import { describe } from "../errors.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";
import type { CartFile, SizedCart, Store } from "../store/store.ts";
import type { SpaceCheck } from "../store/space.ts";
import type { FileChanges } from "../store/work.ts";
import { formatBytes } from "../units.ts";
import type { Volume } from "./volume.ts";

/**
 * The outcome of a reservation: the space is held, or not yet (`message` says why), or `never`:
 * the file is larger than the volume could hold for cartd even with every cart gone.
 */
export type Reservation = { ok: true } | { ok: false; never: boolean; message: string };

/** Reservations of space for pulls, and the evictions that make room for them. */
export class SpaceManager {
  constructor(
    private readonly store: Store,
    private readonly volume: Volume,
    private readonly config: Config,
  ) {}

  /**
   * Reserves the size of a file this worker holds (admitting its cart, when it was not; see
   * SpaceRecords). When it does not fit, room is made (see `withRoom`). The file's row takes
   * `changes` with the reservation.
   */
  reserve(file: CartFile, owner: string, changes: FileChanges = {}): Promise<Reservation> {
    const bytes = Number(file.size);
    return this.withRoom(
      file,
      bytes,
      (free, now) =>
        this.store.space.reserve(
          file,
          owner,
          bytes,
          free,
          this.config.volumeSizeLimit,
          now,
          changes,
        ),
    );
  }

  /**
   * Admits the cart of a file about to be taken from the cache: promises room for every other
   * file it still needs, making room as a reservation does.
   */
  admit(file: CartFile): Promise<Reservation> {
    return this.withRoom(
      file,
      0,
      (free, now) => this.store.space.admit(file.cart_id, free, this.config.volumeSizeLimit, now),
    );
  }

  /**
   * Tries `attempt`; when it does not fit and `lru_purge` is on, least-recently-used carts are
   * evicted (cached files no cart refers to always go first), but only when evicting them makes
   * it fit. A file (of `bytes`) or cart that could never fit fails at once.
   */
  private async withRoom(
    file: CartFile,
    bytes: number,
    attempt: (free: () => number, now: number) => Promise<SpaceCheck>,
  ): Promise<Reservation> {
    const limit = this.config.volumeSizeLimit;
    const free = () => this.volume.availableBytes(this.config.volumeReserve);
    // One round of eviction per reservation: space freed but taken by another pull meanwhile
    // (on any node) is not chased down the least-recently-used list.
    for (let round = 0;; round++) {
      const now = Date.now();
      const check = await attempt(free, now);
      if (check.fits) return { ok: true };
      if (check.leaseLost) return { ok: false, never: false, message: "the file's claim was lost" };
      const available = free();
      // With every cart and pull gone, cartd could use what is free now plus what they hold.
      const ceiling = available + check.used;
      if (bytes > ceiling || (limit > 0 && bytes > limit)) {
        const most = limit > 0 && limit < ceiling
          ? `its volume_size_limit is ${formatBytes(limit)}`
          : `the volume holds at most ${formatBytes(Math.max(ceiling, 0))} for cartd ` +
            `(${formatBytes(Math.max(available, 0))} free after its reserve, ` +
            `${formatBytes(check.used)} used by carts)`;
        return {
          ok: false,
          never: true,
          message: `Not enough space to download file: it needs ${formatBytes(bytes)}, and ${most}`,
        };
      }
      // The whole cart must fit too: one that never can fails now, and one whose sizes are not
      // all known yet evicts nothing (it may turn out never to fit).
      const cart = await this.store.space.cartNeeds(file.cart_id);
      if (cart.bytes > ceiling || (limit > 0 && cart.bytes > limit)) {
        const most = limit > 0 && limit < ceiling
          ? `its volume_size_limit is ${formatBytes(limit)}`
          : `the volume holds at most ${formatBytes(Math.max(ceiling, 0))} for cartd`;
        return {
          ok: false,
          never: true,
          message: `Not enough space to download file: its cart needs at least ${
            formatBytes(cart.bytes)
          } in all, and ${most}`,
        };
      }
      // What must fit is the file, or (when its cart is admitted with it) all the cart needs.
      const shortfall = Math.max(
        check.need - (available - check.reserved),
        limit > 0 ? check.used + check.need - limit : 0,
      );
      // Until its sizes are known a cart evicts nothing, unless its files have waited half of
      // space_wait (say, while a tape recall of the rest takes long).
      const waited = now - Number(file.space_wait_since ?? now);
      const mayEvict = cart.unknown === 0 || waited >= this.config.spaceWait / 2;
      // Cached files no cart refers to always make room; carts only under lru_purge, and only for
      // a cart that may evict (above).
      const evicted = round === 0 &&
        await this.evict(file.cart_id, shortfall, now, this.config.lruPurge && mayEvict);
      if (!evicted) {
        const parts = [
          bytes === 0
            ? `its cart needs ${formatBytes(check.need)} more`
            : check.need > bytes
            ? `needs ${formatBytes(bytes)}, its cart ${formatBytes(check.need)} in all`
            : `needs ${formatBytes(bytes)}`,
          `${formatBytes(Math.max(available, 0))} free on the volume after its reserve, ` +
          `${formatBytes(check.reserved)} of it held for pulls in progress and other carts`,
        ];
        if (limit > 0) {
          parts.push(
            `cartd uses ${formatBytes(check.used)} of its ${formatBytes(limit)} limit, ` +
              "what is held included",
          );
        }
        return {
          ok: false,
          never: false,
          message: `Not enough space to download file (${parts.join("; ")})`,
        };
      }
    }
  }

  /**
   * Makes `shortfall` bytes free: cached files no cart refers to go first (least recently used
   * first), then (when `cartsToo`) least-recently-used evictable carts (never `forCart`), and with
   * them the cached files only they referred to. Evicts nothing, and returns false, when all of it together would
   * not free enough.
   */
  private async evict(
    forCart: number,
    shortfall: number,
    now: number,
    cartsToo: boolean,
  ): Promise<boolean> {
    // What the cart itself would take from the cache is spared.
    const cached = await this.store.cache.unreferencedTotals(forCart);
    const candidates = cartsToo
      ? await this.store.carts.sized(now, {
        evictable: true,
        unusedSince: now - this.config.lruBufferTime,
        excludeCart: forCart,
      })
      : [];
    // Evicting carts frees what only they refer to (files they share with carts that stay, stay):
    // least recently used first, as many as it takes, and none unless together they make room.
    const exclusive = (carts: SizedCart[]) =>
      this.store.cache.exclusiveBytes(carts.map((c) => c.id));
    // The least recently used few thousand at most: evicting more for one file is never wise.
    const considered = candidates.slice(0, 2000);
    if (cached.bytes + await exclusive(considered) < shortfall) return false;
    let victims: SizedCart[] = [];
    let planned = cached.bytes;
    for (const cart of considered) {
      if (planned >= shortfall) break;
      victims.push(cart);
      planned = cached.bytes + await exclusive(victims);
    }
    if (planned < shortfall) return false;
    // A cart the others can do without is spared (one sharing all it holds with a cart that
    // stays frees nothing): newest first.
    for (let i = victims.length - 1; i >= 0 && victims.length > 1; i--) {
      const rest = victims.filter((_, j) => j !== i);
      if (cached.bytes + await exclusive(rest) >= shortfall) victims = rest;
    }
    const fromCache = await evictCachedFiles(this.store, this.volume, {
      bytes: shortfall,
      sparing: forCart,
    });
    if (fromCache.files > 0) {
      log.info(
        `evicted ${fromCache.files} cached file(s) no cart referred to (${
          formatBytes(fromCache.bytes)
        }) to make room`,
      );
      metrics.evictions.inc({ reason: "cache" }, fromCache.files);
    }
    let freed = fromCache.bytes;
    if (freed >= shortfall) return true;
    let evicted = 0;
    for (const victim of victims) {
      // Still evictable: not retried, used or downloaded (on any node) since it was listed.
      if (await this.store.carts.evict(victim.id, now, now - this.config.lruBufferTime)) {
        log.info(
          `cart ${victim.uid} evicted (${formatBytes(victim.bytes)}, least recently used) to ` +
            "make room",
          { uid: victim.uid, bytes: victim.bytes },
        );
        metrics.evictions.inc({ reason: "space" });
        evicted++;
      }
    }
    if (evicted > 0) {
      // Their folders go, and the cached files only they referred to (every other unreferenced
      // file went above).
      await removeDeletedCarts(this.store, this.volume);
      freed += (await evictCachedFiles(this.store, this.volume, {
        bytes: shortfall - freed,
        sparing: forCart,
      })).bytes;
    }
    return freed > 0;
  }
}

/**
 * Removes cached files no cart refers to, least recently used first, until `bytes` are freed (or
 * all of them, without); none the cart `sparing` would take. Each leaves the records and the
 * volume together (a cart that takes it meanwhile keeps it). Safe from any process on
 * any node.
 */
export async function evictCachedFiles(
  store: Store,
  volume: Volume,
  wanted: { bytes?: number; unusedSince?: number; sparing?: number } = {},
): Promise<{ files: number; bytes: number }> {
  const freed = { files: 0, bytes: 0 };
  while (wanted.bytes === undefined || freed.bytes < wanted.bytes) {
    const batch = await store.cache.unreferenced(100, wanted.unusedSince, wanted.sparing);
    const before = freed.files;
    for (const blob of batch) {
      if (wanted.bytes !== undefined && freed.bytes >= wanted.bytes) break;
      const claimed = await store.cache.claimEviction(
        Number(blob.id),
        (key) => volume.removeCached(key),
      ).catch((err) => {
        log.warn(`cached file ${blob.archive_id}: cannot remove it: ${describe(err)}`);
        return undefined;
      });
      if (!claimed?.key) continue;
      freed.files++;
      freed.bytes += Number(claimed.size);
    }
    // Nothing left, or nothing this round could take (others took them meanwhile).
    if (freed.files === before) break;
  }
  return freed;
}

/**
 * Removes from the volume the files of deleted carts that no download holds any more, and returns
 * their ids. Safe to run from any process on any node at any time: each removal is claimed in the
 * database first (so no download can start on it), then done; a crash between leaves only a
 * folder no cart owns, which gc removes.
 */
export async function removeDeletedCarts(store: Store, volume: Volume): Promise<number[]> {
  const removed: number[] = [];
  for (const { id, uid } of await store.space.removable(Date.now())) {
    if (!(await store.space.claimRemoval(id, Date.now()))) continue;
    removed.push(id);
    // The cart is gone for everyone already; a folder that resists is left to housekeeping's
    // sweep of folders no cart owns, rather than failing the deletion that asked for it.
    await volume.removeCart(id).catch((err) =>
      log.warn(`cart ${uid}: its folder is left for later: ${describe(err)}`, { uid })
    );
  }
  return removed;
}

/**
 * Links files staged before the shared cache existed into it, so later carts can take them (a
 * hard link each, no copy). Returns how many joined. Safe beside other processes: a blob whose
 * cart was removed meanwhile keeps no key, and its stray link is removed.
 */
export async function linkEarlierFiles(store: Store, volume: Volume): Promise<number> {
  let joined = 0;
  for (let after = 0;;) {
    const batch = await store.cache.unlinked(200, after);
    if (batch.length === 0) return joined;
    for (const blob of batch) {
      after = blob.id;
      // Checked as a pull's file is (where it should be, a regular file of its size, no symlink
      // on the way) before other carts may take it.
      const key = await volume.addToCache(volume.filePath(blob.cartId, blob.path), blob.size);
      if (!key) continue;
      if (await store.cache.linked(blob.id, key)) joined++;
      else await volume.removeCached(key).catch(() => {});
    }
  }
}

/**
 * Removes files in the cache folder that no record names and that were linked more than an hour
 * ago: what a crash between a link and its commit left (a link made a moment ago may be about to
 * be recorded). Returns how many went.
 */
export async function sweepCacheFolder(store: Store, volume: Volume, now: number): Promise<number> {
  const old = (await volume.cacheEntries()).filter((e) => e.changed < now - 3_600_000);
  let removed = 0;
  for (let i = 0; i < old.length; i += 500) {
    const keys = old.slice(i, i + 500).map((e) => e.key);
    const known = await store.cache.knownKeys(keys);
    for (const key of keys) {
      if (known.has(key)) continue;
      await volume.removeCached(key).catch(() => {});
      removed++;
    }
  }
  return removed;
}
