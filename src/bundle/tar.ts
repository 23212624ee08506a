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

/** One verified file to put in the tar. */
export interface TarSource {
  /** Normalised relative path inside the cart. */
  path: string;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Where its bytes are on disk. */
  file: string;
}

/** One entry of a tar layout: where its header starts, the header, and where its bytes come from. */
export interface TarEntry {
  offset: number;
  header: HeaderFields;
  headerLength: number;
  /** For files: where the bytes come from. */
  file?: string;
}

/** A whole tar, computed before a byte is read: its entries, where the trailer starts, its size. */
export interface TarLayout {
  root: string;
  entries: TarEntry[];
  /** How many of the entries are files. */
  files: number;
  /** Where the trailer (zero blocks and record padding) starts. */
  trailerOffset: number;
  size: number;
}

/** The layout of the tar whose members are rooted at `root/`. */
export function tarLayout(root: string, sources: TarSource[]): TarLayout {
  const sorted = inWalkOrder(sources);
  // A folder's time is the latest of everything under it.
  const dirMtime = new Map<string, number>([["", 0]]);
  for (const s of sources) {
    for (const dir of ["", ...foldersOf(s.path)]) {
      dirMtime.set(dir, Math.max(dirMtime.get(dir) ?? 0, s.mtime));
    }
  }

  const entries: TarEntry[] = [];
  let offset = 0;
  const add = (header: HeaderFields, file?: string) => {
    const length = headerLength(header);
    entries.push({ offset, header, headerLength: length, file });
    offset += length + padded(header.size);
  };
  const emitted = new Set<string>();
  const addDir = (dir: string) => {
    if (emitted.has(dir)) return;
    emitted.add(dir);
    const name = dir === "" ? `${root}/` : `${root}/${dir}/`;
    add({ name, type: "directory", size: 0, mode: 0o755, mtime: dirMtime.get(dir) ?? 0 });
  };
  addDir("");
  for (const s of sorted) {
    for (const dir of foldersOf(s.path)) addDir(dir);
    add(
      { name: `${root}/${s.path}`, type: "file", size: s.size, mode: 0o644, mtime: s.mtime },
      s.file,
    );
  }
  const trailerOffset = offset;
  const size = Math.ceil((offset + 2 * blockSize) / recordSize) * recordSize;
  return { root, entries, files: sources.length, trailerOffset, size };
}

/**
 * A strong validator for a tar: equal only for byte-identical tars. `identity` names what the tar
 * is made of (a cart and when it became ready), so a cart made again under the same uid differs.
 */
export function tarEtag(layout: TarLayout, identity: string): string {
  const hash = createHash("sha256");
  hash.update(`${identity}\n${layout.size}\n`);
  for (const e of layout.entries) {
    const h = e.header;
    hash.update(`${h.name}\0${h.type}\0${h.size}\0${h.mode}\0${h.mtime}\n`);
  }
  return `"${hash.digest("hex").slice(0, 32)}"`;
}

/**
 * The sources ordered as a directory walk orders paths: segment by segment, by UTF-16 code unit.
 * That is plain string order once `/` sorts before every other character, which NUL does (paths
 * hold no control characters); comparing precomputed keys keeps a sort of 100 000 paths quick.
 */
function inWalkOrder(sources: TarSource[]): TarSource[] {
  const keys = sources.map((s) => s.path.replaceAll("/", "\0"));
  const order = Array.from(sources.keys());
  order.sort((a, b) => keys[a] < keys[b] ? -1 : keys[a] > keys[b] ? 1 : 0);
  return order.map((i) => sources[i]);
}

/** The folders a relative path lies in, outermost first: `a/b/c` → `a`, `a/b`. */
function* foldersOf(path: string): Generator<string> {
  for (let slash = path.indexOf("/"); slash !== -1; slash = path.indexOf("/", slash + 1)) {
    yield path.slice(0, slash);
  }
}

/** Index of the entry that holds byte `position` (binary search over offsets). */
export function firstEntryFrom(entries: TarEntry[], position: number): number {
  let low = 0;
  let high = entries.length - 1;
  let found = entries.length;
  while (low <= high) {
    const mid = (low + high) >> 1;
    const entryEnd = entries[mid].offset + entries[mid].headerLength +
      padded(entries[mid].header.size);
    if (entryEnd > position) {
      found = mid;
      high = mid - 1;
    } else low = mid + 1;
  }
  return found;
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
