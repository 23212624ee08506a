/**
 * Encodes POSIX tar headers: a ustar block, preceded by a PAX extended header when a name does not
 * fit ustar (or is not ASCII) or a size does not fit its 11 octal digits (8 GiB and over).
 * Owner and group are fixed (0/root), so equal inputs always give equal bytes.
 */
import { notPrintableAscii, printableAscii } from "../text.ts";

export const blockSize = 512;

/** What a tar header says of an entry. */
export interface HeaderFields {
  /** Full member name; directories end with `/`. */
  name: string;
  type: "file" | "directory";
  size: number;
  mode: number;
  /** Seconds since the epoch. */
  mtime: number;
}

const encoder = new TextEncoder();
const maxOctalSize = 0o77777777777;

/** The header bytes for one member (a multiple of 512). */
export function encodeHeader(fields: HeaderFields): Uint8Array {
  const pax: [string, string][] = [];
  const nameBytes = encoder.encode(fields.name);
  const split = printableAscii.test(fields.name) ? splitUstarName(nameBytes) : undefined;
  if (!split) pax.push(["path", fields.name]);
  if (fields.size > maxOctalSize) pax.push(["size", String(fields.size)]);

  const ustar = ustarBlock({
    name: split?.name ?? asciiFallback(fields.name, 100),
    prefix: split?.prefix ?? new Uint8Array(0),
    size: fields.size > maxOctalSize ? 0 : fields.size,
    mode: fields.mode,
    mtime: fields.mtime,
    typeflag: fields.type === "directory" ? "5" : "0",
  });
  if (pax.length === 0) return ustar;

  const records = encoder.encode(pax.map(([k, v]) => paxRecord(k, v)).join(""));
  const paxHeader = ustarBlock({
    name: asciiFallback(`PaxHeaders/${fields.name.replace(/\/$/, "")}`, 100),
    prefix: new Uint8Array(0),
    size: records.length,
    mode: 0o644,
    mtime: fields.mtime,
    typeflag: "x",
  });
  const out = new Uint8Array(blockSize + padded(records.length) + blockSize);
  out.set(paxHeader, 0);
  out.set(records, blockSize);
  out.set(ustar, blockSize + padded(records.length));
  return out;
}

/** The length `encodeHeader` would return; without building it in the usual case (one block). */
export function headerLength(fields: HeaderFields): number {
  const { name } = fields;
  const oneBlock = fields.size <= maxOctalSize && printableAscii.test(name) &&
    (name.length <= 100 || splitUstarName(encoder.encode(name)) !== undefined);
  return oneBlock ? blockSize : encodeHeader(fields).length;
}

/** `n` rounded up to a whole number of blocks. */
export function padded(n: number): number {
  return Math.ceil(n / blockSize) * blockSize;
}

/** A PAX record: its decimal length counts itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLength = encoder.encode(body).length;
  let length = bodyLength + String(bodyLength).length;
  if (String(length).length !== String(bodyLength).length) {
    length = bodyLength + String(length).length;
  }
  return `${length}${body}`;
}

/** Splits a name into ustar's 155-byte prefix and 100-byte name at a `/`, if it can be. */
function splitUstarName(bytes: Uint8Array): { name: Uint8Array; prefix: Uint8Array } | undefined {
  if (bytes.length <= 100) return { name: bytes, prefix: new Uint8Array(0) };
  if (bytes.length > 256) return undefined;
  // The split `/` belongs to neither part; a trailing `/` (a directory) must stay in the name.
  for (let i = Math.min(155, bytes.length - 2); i > 0; i--) {
    if (bytes[i] === 0x2f && bytes.length - i - 1 <= 100 && bytes.length - i - 1 > 0) {
      return { name: bytes.subarray(i + 1), prefix: bytes.subarray(0, i) };
    }
  }
  return undefined;
}

/** A printable stand-in for a name that only PAX carries in full. */
function asciiFallback(name: string, max: number): Uint8Array {
  const ascii = name.replace(notPrintableAscii, "_");
  return encoder.encode(ascii.length > max ? ascii.slice(ascii.length - max) : ascii);
}

interface UstarFields {
  name: Uint8Array;
  prefix: Uint8Array;
  size: number;
  mode: number;
  mtime: number;
  typeflag: string;
}

/** What every ustar block of cartd's has in common: owner, group and the format's magic. */
const ustarTemplate = (() => {
  const block = new Uint8Array(blockSize);
  writeOctal(block, 108, 8, 0); // uid
  writeOctal(block, 116, 8, 0); // gid
  block.set(encoder.encode("ustar\u000000"), 257);
  block.set(encoder.encode("root"), 265);
  block.set(encoder.encode("root"), 297);
  return block;
})();

function ustarBlock(f: UstarFields): Uint8Array {
  const block = ustarTemplate.slice();
  block.set(f.name.subarray(0, 100), 0);
  writeOctal(block, 100, 8, f.mode);
  writeOctal(block, 124, 12, f.size);
  writeOctal(block, 136, 12, Math.max(0, Math.min(f.mtime, maxOctalSize)));
  block.fill(0x20, 148, 156); // checksum counts as spaces while summing
  block[156] = f.typeflag.charCodeAt(0);
  block.set(f.prefix.subarray(0, 155), 345);
  let sum = 0;
  for (let i = 0; i < blockSize; i++) sum += block[i];
  writeOctal(block, 148, 7, sum);
  block[155] = 0x20;
  return block;
}

/** Zero-padded octal, NUL-terminated, in a field of `width` bytes. */
function writeOctal(block: Uint8Array, offset: number, width: number, value: number) {
  let rest = Math.floor(value);
  for (let i = offset + width - 2; i >= offset; i--) {
    block[i] = 0x30 + (rest % 8);
    rest = Math.floor(rest / 8);
  }
  block[offset + width - 1] = 0;
}
