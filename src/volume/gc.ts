/**
 * Garbage collection for `cartd gc` (and the original's `purge`): expired carts, carts unused for
 * too long, then least-recently-used carts until a free-space target is met; then the files of
 * every deleted cart no download holds, and cart directories no cart owns. Idempotent and safe to
 * run from cron beside `cartd serve`: carts are marked deleted in the database first, and a cart
 * being downloaded keeps its files until the download ends.
 */
import { type Config, type SpaceAmount, spaceBytes } from "../config.ts";
import type { SizedCart, Store } from "../store/store.ts";
import { evictCachedFiles, removeDeletedCarts } from "./space.ts";
import { isoTime } from "../time.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";
import type { Volume } from "./volume.ts";

/**
 * Cart folders on the volume whose cart is gone (or never was). The folders are listed before the
 * carts are read, so a cart created meanwhile, on any node, is never taken for a stray.
 */
async function strayFolders(store: Store, volume: Volume): Promise<number[]> {
  const folders = await volume.cartDirectories();
  const onVolume = await store.carts.idsOnVolume();
  return folders.filter((id) => !onVolume.has(id));
}

/** Removes the stray cart folders (what a crash between a removal's claim and its work left). */
export async function removeStrayFolders(store: Store, volume: Volume): Promise<number[]> {
  const stray = await strayFolders(store, volume);
  for (const id of stray) await volume.removeCart(id);
  return stray;
}

/** A cart still being created after this long was left by a crash. */
export const staleDraftAge = 3_600_000;

/** What `cartd gc` is asked to remove. */
export interface GcOptions {
  /** Report what would be removed, remove nothing. */
  dryRun?: boolean;
  /** Remove carts not used for this long (ms). */
  olderThan?: number;
  /** Evict least-recently-used carts until this much of the volume is free. */
  free?: SpaceAmount;
  /** Leave expired carts alone (the original's `purge` only looks at age). */
  skipExpired?: boolean;
}

/** One cart `cartd gc` removed (or, dry, would remove), and why. */
export interface GcRemoval {
  uid: string;
  cartId: number;
  bytes: number;
  /** Why, in short (recorded on the cart): expired, unused or evicted. */
  cause: "expired" | "unused" | "evicted";
  /** Why, for people. */
  reason: string;
}

/** What a `cartd gc` run did, for its text and JSON output. */
export interface GcReport {
  dryRun: boolean;
  removed: GcRemoval[];
  /** Cart directories on the volume that no cart owned (removed unless dry-run). */
  strayDirectories: number;
  /** Cached files no cart referred to that were removed (dry-run: what may be, at most). */
  cache: { files: number; bytes: number };
  freeBefore: number;
  freeAfter: number;
}

/**
 * One `cartd gc` run: chooses carts by expiry, age and least-recent use as `options` say, marks
 * them deleted, then removes the files of deleted carts no download holds and stray folders.
 */
export async function collectGarbage(
  store: Store,
  volume: Volume,
  config: Config,
  options: GcOptions,
): Promise<GcReport> {
  const now = Date.now();
  const freeBefore = volume.availableBytes();
  // Cached files no cart refers to go before any cart (for --free), and when unused for
  // --older-than or cache_lifetime.
  const cached = await store.cache.unreferencedTotals();
  const cacheUnusedSince = Math.max(
    options.olderThan === undefined ? -Infinity : now - options.olderThan,
    config.cacheLifetime > 0 ? now - config.cacheLifetime : -Infinity,
  );
  const chosen = new Map<number, GcRemoval>();
  const choose = (cart: SizedCart, cause: GcRemoval["cause"], reason: string) => {
    if (!chosen.has(cart.id)) {
      chosen.set(cart.id, { uid: cart.uid, cartId: cart.id, bytes: cart.bytes, cause, reason });
    }
  };

  if (!options.skipExpired) {
    for (const cart of await store.carts.expired(now)) {
      choose(
        cart,
        "expired",
        `expired (finished ${isoTime(cart.finished_at) ?? "never"}, lifetime ${
          config.cartLifetime / 1000
        } s)`,
      );
    }
  }
  if (options.olderThan !== undefined) {
    for (const cart of await store.carts.sized(now, { unusedSince: now - options.olderThan })) {
      choose(cart, "unused", `unused since ${isoTime(cart.used_at) ?? "never"}`);
    }
  }
  if (options.free) {
    const target = spaceBytes(options.free, volume.totalBytes());
    // Carts free only what no cart left refers to: counted over all those chosen so far.
    const freeNow = freeBefore + cached.bytes;
    let projected = freeNow + await store.cache.exclusiveBytes([...chosen.keys()]);
    const candidates = await store.carts.sized(now, {
      evictable: true,
      unusedSince: now - config.lruBufferTime,
    });
    for (const cart of candidates) {
      if (projected >= target) break;
      if (chosen.has(cart.id)) continue;
      choose(
        cart,
        "evicted",
        `least recently used (last used ${isoTime(cart.used_at) ?? "never"}), to free space`,
      );
      projected = freeNow + await store.cache.exclusiveBytes([...chosen.keys()]);
    }
    // Spared when the others chosen make the target without it (it shares what it holds).
    for (const id of [...chosen.keys()].reverse()) {
      if (chosen.get(id)!.cause !== "evicted") continue;
      const rest = [...chosen.keys()].filter((other) => other !== id);
      if (freeNow + await store.cache.exclusiveBytes(rest) >= target) chosen.delete(id);
    }
  }

  const removed = [...chosen.values()];
  if (options.dryRun) {
    const stray = (await strayFolders(store, volume)).length;
    // What removing them frees: the files no cart left holds, which join the cache and go with
    // it when it goes.
    const theirs = await store.cache.exclusiveTotals(removed.map((r) => r.cartId));
    const cacheGoes = options.free || cacheUnusedSince > -Infinity;
    return {
      dryRun: true,
      removed,
      strayDirectories: stray,
      cache: cacheGoes
        ? { files: cached.files + theirs.files, bytes: cached.bytes + theirs.bytes }
        : { files: 0, bytes: 0 },
      freeBefore,
      freeAfter: freeBefore + theirs.bytes + (cacheGoes ? cached.bytes : 0),
    };
  }

  const cache = { files: 0, bytes: 0 };
  const evictCache = async (wanted: { bytes?: number; unusedSince?: number }) => {
    const freed = await evictCachedFiles(store, volume, wanted);
    cache.files += freed.files;
    cache.bytes += freed.bytes;
  };
  const target = options.free ? spaceBytes(options.free, volume.totalBytes()) : 0;
  const shortOfTarget = () => Math.max(0, target - volume.availableBytes());
  if (cacheUnusedSince > -Infinity) await evictCache({ unusedSince: cacheUnusedSince });
  if (shortOfTarget() > 0) await evictCache({ bytes: shortOfTarget() });

  // Another gc or a user may have deleted a cart meanwhile: report only what this run removed.
  const done: GcRemoval[] = [];
  for (const removal of removed) {
    // An eviction only takes a cart still evictable (no download on any node, not used since).
    const removed = removal.cause === "evicted"
      ? await store.carts.evict(removal.cartId, now, now - config.lruBufferTime)
      : await store.carts.markDeleted(removal.cartId, now, removal.cause);
    if (removed) {
      done.push(removal);
      metrics.gcRemovals.inc({ reason: removal.cause });
      log.info(`cart ${removal.uid} removed by gc: ${removal.reason} (${removal.bytes} bytes)`, {
        uid: removal.uid,
        bytes: removal.bytes,
      });
    }
  }
  await removeDeletedCarts(store, volume);
  // What the removed carts alone referred to is cache now: it goes as the others did.
  if (cacheUnusedSince > -Infinity) await evictCache({ unusedSince: cacheUnusedSince });
  if (shortOfTarget() > 0) await evictCache({ bytes: shortOfTarget() });
  if (cache.files > 0) {
    log.info(`gc removed ${cache.files} cached file(s) no cart referred to (${cache.bytes} bytes)`);
    metrics.gcRemovals.inc({ reason: "cache" }, cache.files);
  }
  await store.carts.deleteStaleDrafts(now - staleDraftAge);
  const stray = await removeStrayFolders(store, volume);
  return {
    dryRun: false,
    removed: done,
    strayDirectories: stray.length,
    cache,
    freeBefore,
    freeAfter: volume.availableBytes(),
  };
}
