/**
 * Streams over local files with large reads: Deno's `FsFile.readable` delivers 64 KiB chunks,
 * which halves throughput on big files.
 */

/** Reads `length` bytes of `path` from `offset` (to the end when `length` is omitted). */
export function fileStream(
  path: string,
  options: { offset?: number; length?: number; chunkSize?: number } = {},
): ReadableStream<Uint8Array> {
  let chunkSize = options.chunkSize ?? 1 << 20;
  let remaining = options.length ?? Infinity;
  let file: Deno.FsFile | undefined;
  return new ReadableStream<Uint8Array>({
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
      if (remaining <= 0) {
        file.close();
        controller.close();
        return;
      }
      const buffer = new Uint8Array(Math.min(chunkSize, remaining));
      const n = await file.read(buffer);
      if (n === null) {
        file.close();
        if (remaining !== Infinity) {
          controller.error(new Error(`${path} ended ${remaining} bytes early`));
        } else controller.close();
        return;
      }
      remaining -= n;
      controller.enqueue(n === buffer.length ? buffer : buffer.subarray(0, n));
    },
    cancel() {
      file?.close();
    },
  }, { highWaterMark: 0 });
}

/** A stream passed through, and a way to end it early. */
export interface PassThrough<T> {
  stream: ReadableStream<T>;
  /** Ends the stream with an error (its reader sees it fail, the source is cancelled). */
  abort(reason: string): void;
}

/**
 * Passes `stream` through, calling `onEnd` once when it finishes, fails, is cancelled or is
 * aborted. Erroring the outer stream is the one way to stop a body that `Deno.serve` survives.
 */
export function passThrough<T>(
  stream: ReadableStream<T>,
  onEnd: () => void | Promise<void> = () => {},
): PassThrough<T> {
  const reader = stream.getReader();
  let ended = false;
  let controller!: ReadableStreamDefaultController<T>;
  const end = async () => {
    if (ended) return;
    ended = true;
    await onEnd();
  };
  const outer = new ReadableStream<T>({
    start(c) {
      controller = c;
    },
    async pull(controller) {
      try {
        const { value, done } = await reader.read();
        if (done) {
          await end();
          controller.close();
        } else controller.enqueue(value);
      } catch (err) {
        await end();
        controller.error(err);
      }
    },
    async cancel(reason) {
      await reader.cancel(reason).catch(() => {});
      await end();
    },
  }, { highWaterMark: 0 });
  return {
    stream: outer,
    abort(reason) {
      try {
        controller.error(new Error(reason));
      } catch { /* already finished */ }
      reader.cancel(reason).catch(() => {});
      end().catch(() => {});
    },
  };
}
