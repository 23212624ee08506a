/**
 * Space on the volume: every pull reserves its file's size first, against the file system's free
 * space (less `volume_reserve`) and cartd's own cap (`volume_size_limit`), counting what pulls in
 * every process hold. When a reservation does not fit and `lru_purge` is on, least-recently-used
 * carts are evicted, never one that is being staged or downloaded or was used within
 * `lru_buffer_time`.
 */
import type { Config } from "../config.ts";
import { log } from "../log.ts";
import type { CartFile, Store } from "../store/store.ts";
import { formatBytes } from "../units.ts";
import type { Volume } from "./volume.ts";

export type Reservation = { ok: true } | { ok: false; message: string };

export class SpaceManager {
  constructor(
    private readonly store: Store,
    private readonly volume: Volume,
    private readonly config: Config,
  ) {}

  /** Reserves the size of a file this worker holds, evicting carts when allowed and needed. */
  async reserve(file: CartFile, owner: string): Promise<Reservation> {
    const bytes = Number(file.size);
    const limit = this.config.volumeSizeLimit;
    const free = () => this.volume.availableBytes(this.config.volumeReserve);
    while (true) {
      const now = Date.now();
      const check = await this.store.reserveSpace(file.id, owner, bytes, free, limit, now);
      if (check.fits) return { ok: true };
      if (!this.config.lruPurge || !(await this.evictOne(file.cart_id, now))) {
        const parts = [
          `needs ${formatBytes(bytes)}`,
          `${formatBytes(Math.max(free(), 0))} free on the volume after its reserve`,
          `${formatBytes(check.reserved)} held by pulls in progress`,
        ];
        if (limit > 0) {
          parts.push(`cartd uses ${formatBytes(check.used)} of its ${formatBytes(limit)} limit`);
        }
        return { ok: false, message: `Not enough space to download file (${parts.join("; ")})` };
      }
    }
  }

  /** Evicts the least-recently-used evictable cart other than `forCart`; false if there is none. */
  private async evictOne(forCart: number, now: number): Promise<boolean> {
    const [victim] = await this.store.sizedCarts(now, {
      evictable: true,
      unusedSince: now - this.config.lruBufferTime,
      excludeCart: forCart,
    });
    if (!victim) return false;
    if (await this.store.markDeleted(victim.id, now, "evicted")) {
      log.info(
        `evicted cart ${victim.uid} (${
          formatBytes(victim.bytes)
        }, least recently used) to make room`,
      );
    }
    await removeDeletedCarts(this.store, this.volume);
    return true;
  }
}

/**
 * Removes from the volume the files of deleted carts that no download holds any more, and returns
 * those carts. Safe to run from any process at any time: each removal is idempotent.
 */
export async function removeDeletedCarts(store: Store, volume: Volume) {
  const carts = await store.removableCarts(Date.now());
  for (const cart of carts) {
    await volume.removeCart(cart.id);
    await store.markRemoved(cart.id, Date.now());
  }
  return carts;
}
