/**
 * The downloads a server is streaming, so shutdown can wait for them and, past its deadline, end
 * them cleanly (erroring a body is the one way to stop a stream that Deno.serve survives).
 */
import { type PassThrough, passThrough } from "../io.ts";

/** Counts the bodies being streamed, and ends them all on demand. */
export class Downloads {
  private readonly live = new Set<PassThrough>();

  /** How many downloads are streaming now. */
  get size(): number {
    return this.live.size;
  }

  /** Wraps a body so it is counted while it streams. */
  track(body: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
    const tracked: PassThrough = passThrough(body, () => {
      this.live.delete(tracked);
    });
    this.live.add(tracked);
    return tracked.stream;
  }

  /** Ends every download still streaming. */
  abortAll(reason: string): void {
    for (const download of [...this.live]) download.abort(reason);
    this.live.clear();
  }
}
