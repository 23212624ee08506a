/**
 * A cart's zip, computed from its file list alone, as its tar is (see tar.ts): stored (not
 * compressed) members whose CRC-32 was computed when each file was pulled, so every header, the
 * central directory and so the size, an ETag and any byte range are known before a byte is read.
 *
 * Names are UTF-8 (flag bit 11) under the root folder, times are the archive's mtimes (a DOS time
 * in UTC, and exactly in an extended-timestamp field). ZIP64 fields are written only where a value
 * does not fit: a file of 4 GiB or more, an offset past 4 GiB, or more than 65 534 members.
 */
import { createHash } from "node:crypto";
import { type TarEntry, type TarLayout, type TarSource, walkOrder } from "./tar.ts";

/** One verified file to put in the zip. */
export interface ZipSource extends TarSource {
  /** The CRC-32 of its bytes. */
  crc32: number;
}

const u32max = 0xffffffff;
const u16max = 0xffff;
/** File mode for members: a regular file, rw-r--r--. */
const fileMode = 0o100644;
const encoder = new TextEncoder();

/**
 * The layout of the zip whose members are named `root/<path>`. `fileOf` says where the bytes of a
 * source's path are on disk. Members come in the tar's order.
 */
export function zipLayout(
  root: string,
  sources: readonly ZipSource[],
  fileOf: (path: string) => string,
): TarLayout {
  const order = walkOrder(sources);
  const names = order.map((i) => `${root}/${sources[i].path}`);
  const paths = order.map((i) => sources[i].path);
  const sizes = Float64Array.from(order, (i) => Number(sources[i].size ?? 0));
  const mtimes = Float64Array.from(order, (i) => Number(sources[i].mtime ?? 0));
  const crcs = Float64Array.from(order, (i) => Number(sources[i].crc32));
  const count = names.length;
  const nameLengths = Uint32Array.from(names, (n) => encoder.encode(n).length);
  for (const [i, length] of nameLengths.entries()) {
    if (length > u16max) throw new RangeError(`${names[i]} is too long a name for a zip`);
  }

  /** Where each local header starts, then where the central directory starts. */
  const offsets = new Float64Array(count + 1);
  let offset = 0;
  for (let i = 0; i < count; i++) {
    offsets[i] = offset;
    offset += localHeaderLength(nameLengths[i], sizes[i]) + sizes[i];
  }
  offsets[count] = offset;
  const centralOffset = offset;
  /** Where each central directory entry starts (relative to the directory), then its end. */
  const centralOffsets = new Float64Array(count + 1);
  let central = 0;
  for (let i = 0; i < count; i++) {
    centralOffsets[i] = central;
    central += centralEntryLength(nameLengths[i], sizes[i], offsets[i]);
  }
  centralOffsets[count] = central;
  const centralSize = central;
  const zip64End = count >= u16max || centralOffset >= u32max || centralSize >= u32max;
  const endLength = (zip64End ? 56 + 20 : 0) + 22;

  const member = (i: number) => ({
    name: names[i],
    size: sizes[i],
    mtime: mtimes[i],
    crc32: crcs[i],
    offset: offsets[i],
  });
  const entry = (i: number): TarEntry => {
    const encoded = localHeader(member(i));
    return {
      offset: offsets[i],
      header: { name: names[i], type: "file", size: sizes[i], mode: 0o644, mtime: mtimes[i] },
      headerLength: encoded.length,
      encoded,
      padding: 0,
      file: fileOf(paths[i]),
    };
  };
  const entryAt = (position: number): number => firstEndingAfter(offsets, count, position);
  const end = () => endRecords({ count, centralOffset, centralSize, zip64: zip64End });
  function* trailer(from: number, to: number): Generator<Uint8Array> {
    for (let i = firstEndingAfter(centralOffsets, count, from); i < count; i++) {
      const start = centralOffsets[i];
      if (start >= to) return;
      const bytes = centralEntry(member(i));
      yield bytes.subarray(Math.max(from - start, 0), Math.min(to - start, bytes.length));
    }
    if (to > centralSize) {
      yield end().subarray(Math.max(from - centralSize, 0), to - centralSize);
    }
  }
  return {
    root,
    count,
    entry,
    entryAt,
    files: count,
    trailerOffset: centralOffset,
    size: centralOffset + centralSize + endLength,
    trailer,
  };
}

/**
 * A strong validator for a zip: equal only for byte-identical zips. Every local header is hashed
 * (names, sizes, times and CRCs); `identity` names what the zip is made of, as for a tar.
 */
export function zipEtag(layout: TarLayout, identity: string): string {
  const hash = createHash("sha256");
  hash.update(`zip\n${identity}\n${layout.size}\n`);
  for (let i = 0; i < layout.count; i++) hash.update(layout.entry(i).encoded!);
  return `"${hash.digest("hex").slice(0, 32)}"`;
}

interface Member {
  name: string;
  size: number;
  mtime: number;
  crc32: number;
  offset: number;
}

const extendedTimeLength = 4 + 5;

function localHeaderLength(nameLength: number, size: number): number {
  return 30 + nameLength + (size >= u32max ? 20 : 0) + extendedTimeLength;
}

function centralEntryLength(nameLength: number, size: number, offset: number): number {
  const wide = (size >= u32max ? 16 : 0) + (offset >= u32max ? 8 : 0);
  return 46 + nameLength + (wide > 0 ? 4 + wide : 0) + extendedTimeLength;
}

/** The local file header, with its ZIP64 sizes when the file is 4 GiB or more. */
function localHeader(m: Member): Uint8Array {
  const name = encoder.encode(m.name);
  const wide = m.size >= u32max;
  const out = new Writer(localHeaderLength(name.length, m.size));
  out.u32(0x04034b50);
  out.u16(wide ? 45 : 20);
  out.u16(0x0800);
  out.u16(0);
  out.dosTime(m.mtime);
  out.u32(m.crc32);
  out.u32(wide ? u32max : m.size);
  out.u32(wide ? u32max : m.size);
  out.u16(name.length);
  out.u16((wide ? 20 : 0) + extendedTimeLength);
  out.bytes(name);
  if (wide) {
    out.u16(0x0001);
    out.u16(16);
    out.u64(m.size);
    out.u64(m.size);
  }
  out.extendedTime(m.mtime);
  return out.done();
}

/** The central directory entry, with ZIP64 fields for the values that do not fit. */
function centralEntry(m: Member): Uint8Array {
  const name = encoder.encode(m.name);
  const wideSize = m.size >= u32max;
  const wideOffset = m.offset >= u32max;
  const wide = (wideSize ? 16 : 0) + (wideOffset ? 8 : 0);
  const needed = wide > 0 ? 45 : 20;
  const out = new Writer(centralEntryLength(name.length, m.size, m.offset));
  out.u32(0x02014b50);
  out.u16((3 << 8) | needed); // made by: Unix
  out.u16(needed);
  out.u16(0x0800);
  out.u16(0);
  out.dosTime(m.mtime);
  out.u32(m.crc32);
  out.u32(wideSize ? u32max : m.size);
  out.u32(wideSize ? u32max : m.size);
  out.u16(name.length);
  out.u16((wide > 0 ? 4 + wide : 0) + extendedTimeLength);
  out.u16(0); // comment
  out.u16(0); // disk
  out.u16(0); // internal attributes
  out.u32(fileMode * 0x10000);
  out.u32(wideOffset ? u32max : m.offset);
  out.bytes(name);
  if (wide > 0) {
    out.u16(0x0001);
    out.u16(wide);
    if (wideSize) {
      out.u64(m.size);
      out.u64(m.size);
    }
    if (wideOffset) out.u64(m.offset);
  }
  out.extendedTime(m.mtime);
  return out.done();
}

/** The end of central directory record, after the ZIP64 one and its locator when needed. */
function endRecords(
  end: { count: number; centralOffset: number; centralSize: number; zip64: boolean },
): Uint8Array {
  const out = new Writer((end.zip64 ? 56 + 20 : 0) + 22);
  const zip64Offset = end.centralOffset + end.centralSize;
  if (end.zip64) {
    out.u32(0x06064b50);
    out.u64(44);
    out.u16((3 << 8) | 45);
    out.u16(45);
    out.u32(0);
    out.u32(0);
    out.u64(end.count);
    out.u64(end.count);
    out.u64(end.centralSize);
    out.u64(end.centralOffset);
    out.u32(0x07064b50);
    out.u32(0);
    out.u64(zip64Offset);
    out.u32(1);
  }
  out.u32(0x06054b50);
  out.u16(0);
  out.u16(0);
  out.u16(Math.min(end.count, u16max));
  out.u16(Math.min(end.count, u16max));
  out.u32(Math.min(end.centralSize, u32max));
  out.u32(Math.min(end.centralOffset, u32max));
  out.u16(0);
  return out.done();
}

/** Little-endian fields into a buffer of known length. */
class Writer {
  private readonly buffer: Uint8Array;
  private readonly view: DataView;
  private at = 0;

  constructor(length: number) {
    this.buffer = new Uint8Array(length);
    this.view = new DataView(this.buffer.buffer);
  }

  u16(value: number): void {
    this.view.setUint16(this.at, value, true);
    this.at += 2;
  }

  u32(value: number): void {
    this.view.setUint32(this.at, value >>> 0, true);
    this.at += 4;
  }

  u64(value: number): void {
    this.view.setBigUint64(this.at, BigInt(value), true);
    this.at += 8;
  }

  bytes(value: Uint8Array): void {
    this.buffer.set(value, this.at);
    this.at += value.length;
  }

  /** DOS time and date (UTC, two-second steps), clamped to the years DOS dates can hold. */
  dosTime(seconds: number): void {
    const date = new Date(
      Math.min(Math.max(seconds * 1000, Date.UTC(1980, 0, 1)), Date.UTC(2107, 11, 31, 23, 59, 58)),
    );
    this.u16(
      (date.getUTCHours() << 11) | (date.getUTCMinutes() << 5) | (date.getUTCSeconds() >> 1),
    );
    this.u16(
      ((date.getUTCFullYear() - 1980) << 9) | ((date.getUTCMonth() + 1) << 5) | date.getUTCDate(),
    );
  }

  /** The extended-timestamp field (0x5455): the mtime in whole seconds, as Info-ZIP writes it. */
  extendedTime(seconds: number): void {
    this.u16(0x5455);
    this.u16(5);
    this.buffer[this.at++] = 1;
    // Read as signed by Info-ZIP: past 2038 it would turn into 1901.
    this.u32(Math.min(Math.max(Math.floor(seconds), 0), 0x7fffffff));
  }

  done(): Uint8Array {
    if (this.at !== this.buffer.length) throw new Error("zip record of the wrong length");
    return this.buffer;
  }
}

/** The first index whose region (`starts[i]` to `starts[i + 1]`) ends after `position`. */
function firstEndingAfter(starts: Float64Array, count: number, position: number): number {
  let low = 0;
  let high = count;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (starts[mid + 1] > position) high = mid;
    else low = mid + 1;
  }
  return low;
}
