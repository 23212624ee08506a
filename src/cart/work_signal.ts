/**
 * Wakes the idle worker loops of this process when work arrives here (a cart created or retried),
 * so a new cart starts at once instead of at the loops' next look. Work that arrives on another
 * node is found at that look (`idlePollMs` in the worker).
 */
import { sleep } from "../time.ts";

export class WorkSignal {
  private readonly sleepers = new Set<AbortController>();

  /** Wakes every loop sleeping now. */
  notify(): void {
    for (const sleeper of this.sleepers) sleeper.abort();
    this.sleepers.clear();
  }

  /** Sleeps `ms`, or less: until `notify`, or until `signal` aborts. */
  async sleep(ms: number, signal?: AbortSignal): Promise<void> {
    const sleeper = new AbortController();
    this.sleepers.add(sleeper);
    try {
      await sleep(ms, signal ? AbortSignal.any([signal, sleeper.signal]) : sleeper.signal);
    } finally {
      this.sleepers.delete(sleeper);
    }
  }
}
