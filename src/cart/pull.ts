/**
 * Pulls one file: streams it from the archive into a temporary name while hashing, checks the
 * length and the checksum, and only then renames it into place with the archive's mtime. A failed
 * pull leaves nothing behind.
 */
import type { Archive } from "../archive/mod.ts";
import { ArchiveError } from "../archive/mod.ts";
import { crc32 } from "node:zlib";
import { createChecksum, sameDigest } from "./checksum.ts";

/** The bytes arrived whole, but their digest is not the one the request gave. */
export class ChecksumMismatch extends Error {
  constructor(readonly expected: string, readonly actual: string, hashtype: string) {
    super(
      `File hash does not match provided hash (${hashtype} expected ${expected}, got ${actual})`,
    );
    this.name = "ChecksumMismatch";
  }
}

/** What to pull, from where, to where, and how to check it. */
export interface PullSpec {
  archive: Archive;
  id: string;
  hashtype: string;
  /** Expected hex digest; empty means the file cannot be verified. */
  hashsum: string;
  /** The size the archive reported. */
  size: number;
  /** Seconds since the epoch, set on the file once in place. */
  mtime?: number;
  partial: string;
  target: string;
  signal: AbortSignal;
  /** Bytes gathered before each write to disk (`transfer_size`). */
  transferSize: number;
  /** Longest wait for the next chunk before the pull counts as stalled. */
  idleTimeoutMs: number;
  onProgress?: (bytes: number) => void;
}

/** What a pull got: its bytes, their digest, whether a checksum verified them, and their CRC-32. */
export interface PullResult {
  bytes: number;
  digest: string;
  verified: boolean;
  /** Computed as the bytes came (for zips, which carry it): no second read. */
  crc32: number;
}

/**
 * Pulls one file into place: streamed to a fresh temporary file while hashed, checked for length
 * and checksum, then renamed. Throws `ArchiveError` or `ChecksumMismatch`; leaves nothing behind.
 */
export async function pullFile(spec: PullSpec): Promise<PullResult> {
  const hash = createChecksum(spec.hashtype);
  let crc = 0;
  const stall = new AbortController();
  const signal = AbortSignal.any([spec.signal, stall.signal]);
  let bytes = 0;
  const out = await createFresh(spec.partial);
  // Room for the whole file at most (plus a byte, to notice a longer body in one read).
  const writer = new BlockWriter(out, Math.min(spec.transferSize, spec.size + 1));
  try {
    // The idle timeout covers the wait for the answer's headers too.
    let timer = setTimeout(() => stall.abort(), spec.idleTimeoutMs);
    let source: ChunkSource | undefined;
    try {
      const opening = spec.archive.open(spec.id, signal);
      // A body that comes after the pull gave up is let go.
      opening.then((body) => {
        if (signal.aborted) body.cancel().catch(() => {});
      }, () => {});
      source = chunkSource(await untilAborted(opening, signal));
      clearTimeout(timer);
      timer = setTimeout(() => stall.abort(), spec.idleTimeoutMs);
      for (;;) {
        // Straight into the writer's block when the body can (no copy, and no buffer per chunk).
        const chunk = await untilAborted(source.next(writer.space()), signal);
        clearTimeout(timer);
        if (signal.aborted) throw signal.reason;
        if (chunk.length === 0) {
          await writer.take(chunk); // (a BYOB read hands the block's memory back even at the end)
          break;
        }
        hash.update(chunk);
        crc = crc32(chunk, crc);
        await writer.take(chunk);
        bytes += chunk.length;
        if (bytes > spec.size) break;
        spec.onProgress?.(bytes);
        timer = setTimeout(() => stall.abort(), spec.idleTimeoutMs);
      }
    } catch (err) {
      if (spec.signal.aborted) throw err;
      if (err instanceof ArchiveError) throw err;
      const why = stall.signal.aborted ? "stalled" : `broke off (${(err as Error).message})`;
      throw new ArchiveError(
        `pull of file ${spec.id} from ${spec.archive.name} ${why} after ${bytes} bytes`,
        "unknown",
      );
    } finally {
      clearTimeout(timer);
      source?.close();
    }
    if (bytes !== spec.size) {
      throw new ArchiveError(
        `pull of file ${spec.id} from ${spec.archive.name} gave ${
          bytes > spec.size ? "more than" : "only"
        } ` +
          `${bytes} of ${spec.size} bytes`,
        "file",
      );
    }
    await writer.flush();
    await out.sync();
  } catch (err) {
    out.close();
    await Deno.remove(spec.partial).catch(() => {});
    throw err;
  }
  out.close();

  const digest = hash.digest("hex");
  if (spec.hashsum !== "" && !sameDigest(digest, spec.hashsum)) {
    await Deno.remove(spec.partial).catch(() => {});
    throw new ChecksumMismatch(spec.hashsum, digest, spec.hashtype);
  }
  if (spec.mtime !== undefined) {
    await Deno.utime(spec.partial, spec.mtime, spec.mtime);
  }
  await Deno.rename(spec.partial, spec.target);
  return { bytes, digest, verified: spec.hashsum !== "", crc32: crc };
}

/**
 * `work`, or the signal's reason once it aborts, even if `work` never settles (a body read the
 * abort does not reach): a stalled archive can never hold a worker. The listener goes with the
 * wait, so a pull of many chunks holds nothing per chunk.
 */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    work.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const stop = () => reject(signal.reason);
    signal.addEventListener("abort", stop, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", stop));
  });
}

/**
 * A new, empty file at `path`, never an existing one: whatever is in the way (a leftover, or a
 * planted symlink) is removed, and `createNew` (O_EXCL) does not follow a symlink put there since.
 */
async function createFresh(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { write: true, createNew: true });
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    await Deno.remove(path).catch(() => {});
    return await Deno.open(path, { write: true, createNew: true });
  }
}

/** The chunks of a body, read into a buffer the caller gives when the body can (BYOB). */
interface ChunkSource {
  /** The next chunk (read into `space`, or not); an empty one at the end. */
  next(space: Uint8Array): Promise<Uint8Array>;
  /** Lets the body go (cancelled if it was not read to the end). */
  close(): void;
}

function chunkSource(body: ReadableStream<Uint8Array>): ChunkSource {
  let byob: ReadableStreamBYOBReader | undefined;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    // Not a byte stream: its chunks are taken as they come.
  }
  if (byob) {
    const reader = byob;
    return {
      async next(space) {
        const { value } = await reader.read(space);
        // The space's memory comes back in `value`, at the end as an empty view.
        return value ?? new Uint8Array();
      },
      close: () => void reader.cancel().catch(() => {}),
    };
  }
  const reader = body.getReader();
  return {
    async next() {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return new Uint8Array();
        if (value.length > 0) return value;
      }
    },
    close: () => void reader.cancel().catch(() => {}),
  };
}

/**
 * Writes a pull to disk in blocks of `size` bytes, two blocks in turn: one is written while the
 * other fills, so reading from the archive and writing to disk overlap.
 */
class BlockWriter {
  private readonly blocks: ArrayBuffer[];
  private current = 0;
  private used = 0;
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly file: Deno.FsFile, private readonly size: number) {
    this.size = Math.max(size, 1);
    this.blocks = [new ArrayBuffer(this.size), new ArrayBuffer(this.size)];
  }

  /** The free part of the block being filled, for a reader to fill. */
  space(): Uint8Array {
    return new Uint8Array(this.blocks[this.current], this.used);
  }

  /**
   * Takes a chunk: one read into `space()` (whose memory a BYOB read hands back in a new buffer,
   * which the block becomes) or any other, which is copied in.
   */
  async take(chunk: Uint8Array): Promise<void> {
    const block = this.blocks[this.current];
    if (block.byteLength === 0) {
      // Read in place: the block's memory moved to the chunk's buffer.
      this.blocks[this.current] = chunk.buffer as ArrayBuffer;
      this.used += chunk.length;
      if (this.used === this.size) await this.swap();
      return;
    }
    let offset = 0;
    while (offset < chunk.length) {
      const n = Math.min(chunk.length - offset, this.size - this.used);
      new Uint8Array(this.blocks[this.current], this.used, n)
        .set(chunk.subarray(offset, offset + n));
      this.used += n;
      offset += n;
      if (this.used === this.size) await this.swap();
    }
  }

  /** Writes everything taken so far. */
  async flush(): Promise<void> {
    await this.writing;
    if (this.used > 0) {
      await writeAll(this.file, new Uint8Array(this.blocks[this.current], 0, this.used));
    }
    this.used = 0;
  }

  /** Starts writing the full block (once the other one is written) and fills the other. */
  private async swap(): Promise<void> {
    await this.writing;
    const writing = writeAll(this.file, new Uint8Array(this.blocks[this.current], 0, this.used));
    writing.catch(() => {}); // its failure is thrown where it is awaited
    this.writing = writing;
    this.current ^= 1;
    this.used = 0;
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await file.write(bytes.subarray(written));
}
