/**
 * Garbage collection for `cartd gc` (and the original's `purge`): expired carts, carts unused for
 * too long, then least-recently-used carts until a free-space target is met; then the files of
 * every deleted cart no download holds, and cart directories no cart owns. Idempotent and safe to
 * run from cron beside `cartd serve`: carts are marked deleted in the database first, and a cart
 * being downloaded keeps its files until the download ends.
 */
import { type Config, type SpaceAmount, spaceBytes } from "../config.ts";
import type { SizedCart, Store } from "../store/store.ts";
import { removeDeletedCarts } from "./space.ts";
import type { Volume } from "./volume.ts";

/** A cart still being created after this long was left by a crash. */
export const staleDraftAge = 3_600_000;

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

export interface GcRemoval {
  uid: string;
  cartId: number;
  bytes: number;
  /** Why, in short (recorded on the cart): expired, unused or evicted. */
  cause: "expired" | "unused" | "evicted";
  /** Why, for people. */
  reason: string;
}

export interface GcReport {
  dryRun: boolean;
  removed: GcRemoval[];
  /** Cart directories on the volume that no cart owned (removed unless dry-run). */
  strayDirectories: number;
  freeBefore: number;
  freeAfter: number;
}

export async function collectGarbage(
  store: Store,
  volume: Volume,
  config: Config,
  options: GcOptions,
): Promise<GcReport> {
  const now = Date.now();
  const freeBefore = volume.availableBytes();
  const chosen = new Map<number, GcRemoval>();
  const choose = (cart: SizedCart, cause: GcRemoval["cause"], reason: string) => {
    if (!chosen.has(cart.id)) {
      chosen.set(cart.id, { uid: cart.uid, cartId: cart.id, bytes: cart.bytes, cause, reason });
    }
  };

  if (!options.skipExpired) {
    for (const cart of await store.expiredCarts(now)) {
      choose(
        cart,
        "expired",
        `expired (finished ${iso(cart.finished_at)}, lifetime ${config.cartLifetime / 1000} s)`,
      );
    }
  }
  if (options.olderThan !== undefined) {
    for (const cart of await store.sizedCarts(now, { unusedSince: now - options.olderThan })) {
      choose(cart, "unused", `unused since ${iso(cart.used_at)}`);
    }
  }
  if (options.free) {
    const target = spaceBytes(options.free, volume.totalBytes());
    let projected = freeBefore + [...chosen.values()].reduce((sum, r) => sum + r.bytes, 0);
    const candidates = await store.sizedCarts(now, {
      evictable: true,
      unusedSince: now - config.lruBufferTime,
    });
    for (const cart of candidates) {
      if (projected >= target) break;
      if (chosen.has(cart.id)) continue;
      choose(
        cart,
        "evicted",
        `least recently used (last used ${iso(cart.used_at)}), to free space`,
      );
      projected += cart.bytes;
    }
  }

  const removed = [...chosen.values()];
  if (options.dryRun) {
    const onVolume = await store.cartIdsOnVolume();
    const stray = (await volume.cartDirectories()).filter((id) => !onVolume.has(id)).length;
    const freed = removed.reduce((sum, r) => sum + r.bytes, 0);
    return {
      dryRun: true,
      removed,
      strayDirectories: stray,
      freeBefore,
      freeAfter: freeBefore + freed,
    };
  }

  // Another gc or a user may have deleted a cart meanwhile: report only what this run removed.
  const done: GcRemoval[] = [];
  for (const removal of removed) {
    if (await store.markDeleted(removal.cartId, now, removal.cause)) done.push(removal);
  }
  await removeDeletedCarts(store, volume);
  await store.deleteStaleDrafts(now - staleDraftAge);
  const onVolume = await store.cartIdsOnVolume();
  const stray = (await volume.cartDirectories()).filter((id) => !onVolume.has(id));
  for (const id of stray) await volume.removeCart(id);
  return {
    dryRun: false,
    removed: done,
    strayDirectories: stray.length,
    freeBefore,
    freeAfter: volume.availableBytes(),
  };
}

function iso(ms: number | null): string {
  return ms === null ? "never" : new Date(Number(ms)).toISOString();
}

/**
 * The original `purge --time-ago` form: `"N unit ago"` (or `after`), with a Python timedelta unit
 * (days, hours, minutes, seconds, weeks, milliseconds); returns milliseconds.
 */
export function parseTimeAgo(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s+([a-z]+)\s+(ago|after)\s*$/i.exec(text);
  if (!match) return undefined;
  const units: Record<string, number> = {
    millisecond: 1,
    second: 1000,
    minute: 60_000,
    hour: 3_600_000,
    day: 86_400_000,
    week: 604_800_000,
  };
  const factor = units[match[2].toLowerCase().replace(/s$/, "")];
  return factor === undefined ? undefined : Number(match[1]) * factor;
}
