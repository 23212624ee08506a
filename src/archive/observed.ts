/**
 * An archive whose every request is counted and timed (for metrics), and whose last answer and
 * last failure are kept (for the health check), whichever worker or check made it.
 */
import { metrics } from "../metrics.ts";
import type { ArchiveRequestKind } from "../metrics.ts";
import { type Archive, ArchiveError, type FileStatus } from "./archive.ts";

/** The last failure of an archive request, for `/-/health`. */
export interface ArchiveFailureSeen {
  message: string;
  /** Epoch milliseconds. */
  at: number;
}

/** Wraps an archive; see the module comment. */
export class ObservedArchive implements Archive {
  readonly name: string;
  /** When the archive last answered anything, if it has (epoch ms). */
  lastAnswer?: number;
  lastFailure?: ArchiveFailureSeen;

  constructor(private readonly inner: Archive) {
    this.name = inner.name;
  }

  stage(id: string, signal?: AbortSignal): Promise<void> {
    return this.observe("stage", signal, () => this.inner.stage(id, signal));
  }

  status(id: string, signal?: AbortSignal): Promise<FileStatus> {
    return this.observe("status", signal, () => this.inner.status(id, signal));
  }

  /** Timed to the first byte: the body's own failures are the puller's to judge. */
  open(id: string, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    return this.observe("pull", signal, () => this.inner.open(id, signal));
  }

  ping(signal?: AbortSignal): Promise<void> {
    return this.observe("ping", signal, () => this.inner.ping(signal));
  }

  private async observe<T>(
    kind: ArchiveRequestKind,
    signal: AbortSignal | undefined,
    request: () => Promise<T>,
  ): Promise<T> {
    const started = performance.now();
    let outcome = "ok";
    try {
      const result = await request();
      this.lastAnswer = Date.now();
      return result;
    } catch (err) {
      if (signal?.aborted) outcome = "aborted";
      else {
        outcome = err instanceof ArchiveError ? err.failure : "error";
        const now = Date.now();
        this.lastFailure = { message: err instanceof Error ? err.message : String(err), at: now };
        // Refusing one file is still an answer.
        if (outcome !== "outage") this.lastAnswer = now;
      }
      throw err;
    } finally {
      metrics.archiveRequests.inc({ kind, outcome });
      metrics.archiveDuration.observe({ kind }, (performance.now() - started) / 1000);
    }
  }
}
