/**
 * The downloads a server is streaming, so shutdown can wait for them and, past its deadline, end
 * them cleanly (erroring a body is the one way to stop a stream that Deno.serve survives).
 */
import { type PassThrough, passThrough, type StreamEnd } from "../io.ts";
import { log } from "../log.ts";

/** Counts the bodies being streamed, and ends them all on demand. */
export class Downloads {
  private readonly live = new Set<PassThrough>();

  /** How many downloads are streaming now. */
  get size(): number {
    return this.live.size;
  }

  /** Wraps a body so it is counted while it streams; `onEnd` hears how it ended. */
  track(
    body: ReadableStream<Uint8Array>,
    onEnd: (end: StreamEnd) => void = () => {},
  ): ReadableStream<Uint8Array> {
    // A body whose source fails ends short of its length (the client sees it cut off); why is
    // logged here, once, rather than by Deno.serve with a stack trace.
    const tracked: PassThrough = passThrough(
      body,
      (end) => {
        this.live.delete(tracked);
        if (end.how === "failed") {
          log.warn(
            `a download stopped after ${end.bytes} bytes: ${end.reason}`,
          );
        }
        onEnd(end);
      },
      undefined,
      "close",
    );
    this.live.add(tracked);
    return tracked.stream;
  }

  /** Ends every download still streaming. */
  abortAll(reason: string): void {
    for (const download of [...this.live]) download.abort(reason);
    this.live.clear();
  }
}
