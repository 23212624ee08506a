/** Test archives: a directory of files with known contents, and the cart request for them. */
import { dirname, join } from "node:path";
import { createChecksum } from "../../src/cart/checksum.ts";

export interface ArchiveFile {
  /** Archive id (a path under the archive directory). */
  id: string;
  /** Path inside the cart. */
  path: string;
  data: Uint8Array;
  /** Seconds since the epoch. */
  mtime: number;
  hashtype?: string;
}

export interface TestArchive {
  dir: string;
  files: ArchiveFile[];
  request: { fileids: { id: string; path: string; hashtype: string; hashsum: string }[] };
}

/** Deterministic pseudo-random bytes. */
export function bytes(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export interface FileSpec {
  id: string;
  path?: string;
  size?: number;
  data?: Uint8Array;
  mtime?: number;
  hashtype?: string;
}

/** Writes `files` into a fresh directory and builds the matching cart request. */
export async function makeArchive(files: FileSpec[]): Promise<TestArchive> {
  const dir = await Deno.makeTempDir({ prefix: "cartd-archive-" });
  const made: ArchiveFile[] = [];
  for (const [i, f] of files.entries()) {
    const data = f.data ?? bytes(f.size ?? 1000, i + 1);
    const mtime = f.mtime ?? 1_600_000_000 + i * 3600;
    const file = join(dir, f.id);
    await Deno.mkdir(dirname(file), { recursive: true });
    await Deno.writeFile(file, data);
    await Deno.utime(file, mtime, mtime);
    made.push({ id: f.id, path: f.path ?? f.id, data, mtime, hashtype: f.hashtype ?? "sha1" });
  }
  return {
    dir,
    files: made,
    request: {
      fileids: made.map((f) => ({
        id: f.id,
        path: f.path,
        hashtype: f.hashtype!,
        hashsum: createChecksum(f.hashtype!).update(f.data).digest("hex"),
      })),
    },
  };
}
