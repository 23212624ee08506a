/**
 * Validation of a cart request, `{"fileids": [{"id", "path", "hashtype", "hashsum"}], "bundle"?}`,
 * and of cart uids. Everything a worker, the volume or a tar will later trust is checked here, once,
 * with a message that names the offending field; nothing is written for a refused request.
 */
import { createHash } from "node:crypto";
import { parseBoolean } from "../config.ts";
import { invalidInput } from "../errors.ts";
import { controlCharacter as controlChars, printableAscii } from "../text.ts";
import { checksumAlgorithm, checksumNames } from "./checksum.ts";

/** One file of a validated cart request. */
export interface RequestedFile {
  /** The archive's id for the file, as a string (integers are written in decimal). */
  id: string;
  /** Relative path inside the cart, normalised: no leading `/`, no empty or `.` segments. */
  path: string;
  /** The hashlib name of the checksum type, lower case. */
  hashtype: string;
  /** Hex digest, lower case; empty when the request gave none (the file is then unverified). */
  hashsum: string;
}

/** A validated cart request: its files, normalised, and its `bundle` key if it had one. */
export interface CartRequest {
  files: RequestedFile[];
  /** The request's `bundle` key, when it has one. */
  bundle?: boolean;
}

const maxSegmentBytes = 255;
const maxPathBytes = 4096;
const maxIdLength = 4096;
const encoder = new TextEncoder();
/** Characters drawn like `/`, `\` or `.` that Unicode normalisation does not turn into them. */
const lookAlikes =
  /[\u2215\u2044\u29f8\u2571\u29f5\u2216\u29f9\ufe68\u2024\u2025\u2026\ufe52\u0701\u0702\u2e31]/;

/** Throws unless `uid` can name a cart: 1–255 characters, not `-`, `.` or `..`, no `/` or controls. */
export function validateUid(uid: string): string {
  if (uid === "") throw invalidInput("cart uid is empty");
  if (uid.length > 255) {
    throw invalidInput(`cart uid is ${uid.length} characters long (at most 255)`);
  }
  if (uid === "-") throw invalidInput('cart uid "-" is reserved');
  if (uid === "." || uid === "..") {
    throw invalidInput(`cart uid ${JSON.stringify(uid)} is not allowed`);
  }
  if (uid.includes("/")) throw invalidInput(`cart uid ${JSON.stringify(uid)} contains "/"`);
  if (controlChars.test(uid)) {
    throw invalidInput(`cart uid ${JSON.stringify(uid)} contains a NUL or control character`);
  }
  return uid;
}

/** Parses JSON text into a validated request. */
export function parseCartRequest(text: string): CartRequest {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw invalidInput("Invalid JSON document");
  }
  return validateCartRequest(body);
}

/** Checks a decoded JSON body and returns the normalised request. */
function validateCartRequest(body: unknown): CartRequest {
  if (!isObject(body)) {
    throw invalidInput("cart request must be a JSON object with a fileids array");
  }
  if (!("fileids" in body)) throw invalidInput('cart request is missing "fileids"');
  const fileids = body.fileids;
  if (!Array.isArray(fileids)) throw invalidInput('"fileids" must be an array');

  const files = fileids.map((item, i) => validateFile(item, `fileids[${i}]`));
  checkPathsDistinct(files);

  const request: CartRequest = { files };
  if ("bundle" in body && body.bundle !== null) request.bundle = toBundleFlag(body.bundle);
  return request;
}

/** A digest of the normalised request: equal requests give equal fingerprints. */
export function fingerprint(request: CartRequest, bundle: boolean): string {
  const hash = createHash("sha256");
  hash.update(JSON.stringify({ bundle }));
  for (const f of request.files) {
    hash.update(`\n${JSON.stringify([f.id, f.path, f.hashtype, f.hashsum])}`);
  }
  return hash.digest("hex");
}

function validateFile(item: unknown, where: string): RequestedFile {
  if (!isObject(item)) {
    throw invalidInput(`${where} must be an object with id, path, hashtype and hashsum`);
  }
  for (const key of ["id", "path", "hashtype", "hashsum"]) {
    if (!(key in item)) throw invalidInput(`${where} is missing "${key}"`);
  }
  return {
    id: validateId(item.id, `${where}.id`),
    path: normalisePath(item.path, `${where}.path`),
    ...validateChecksum(item.hashtype, item.hashsum, where),
  };
}

function validateId(id: unknown, where: string): string {
  if (typeof id === "number") {
    if (!Number.isSafeInteger(id)) throw invalidInput(`${where} must be an integer or a string`);
    return String(id);
  }
  if (typeof id !== "string") throw invalidInput(`${where} must be an integer or a string`);
  if (id === "") throw invalidInput(`${where} is empty`);
  if (id.length > maxIdLength) {
    throw invalidInput(`${where} is longer than ${maxIdLength} characters`);
  }
  if (controlChars.test(id)) throw invalidInput(`${where} contains a NUL or control character`);
  return id;
}

/**
 * The path a file takes inside the cart. One leading `/` is dropped (clients send `/name` for a
 * file at the top); what remains must be relative, without `..`, backslashes, control characters,
 * or characters that read as `/` or `.` once Unicode-normalised.
 */
export function normalisePath(path: unknown, where = "path"): string {
  if (typeof path !== "string") throw invalidInput(`${where} must be a string`);
  const refuse = (why: string): never => {
    const show = JSON.stringify(path.length > 200 ? `${path.slice(0, 200)}…` : path);
    throw invalidInput(`${where} ${show} ${why}`);
  };
  if (controlChars.test(path)) refuse("contains a NUL or control character");
  if (path.includes("\\")) refuse("contains a backslash");
  const relative = path.startsWith("/") ? path.slice(1) : path;
  if (relative.startsWith("/")) refuse("is an absolute path");
  const segments = relative.split("/").filter((s) => s !== "" && s !== ".");
  if (segments.length === 0) refuse("names no file");
  for (const segment of segments) {
    if (segment === "..") refuse('has a ".." segment');
    // Plain ASCII is its own NFKC form; only other text can hide a "/" or "." look-alike.
    if (!printableAscii.test(segment)) {
      const folded = segment.normalize("NFKC");
      if (
        folded.includes("/") || folded.includes("\\") || folded === "." || folded === ".." ||
        lookAlikes.test(segment)
      ) {
        refuse("contains a character that reads as a path separator or dot");
      }
    }
    // UTF-8 takes at most 3 bytes per UTF-16 unit: only long names need measuring.
    if (segment.length * 3 > maxSegmentBytes && encoder.encode(segment).length > maxSegmentBytes) {
      refuse(`has a name longer than ${maxSegmentBytes} bytes`);
    }
  }
  const normalised = segments.join("/");
  if (encoder.encode(normalised).length > maxPathBytes) {
    refuse(`is longer than ${maxPathBytes} bytes`);
  }
  return normalised;
}

function validateChecksum(hashtype: unknown, hashsum: unknown, where: string) {
  if (typeof hashtype !== "string") throw invalidInput(`${where}.hashtype must be a string`);
  if (typeof hashsum !== "string") throw invalidInput(`${where}.hashsum must be a string`);
  const algorithm = checksumAlgorithm(hashtype);
  if (!algorithm) {
    throw invalidInput(
      `${where}.hashtype: unknown hash type ${JSON.stringify(hashtype.slice(0, 64))} ` +
        `(known: ${checksumNames.join(", ")})`,
    );
  }
  const sum = hashsum.trim().toLowerCase();
  if (sum !== "" && (sum.length !== algorithm.hexLength || !/^[0-9a-f]+$/.test(sum))) {
    throw invalidInput(
      `${where}.hashsum is not a ${algorithm.hexLength}-digit hex ${algorithm.name} digest`,
    );
  }
  return { hashtype: algorithm.name, hashsum: sum };
}

/** Two files may not share a path, and no file may sit where another needs a directory. */
function checkPathsDistinct(files: RequestedFile[]) {
  const seen = new Map<string, number>();
  files.forEach((f, i) => {
    const before = seen.get(f.path);
    if (before !== undefined) {
      throw invalidInput(
        `fileids[${i}].path ${JSON.stringify(f.path)} is also the path of fileids[${before}]`,
      );
    }
    seen.set(f.path, i);
  });
  files.forEach((f, i) => {
    for (let slash = f.path.indexOf("/"); slash !== -1; slash = f.path.indexOf("/", slash + 1)) {
      const parent = f.path.slice(0, slash);
      const clash = seen.get(parent);
      if (clash !== undefined) {
        throw invalidInput(
          `fileids[${i}].path ${JSON.stringify(f.path)} needs ${JSON.stringify(parent)} as a ` +
            `directory, but fileids[${clash}] is a file there`,
        );
      }
    }
  });
}

function toBundleFlag(value: unknown): boolean {
  if (typeof value === "boolean") return value;
  if (typeof value === "number") return value !== 0;
  if (typeof value === "string") {
    const flag = parseBoolean(value);
    if (flag !== undefined) return flag;
  }
  throw invalidInput('"bundle" must be true or false');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
