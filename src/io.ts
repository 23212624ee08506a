/**
 * Streams over local files with large reads: Deno's `FsFile.readable` delivers 64 KiB chunks,
 * which halves throughput on big files.
 */

/**
 * Reads `length` bytes of `path` from `offset` (to the end when `length` is omitted). A byte
 * stream: a reader that brings its own buffer (BYOB) gets the bytes read straight into it.
 */
export function fileStream(
  path: string,
  options: { offset?: number; length?: number; chunkSize?: number } = {},
): ReadableStream<Uint8Array> {
  let chunkSize = options.chunkSize ?? 1 << 20;
  let remaining = options.length ?? Infinity;
  let file: Deno.FsFile | undefined;
  const finish = (controller: ReadableByteStreamController) => {
    file?.close();
    file = undefined;
    controller.close();
    controller.byobRequest?.respond(0);
  };
  return new ReadableStream({
    type: "bytes",
    async pull(controller) {
      if (!file) {
        file = await Deno.open(path);
        if (options.offset) await file.seek(options.offset, Deno.SeekMode.Start);
        // Small files get small buffers: zeroing megabytes per file would cost more than the read.
        if (remaining === Infinity) {
          const size = (await file.stat()).size - (options.offset ?? 0);
          chunkSize = Math.max(1, Math.min(chunkSize, size + 1));
        }
      }
      if (remaining <= 0) return finish(controller);
      const request = controller.byobRequest;
      const view = request?.view
        ? new Uint8Array(request.view.buffer, request.view.byteOffset, request.view.byteLength)
        : new Uint8Array(chunkSize);
      const target = view.subarray(0, Math.min(view.length, remaining));
      const n = await file.read(target);
      if (n === null) {
        if (remaining !== Infinity) {
          file.close();
          file = undefined;
          controller.error(new Error(`${path} ended ${remaining} bytes early`));
          return;
        }
        return finish(controller);
      }
      remaining -= n;
      if (request?.view) request.respond(n);
      else controller.enqueue(target.subarray(0, n));
    },
    cancel() {
      file?.close();
      file = undefined;
    },
  });
}

/** A stream passed through, and a way to end it early. */
export interface PassThrough {
  stream: ReadableStream<Uint8Array>;
  /** Ends the stream with an error (its reader sees it fail, the source is cancelled). */
  abort(reason: string): void;
}

/** How a passed-through stream ended, and the bytes it passed. */
export interface StreamEnd {
  /** `complete`: all of it; `failed`: its source failed; `cancelled`: its reader stopped. */
  how: "complete" | "failed" | "cancelled" | "aborted";
  bytes: number;
  /** Why its source failed. */
  reason?: string;
}

/**
 * Passes `stream` through, calling `onChunk` for each chunk and `onEnd` once when it finishes,
 * fails, is cancelled or is aborted. Erroring the outer stream is the one way to stop a body that `Deno.serve` survives.
 * The outer stream is a byte stream: `Deno.serve` sends those markedly faster.
 */
export function passThrough(
  stream: ReadableStream<Uint8Array>,
  onEnd: (end: StreamEnd) => void | Promise<void> = () => {},
  onChunk?: (bytes: number) => void,
  /**
   * When the source fails: `error` the outer stream (its reader hears why), or `close` it (an HTTP
   * answer then ends short of its Content-Length, which clients see, and Deno.serve logs nothing).
   */
  onFailure: "error" | "close" = "error",
): PassThrough {
  const reader = stream.getReader();
  let ended = false;
  let bytes = 0;
  let controller!: ReadableByteStreamController;
  const end = async (how: StreamEnd["how"], reason?: string) => {
    if (ended) return;
    ended = true;
    await onEnd({ how, bytes, reason });
  };
  const outer = new ReadableStream({
    type: "bytes",
    start(c) {
      controller = c;
    },
    async pull(controller) {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) {
            await end("complete");
            controller.close();
            return;
          }
          // A byte stream takes no empty chunk.
          if (value.byteLength === 0) continue;
          bytes += value.byteLength;
          onChunk?.(value.byteLength);
          controller.enqueue(value);
          return;
        }
      } catch (err) {
        await end("failed", err instanceof Error ? err.message : String(err));
        if (onFailure === "close") controller.close();
        else controller.error(err);
      }
    },
    async cancel(reason) {
      await reader.cancel(reason).catch(() => {});
      await end("cancelled");
    },
  });
  return {
    stream: outer,
    abort(reason) {
      try {
        controller.error(new Error(reason));
      } catch { /* already finished */ }
      reader.cancel(reason).catch(() => {});
      end("aborted").catch(() => {});
    },
  };
}
