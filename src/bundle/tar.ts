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
import { blockSize, encodeHeader, type HeaderFields, headerLength, padded } from "./tar_header.ts";

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
  /** Where the trailer (zero blocks and record padding) starts. */
  trailerOffset: number;
  size: number;
}

/** The layout of the tar whose members are rooted at `root/`. */
export function tarLayout(root: string, sources: TarSource[]): TarLayout {
  const sorted = [...sources].sort((a, b) => comparePaths(a.path, b.path));
  const dirMtime = new Map<string, number>();
  for (const s of sorted) {
    const parts = s.path.split("/");
    for (let n = 0; n < parts.length; n++) {
      const dir = parts.slice(0, n).join("/");
      dirMtime.set(dir, Math.max(dirMtime.get(dir) ?? 0, s.mtime));
    }
  }
  if (!dirMtime.has("")) dirMtime.set("", 0);

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
    const parts = s.path.split("/");
    for (let n = 1; n < parts.length; n++) addDir(parts.slice(0, n).join("/"));
    add(
      { name: `${root}/${s.path}`, type: "file", size: s.size, mode: 0o644, mtime: s.mtime },
      s.file,
    );
  }
  const trailerOffset = offset;
  const size = Math.ceil((offset + 2 * blockSize) / recordSize) * recordSize;
  return { root, entries, trailerOffset, size };
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

/** Orders paths as a directory walk does: segment by segment, by code point. */
function comparePaths(a: string, b: string): number {
  const x = a.split("/");
  const y = b.split("/");
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1;
  }
  return x.length - y.length;
}

/** Which bytes of the tar to send, and a check to run before each file's bytes are read. */
export interface TarStreamOptions {
  /** First byte to send (default 0). */
  start?: number;
  /** One past the last byte to send (default: the whole tar). */
  end?: number;
  /** Runs before a file's bytes are read; throws to stop the stream (e.g. the file changed). */
  checkFile?: (entry: TarEntry) => Promise<void>;
}

/** Streams the bytes [start, end) of the tar a layout describes. */
export function tarStream(
  layout: TarLayout,
  options: TarStreamOptions = {},
): ReadableStream<Uint8Array> {
  const start = options.start ?? 0;
  const end = options.end ?? layout.size;
  const iterator = tarChunks(layout, start, end, options.checkFile)[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { value, done } = await iterator.next();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    async cancel() {
      await iterator.return?.(undefined);
    },
  }, { highWaterMark: 0 });
}

/** How much of a file one read takes (a large file is read in pieces this size). */
const readSize = 1 << 20;
/** Bytes of files being read ahead of what has been sent, per stream. */
const readAhead = 2 << 20;
/** Small pieces (headers, small files, padding) are sent together, up to this size. */
const chunkSize = 1 << 20;

/** A piece of the tar: bytes at hand, or a range of an entry's file to read. */
type Piece = Uint8Array | { entry: TarEntry; from: number; length: number };

/** The pieces of bytes [start, end) of the tar, in order. */
function* piecesOf(layout: TarLayout, start: number, end: number): Generator<Piece> {
  const { entries } = layout;
  for (let i = firstEntryFrom(entries, start); i < entries.length; i++) {
    const entry = entries[i];
    if (entry.offset >= end) return;
    const header = clip(entry.offset, entry.headerLength, start, end);
    if (header) yield encodeHeader(entry.header).subarray(header.from, header.to);
    const dataOffset = entry.offset + entry.headerLength;
    const data = clip(dataOffset, entry.header.size, start, end);
    if (data && entry.file) {
      for (let from = data.from; from < data.to; from += readSize) {
        yield { entry, from, length: Math.min(readSize, data.to - from) };
      }
    }
    const padding = clip(
      dataOffset + entry.header.size,
      padded(entry.header.size) - entry.header.size,
      start,
      end,
    );
    if (padding) yield new Uint8Array(padding.to - padding.from);
  }
  const trailer = clip(layout.trailerOffset, layout.size - layout.trailerOffset, start, end);
  if (trailer) yield new Uint8Array(trailer.to - trailer.from);
}

/**
 * The tar's bytes as chunks. Files are read ahead of what has been sent (up to `readAhead` bytes,
 * several small files at once, which is what makes a tar of many small files fast), each file
 * checked before its first byte is read; small pieces go out together in chunks of up to
 * `chunkSize`, large ones as they are read.
 */
async function* tarChunks(
  layout: TarLayout,
  start: number,
  end: number,
  checkFile?: (entry: TarEntry) => Promise<void>,
): AsyncGenerator<Uint8Array> {
  const source = piecesOf(layout, start, end);
  const checks = new Map<TarEntry, Promise<void>>();
  /** Pieces on their way, in order, with the file bytes each one counts against `readAhead`. */
  const reads: [Promise<Uint8Array>, number][] = [];
  let reading = 0;
  let next = source.next();
  const readMore = () => {
    while (!next.done && (reads.length === 0 || reading < readAhead)) {
      const piece = next.value;
      next = source.next();
      if (piece instanceof Uint8Array) {
        reads.push([Promise.resolve(piece), 0]);
        continue;
      }
      let checked = checks.get(piece.entry);
      if (!checked) {
        checked = checkFile?.(piece.entry) ?? Promise.resolve();
        checks.set(piece.entry, checked);
      }
      const { entry, from, length } = piece;
      const read = checked.then(() =>
        // A whole file in one operation (open, read and close at once).
        from === 0 && length === entry.header.size
          ? readWhole(entry.file!, length)
          : readRange(entry.file!, from, length)
      );
      read.catch(() => {}); // its failure is thrown where it is awaited, in order
      reads.push([read, piece.length]);
      reading += piece.length;
    }
  };
  let gathered: Uint8Array[] = [];
  let gatheredBytes = 0;
  const takeGathered = () => {
    const chunk = join(gathered, gatheredBytes);
    gathered = [];
    gatheredBytes = 0;
    return chunk;
  };
  readMore();
  while (reads.length > 0) {
    const [read, counted] = reads.shift()!;
    const bytes = await read;
    reading -= counted;
    readMore();
    if (bytes.length >= chunkSize) {
      if (gatheredBytes > 0) yield takeGathered();
      yield bytes;
      continue;
    }
    gathered.push(bytes);
    gatheredBytes += bytes.length;
    if (gatheredBytes >= chunkSize) yield takeGathered();
  }
  if (gatheredBytes > 0) yield takeGathered();
}

/** `parts` as one array (no copy when there is one part). */
function join(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** A whole file of `length` bytes; fails if it is not that long. */
async function readWhole(path: string, length: number): Promise<Uint8Array> {
  const bytes = await Deno.readFile(path);
  if (bytes.length < length) throw new Error(`${path} ended ${length - bytes.length} bytes early`);
  if (bytes.length > length) throw new Error(`${path} grew by ${bytes.length - length} bytes`);
  return bytes;
}

/** Exactly `length` bytes of `path` from `offset`; fails if the file ends before. */
async function readRange(path: string, offset: number, length: number): Promise<Uint8Array> {
  const file = await Deno.open(path);
  try {
    if (offset > 0) await file.seek(offset, Deno.SeekMode.Start);
    const buffer = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      const n = await file.read(buffer.subarray(filled));
      if (n === null) throw new Error(`${path} ended ${length - filled} bytes early`);
      filled += n;
    }
    return buffer;
  } finally {
    file.close();
  }
}

/** The part of the region [offset, offset+length) inside [start, end), relative to the region. */
function clip(offset: number, length: number, start: number, end: number) {
  const from = Math.max(offset, start) - offset;
  const to = Math.min(offset + length, end) - offset;
  return to > from ? { from, to } : undefined;
}

/** Index of the entry that holds byte `position` (binary search over offsets). */
function firstEntryFrom(entries: TarEntry[], position: number): number {
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
  return name.slice(0, 200);
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
