/** Small helpers for time: waiting, and showing an instant. */

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** An instant in epoch milliseconds as ISO 8601 (UTC), or null for no instant. */
export function isoTime(ms: number | null): string | null {
  return ms === null ? null : new Date(Number(ms)).toISOString();
}

/** A repeating task that can be stopped; see `repeat`. */
export interface Repeating {
  /** Stops it, and waits for a run under way. */
  stop(): Promise<void>;
}

/**
 * Runs `task` every `ms`, counting from the end of the previous run, so a slow run (a database
 * that answers late) never overlaps the next. Errors are the task's to handle.
 */
export function repeat(ms: number, task: () => Promise<void>): Repeating {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> | undefined;
  const next = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = task().catch(() => {}).finally(() => {
        running = undefined;
        next();
      });
    }, ms);
  };
  next();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
