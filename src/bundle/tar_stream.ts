/**
 * Streams the bytes of a tar layout straight from the verified files. Files are read ahead of what
 * has been sent (several small files at once, which is what makes a tar of many small files fast;
 * a large file in pieces, through one open handle), and small pieces go out together. The bytes
 * read ahead come from a budget shared by every download of the process, so memory stays flat
 * however many clients download at once: each gets less read-ahead, not more memory.
 */
import { encodeHeader, padded } from "./tar_header.ts";
import type { TarEntry, TarLayout } from "./tar.ts";
import { CartdError } from "../errors.ts";

/** Which bytes of the tar to send, and a check to run before each file's bytes are read. */
export interface TarStreamOptions {
  /** First byte to send (default 0). */
  start?: number;
  /** One past the last byte to send (default: the whole tar). */
  end?: number;
  /** Runs before a file's bytes are read; throws to stop the stream (e.g. the file changed). */
  checkFile?: (entry: TarEntry) => Promise<void>;
  /**
   * Sends the bytes at hand before waiting for the next piece (a stream that waits for files to
   * be verified), rather than gathering them into full chunks.
   */
  flushBeforeWaits?: boolean;
  /** Told when the reader cancels the stream. */
  onCancel?: () => void;
}

/** Streams the bytes [start, end) of the tar a layout describes. */
export function tarStream(
  layout: TarLayout,
  options: TarStreamOptions = {},
): ReadableStream<Uint8Array> {
  const start = options.start ?? 0;
  const end = options.end ?? layout.size;
  const iterator = tarChunks(layout, start, end, options.checkFile, options.flushBeforeWaits)[
    Symbol.asyncIterator
  ]();
  // A byte stream: `Deno.serve` sends those markedly faster than a default stream.
  return new ReadableStream({
    type: "bytes",
    async pull(controller) {
      const { value, done } = await iterator.next();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    async cancel() {
      // A read waiting on something (a file not verified yet) is told first, or the generator
      // would finish only once it came.
      options.onCancel?.();
      await iterator.return?.(undefined);
    },
  });
}

/** Bytes of files read ahead and not yet sent, over all downloads of this process. */
const sharedReadAhead = 16 << 20;
/** A download's read-ahead never goes below this, nor above `largestReadAhead`. */
const smallestReadAhead = 128 << 10;
const largestReadAhead = 2 << 20;
/**
 * Files a download reads at once, at most: enough to keep the disk busy with small files, and a
 * bound on what a cart of many tiny files holds in flight (their bytes alone would let thousands).
 */
const filesInFlight = 16;

/** How many tar streams are running in this process (they share `sharedReadAhead`). */
let streaming = 0;

/** A download's share of the read-ahead now: less as more downloads run. */
function readAheadShare(): number {
  const share = Math.floor(sharedReadAhead / Math.max(streaming, 1));
  return Math.min(Math.max(share, smallestReadAhead), largestReadAhead);
}

/**
 * The size of the chunks a download sends, and of its reads of a large file: half its read-ahead
 * (two reads in flight), in whole 64 KiB. The server holds a chunk or two per connection as it
 * sends them, so with many downloads the chunks are smaller.
 */
function pieceSizeFor(readAhead: number): number {
  return Math.max(64 << 10, Math.floor(readAhead / 2 / (64 << 10)) * (64 << 10));
}

/**
 * A piece of the stream: bytes at hand, a run of zero bytes, or a range of an entry's file to read.
 * (The stream serves any layout of src/bundle: a tar, a zip, or one file alone.)
 */
type Piece = Uint8Array | number | { entry: TarEntry; from: number; length: number };

/** The pieces of bytes [start, end) of the tar, in order; file ranges are cut by `readSize()`. */
function* piecesOf(
  layout: TarLayout,
  start: number,
  end: number,
  readSize: () => number,
): Generator<Piece> {
  for (let i = layout.entryAt(start); i < layout.count; i++) {
    const entry = layout.entry(i);
    if (entry.offset >= end) return;
    const header = clip(entry.offset, entry.headerLength, start, end);
    if (header) {
      yield (entry.encoded ?? encodeHeader(entry.header)).subarray(header.from, header.to);
    }
    const dataOffset = entry.offset + entry.headerLength;
    const data = clip(dataOffset, entry.header.size, start, end);
    if (data && entry.file) {
      for (let from = data.from; from < data.to;) {
        const length = Math.min(readSize(), data.to - from);
        yield { entry, from, length };
        from += length;
      }
    }
    const padding = clip(
      dataOffset + entry.header.size,
      entry.padding ?? padded(entry.header.size) - entry.header.size,
      start,
      end,
    );
    if (padding) yield padding.to - padding.from;
  }
  const trailer = clip(layout.trailerOffset, layout.size - layout.trailerOffset, start, end);
  if (trailer && layout.trailer) yield* layout.trailer(trailer.from, trailer.to);
  else if (trailer) yield trailer.to - trailer.from;
}

/**
 * The tar's bytes as chunks: files read ahead (see the module comment), each checked before its
 * first byte is read; small pieces sent together in chunks of up to the piece size, large ones as
 * they are read.
 */
async function* tarChunks(
  layout: TarLayout,
  start: number,
  end: number,
  checkFile?: (entry: TarEntry) => Promise<void>,
  flushBeforeWaits = false,
): AsyncGenerator<Uint8Array> {
  let readAhead = readAheadShare();
  const pieceSize = () => pieceSizeFor(readAhead);
  const source = piecesOf(layout, start, end, pieceSize);
  const checks = new Map<TarEntry, Promise<void>>();
  /** The file being read in pieces, if any (pieces come in order, so one at a time). */
  let reader: PieceReader | undefined;
  /**
   * Pieces on their way, in order, with the bytes each one counts against the read-ahead and
   * whether it reads a file.
   */
  const reads: [Promise<Uint8Array> | Uint8Array | number, number, boolean][] = [];
  let reading = 0;
  let fileReads = 0;
  /** File reads that have finished (so awaiting them does not wait); weak, so it holds no bytes. */
  const settled = new WeakSet<Promise<Uint8Array>>();
  let next!: IteratorResult<Piece>;
  const readMore = () => {
    readAhead = readAheadShare();
    while (
      !next.done &&
      (reads.length === 0 || (reading < readAhead && fileReads < filesInFlight))
    ) {
      const piece = next.value;
      next = source.next();
      if (typeof piece === "number" || piece instanceof Uint8Array) {
        const length = typeof piece === "number" ? piece : piece.length;
        reads.push([piece, length, false]);
        reading += length;
        continue;
      }
      const { entry, from, length } = piece;
      let checked = checks.get(entry);
      if (!checked) {
        checked = checkFile?.(entry) ?? Promise.resolve();
        checks.set(entry, checked);
        // Only the entry being read needs its check kept.
        if (checks.size > 64) checks.delete(checks.keys().next().value!);
      }
      let read: Promise<Uint8Array>;
      if (from === 0 && length === entry.header.size) {
        // A whole file in one operation (open, read and close at once).
        read = checked.then(() => readWhole(entry.file!, length));
      } else {
        if (reader?.entry !== entry) {
          reader?.close();
          reader = new PieceReader(entry, checked);
        }
        read = reader.read(from, length);
      }
      read.then(() => settled.add(read), () => settled.add(read)); // (its failure is thrown where it is awaited, in order)
      reads.push([read, length, true]);
      reading += length;
      fileReads++;
    }
  };
  // Small pieces are copied into one chunk; zero runs need no copy, as a new chunk is all zeros.
  let chunk: Uint8Array | undefined;
  let filled = 0;
  const takeChunk = () => {
    const out = chunk!.subarray(0, filled);
    chunk = undefined;
    filled = 0;
    return out;
  };
  streaming++;
  try {
    next = source.next();
    readMore();
    while (reads.length > 0) {
      const [read, counted, fromFile] = reads.shift()!;
      if (flushBeforeWaits && filled > 0 && read instanceof Promise && !settled.has(read)) {
        yield takeChunk();
      }
      const piece = read instanceof Promise ? await read : read;
      reading -= counted;
      if (fromFile) fileReads--;
      readMore();
      const chunkSize = pieceSize();
      if (typeof piece !== "number" && piece.length >= chunkSize) {
        if (filled > 0) yield takeChunk();
        yield piece;
        continue;
      }
      let left = typeof piece === "number" ? piece : piece.length;
      while (left > 0) {
        chunk ??= new Uint8Array(chunkSize);
        const take = Math.min(left, chunk.length - filled);
        if (typeof piece !== "number") {
          const at = piece.length - left;
          chunk.set(piece.subarray(at, at + take), filled);
        }
        filled += take;
        left -= take;
        if (filled === chunk.length) yield takeChunk();
      }
    }
    if (filled > 0) yield takeChunk();
  } finally {
    streaming--;
    reader?.close();
  }
}

/**
 * Reads one file in pieces, in order, through one open handle (opened when the first piece is
 * read, after the file's check). The file must still have the size the layout gave it.
 */
class PieceReader {
  private file?: Promise<Deno.FsFile>;
  private position = 0;
  private last: Promise<unknown>;

  constructor(readonly entry: TarEntry, checked: Promise<void>) {
    this.last = checked;
  }

  /** Bytes [from, from + length) of the file; reads are queued, one after the other. */
  read(from: number, length: number): Promise<Uint8Array> {
    const result = this.last.then(() => this.readNow(from, length));
    this.last = result.catch(() => {});
    return result;
  }

  /** Closes the handle once the reads asked for are done (closing it under one would fail it). */
  close(): void {
    this.last.then(() => this.file?.then((f) => f.close(), () => {})).catch(() => {});
  }

  private async readNow(from: number, length: number): Promise<Uint8Array> {
    const path = this.entry.file!;
    this.file ??= openSized(path, this.entry.header.size);
    const file = await this.file;
    if (from !== this.position) await file.seek(from, Deno.SeekMode.Start);
    const buffer = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      const n = await file.read(buffer.subarray(filled));
      if (n === null) throw changed(`${path} ended ${length - filled} bytes early`);
      filled += n;
    }
    this.position = from + length;
    return buffer;
  }
}

/** Opens a file that must be `size` bytes long. */
async function openSized(path: string, size: number): Promise<Deno.FsFile> {
  const file = await Deno.open(path);
  try {
    const actual = (await file.stat()).size;
    if (actual !== size) throw changed(`${path} is ${actual} bytes, not ${size}`);
    return file;
  } catch (err) {
    file.close();
    throw err;
  }
}

/** A whole file of `length` bytes; fails if it is not that long. */
async function readWhole(path: string, length: number): Promise<Uint8Array> {
  const bytes = await Deno.readFile(path);
  if (bytes.length < length) throw changed(`${path} ended ${length - bytes.length} bytes early`);
  if (bytes.length > length) throw changed(`${path} grew by ${bytes.length - length} bytes`);
  return bytes;
}

/** A file that is not what the layout says any more: the stream stops rather than send it. */
function changed(what: string): CartdError {
  return new CartdError(
    "failure",
    `${what}: the file changed on the volume since it was verified; the download was stopped`,
  );
}

/** The part of the region [offset, offset+length) inside [start, end), relative to the region. */
function clip(offset: number, length: number, start: number, end: number) {
  const from = Math.max(offset, start) - offset;
  const to = Math.min(offset + length, end) - offset;
  return to > from ? { from, to } : undefined;
}
