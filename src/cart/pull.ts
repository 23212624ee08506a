/**
 * Pulls one file: streams it from the archive into a temporary name while hashing, checks the
 * length and the checksum, and only then renames it into place with the archive's mtime. A failed
 * pull leaves nothing behind.
 */
import type { Archive } from "../archive/mod.ts";
import { ArchiveError } from "../archive/mod.ts";
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

/** What a pull got: its bytes, their digest, and whether a checksum verified them. */
export interface PullResult {
  bytes: number;
  digest: string;
  verified: boolean;
}

/**
 * Pulls one file into place: streamed to a fresh temporary file while hashed, checked for length
 * and checksum, then renamed. Throws `ArchiveError` or `ChecksumMismatch`; leaves nothing behind.
 */
export async function pullFile(spec: PullSpec): Promise<PullResult> {
  const hash = createChecksum(spec.hashtype);
  const stall = new AbortController();
  const signal = AbortSignal.any([spec.signal, stall.signal]);
  let bytes = 0;
  const out = await createFresh(spec.partial);
  // Room for the whole file at most (plus a byte, to notice a longer body in one read).
  const writer = new BlockWriter(out, Math.min(spec.transferSize, spec.size + 1));
  try {
    const body = await spec.archive.open(spec.id, signal);
    let timer = setTimeout(() => stall.abort(), spec.idleTimeoutMs);
    try {
      for await (const chunk of body) {
        clearTimeout(timer);
        if (signal.aborted) throw signal.reason;
        hash.update(chunk);
        await writer.write(chunk);
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
  return { bytes, digest, verified: spec.hashsum !== "" };
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

/** Gathers the archive's small network chunks into blocks of `size` bytes per write. */
class BlockWriter {
  private readonly block: Uint8Array;
  private used = 0;

  constructor(private readonly file: Deno.FsFile, size: number) {
    this.block = new Uint8Array(Math.max(size, 1));
  }

  async write(chunk: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      const n = Math.min(chunk.length - offset, this.block.length - this.used);
      this.block.set(chunk.subarray(offset, offset + n), this.used);
      this.used += n;
      offset += n;
      if (this.used === this.block.length) await this.flush();
    }
  }

  async flush(): Promise<void> {
    let written = 0;
    while (written < this.used) {
      written += await this.file.write(this.block.subarray(written, this.used));
    }
    this.used = 0;
  }
}
