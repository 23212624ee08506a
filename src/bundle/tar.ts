/**
 * A cart's tar, computed from its file list alone: every header and offset is known before a byte
 * is read, so the size, an ETag and any byte range are known up front, and the archive is streamed
 * straight from the verified files with large reads (never built on disk or in memory).
 *
 * Layout: a directory entry for the root and every directory level, members in path order, the
 * usual two zero blocks, and padding to a whole 10 KiB record as GNU tar and Python write it.
 */
import { createHash } from "node:crypto";
import { controlCharacters } from "../text.ts";
import { blockSize, type HeaderFields, headerLength, padded } from "./tar_header.ts";

const recordSize = 10240;

/** One verified file to put in the tar, as the database gives it. */
export interface TarSource {
  /** Normalised relative path inside the cart. */
  path: string;
  /** Bytes (read with `Number()`: PostgreSQL's driver gives big integers as strings). */
  size: number | null;
  /** Seconds since the epoch (none: 0). */
  mtime: number | null;
}

/**
 * One entry of a layout: where its header starts, the header, and where its bytes come from. A tar
 * entry's header is encoded from `header` and its data padded to whole blocks; another format (a
 * zip's local header, or a single file with none) gives its header bytes and padding.
 */
export interface TarEntry {
  offset: number;
  header: HeaderFields;
  headerLength: number;
  /** The header's bytes, when not a tar header. */
  encoded?: Uint8Array;
  /** Zero bytes after the file's own (default: a tar's, to a whole block). */
  padding?: number;
  /** For files: where the bytes come from. */
  file?: string;
}

/**
 * A whole tar, computed before a byte is read. Entries are kept as columns and made into objects
 * only when asked for, so the layout of a cart of 100 000 files takes a few megabytes.
 */
export interface TarLayout {
  root: string;
  /** How many entries (folders and files). */
  count: number;
  /** Entry `i`, in tar order. */
  entry(i: number): TarEntry;
  /** How many of the entries are files. */
  files: number;
  /** Where the trailer (zero blocks and record padding) starts. */
  trailerOffset: number;
  size: number;
  /** The first entry that holds byte `position` or a later one (`count` if none does). */
  entryAt(position: number): number;
  /**
   * Bytes [from, to) of the trailer (relative to `trailerOffset`), in pieces, when it is not all
   * zeros (a zip's central directory).
   */
  trailer?(from: number, to: number): Iterable<Uint8Array>;
}

/**
 * The layout of the tar whose members are rooted at `root/`. `fileOf` says where the bytes of a
 * source's path are on disk.
 */
export function tarLayout(
  root: string,
  sources: readonly TarSource[],
  fileOf: (path: string) => string,
): TarLayout {
  const order = walkOrder(sources);
  const paths = order.map((i) => sources[i].path);
  const sizes = Float64Array.from(order, (i) => Number(sources[i].size ?? 0));
  const mtimes = Float64Array.from(order, (i) => Number(sources[i].mtime ?? 0));
  // A folder's time is the latest of everything under it.
  const dirMtime = new Map<string, number>([["", 0]]);
  for (let i = 0; i < paths.length; i++) {
    dirMtime.set("", Math.max(dirMtime.get("")!, mtimes[i]));
    for (const dir of foldersOf(paths[i])) {
      dirMtime.set(dir, Math.max(dirMtime.get(dir) ?? 0, mtimes[i]));
    }
  }

  const dirs: string[] = [];
  /** Per entry: the index of its file in `paths`, or `~i` for the folder `dirs[i]`. */
  const refs: number[] = [];
  /** Where each entry starts, and then where the trailer starts. */
  const offsets: number[] = [];
  const headerOf = (ref: number): HeaderFields => {
    if (ref < 0) {
      const dir = dirs[~ref];
      const name = dir === "" ? `${root}/` : `${root}/${dir}/`;
      return { name, type: "directory", size: 0, mode: 0o755, mtime: dirMtime.get(dir)! };
    }
    const name = `${root}/${paths[ref]}`;
    return { name, type: "file", size: sizes[ref], mode: 0o644, mtime: mtimes[ref] };
  };
  let offset = 0;
  const add = (ref: number) => {
    refs.push(ref);
    offsets.push(offset);
    const header = headerOf(ref);
    offset += headerLength(header) + padded(header.size);
  };
  const addDir = (dir: string) => {
    dirs.push(dir);
    add(~(dirs.length - 1));
  };
  addDir("");
  for (let i = 0; i < paths.length; i++) {
    // In walk order everything under a folder comes together, so a folder has its entry already
    // when the path before holds it too.
    for (const dir of foldersOf(paths[i])) {
      if (i === 0 || !paths[i - 1].startsWith(`${dir}/`)) addDir(dir);
    }
    add(i);
  }
  const trailerOffset = offset;
  offsets.push(trailerOffset);

  const entry = (i: number): TarEntry => {
    const ref = refs[i];
    const header = headerOf(ref);
    return {
      offset: offsets[i],
      header,
      headerLength: offsets[i + 1] - offsets[i] - padded(header.size),
      file: ref < 0 ? undefined : fileOf(paths[ref]),
    };
  };
  const entryAt = (position: number): number => {
    // Binary search for the first entry that ends after `position`.
    let low = 0;
    let high = refs.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (offsets[mid + 1] > position) high = mid;
      else low = mid + 1;
    }
    return low;
  };
  return {
    root,
    count: refs.length,
    entry,
    entryAt,
    files: paths.length,
    trailerOffset,
    size: Math.ceil((trailerOffset + 2 * blockSize) / recordSize) * recordSize,
  };
}

/**
 * A strong validator for a tar: equal only for byte-identical tars. `identity` names what the tar
 * is made of (a cart and when it became ready), so a cart made again under the same uid differs.
 */
export function tarEtag(layout: TarLayout, identity: string): string {
  const hash = createHash("sha256");
  hash.update(`${identity}\n${layout.size}\n`);
  for (let i = 0; i < layout.count; i++) {
    const h = layout.entry(i).header;
    hash.update(`${h.name}\0${h.type}\0${h.size}\0${h.mode}\0${h.mtime}\n`);
  }
  return `"${hash.digest("hex").slice(0, 32)}"`;
}

/**
 * The indexes of the sources ordered as a directory walk orders paths: segment by segment, by
 * UTF-16 code unit. That is plain string order once `/` sorts before every other character,
 * which NUL does (paths hold no control characters); comparing precomputed keys keeps a sort of
 * 100 000 paths quick.
 */
export function walkOrder(sources: readonly TarSource[]): number[] {
  const keys = sources.map((s) => s.path.replaceAll("/", "\0"));
  const order = Array.from(sources.keys());
  order.sort((a, b) => keys[a] < keys[b] ? -1 : keys[a] > keys[b] ? 1 : 0);
  return order;
}

/** The folders a relative path lies in, outermost first: `a/b/c` → `a`, `a/b`. */
function* foldersOf(path: string): Generator<string> {
  for (let slash = path.indexOf("/"); slash !== -1; slash = path.indexOf("/", slash + 1)) {
    yield path.slice(0, slash);
  }
}

/**
 * The root folder of the tar for a requested file name: the name without a trailing `.tar`, made
 * safe (no path separators, `..`, or control characters can reach a header or a member name).
 */
export function tarRootName(filename: string): string {
  let name = filename.replace(controlCharacters, "").replace(/[/\\]/g, "_");
  // Leading dots would make a hidden (or `..`) folder.
  name = name.replace(/\.tar$/i, "").replace(/^\.+/, "").trim();
  if (name === "") name = "data";
  // At most 200 characters, cut between code points (never inside a surrogate pair), and no lone
  // surrogate from the request: either would make the name unencodable in a header.
  return Array.from(name.toWellFormed()).slice(0, 200).join("");
}

/**
 * `data_YYYY_MM_DD_HH_MM_SS.tar` in local time, the original's default download name. Callers pass
 * when the cart became ready, so the name (and the tar's root folder) is the same on every request
 * and a resumed download continues the same bytes.
 */
export function defaultTarName(when: Date): string {
  const two = (n: number) => String(n).padStart(2, "0");
  return `data_${when.getFullYear()}_${two(when.getMonth() + 1)}_${two(when.getDate())}_` +
    `${two(when.getHours())}_${two(when.getMinutes())}_${two(when.getSeconds())}.tar`;
}

/** The tar's root folder and the name to offer for saving it, from a requested file name. */
export function downloadName(requested: string): { root: string; filename: string } {
  const root = tarRootName(requested);
  return { root, filename: /\.tar$/i.test(requested) ? `${root}.tar` : root };
}
