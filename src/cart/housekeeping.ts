/**
 * What crashed or cut-short work leaves behind, swept up once a minute by `cartd serve` (and the
 * in-process test server): claims of cartd processes of this host that have exited, carts whose
 * last file finished as their worker died, files of deleted carts whose downloads never said they
 * ended, drafts of carts whose creation was cut short, folders no cart owns; and files staged
 * before the shared cache, linked into it.
 * Every step is idempotent and safe beside other processes doing the same.
 */
import { describe } from "../errors.ts";
import { log } from "../log.ts";
import type { Store } from "../store/store.ts";
import { removeStrayFolders, staleDraftAge } from "../volume/gc.ts";
import { linkEarlierFiles, removeDeletedCarts, sweepCacheFolder } from "../volume/space.ts";
import type { Volume } from "../volume/volume.ts";
import { reclaimCrashedWork } from "./worker.ts";

/** How often the sweep runs. */
const housekeepingIntervalMs = 60_000;

/** The periodic sweep; `start` it in a long-running process, `stop` it before closing. */
export class Housekeeping {
  private timer?: ReturnType<typeof setInterval>;
  private running?: Promise<void>;

  constructor(private readonly store: Store, private readonly volume: Volume) {}

  /**
   * One sweep, now: dead processes' claims first (their downloads may hold carts), then carts
   * whose files are done but which no one settled, deleted carts' files, drafts and folders that
   * a crash left.
   */
  async runOnce(): Promise<void> {
    await reclaimCrashedWork(this.store);
    const settled = await this.store.carts.settleStuck(Date.now());
    if (settled > 0) log.info(`settled ${settled} cart(s) whose work had ended unannounced`);
    await removeDeletedCarts(this.store, this.volume);
    await this.store.carts.deleteStaleDrafts(Date.now() - staleDraftAge);
    await removeStrayFolders(this.store, this.volume);
    const joined = await linkEarlierFiles(this.store, this.volume);
    if (joined > 0) log.info(`${joined} file(s) staged before the shared cache joined it`);
    const swept = await sweepCacheFolder(this.store, this.volume, Date.now());
    if (swept > 0) log.info(`removed ${swept} file(s) from the cache folder that no record named`);
  }

  /** Sweeps every `intervalMs` until `stop`; a failed sweep is logged and the next one tries again. */
  start(intervalMs = housekeepingIntervalMs): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.runOnce()
        .catch((err) => log.warn(`housekeeping failed: ${describe(err)}`))
        .finally(() => this.running = undefined);
    }, intervalMs);
  }

  /** Stops sweeping and waits for a sweep under way. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
