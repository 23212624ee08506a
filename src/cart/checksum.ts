/**
 * The checksum types a cart request may name, by their Python hashlib names (what Pacifica
 * metadata uses), mapped to Node's crypto names. Names are case-insensitive and `-`/`_` are
 * interchangeable; hex digests compare case-insensitively.
 */
import { createHash, type Hash } from "node:crypto";

interface Algorithm {
  /** The hashlib name, as reports show it. */
  name: string;
  node: string;
  hexLength: number;
}

const algorithms: Algorithm[] = [
  ["md5", "md5", 32],
  ["sha1", "sha1", 40],
  ["sha224", "sha224", 56],
  ["sha256", "sha256", 64],
  ["sha384", "sha384", 96],
  ["sha512", "sha512", 128],
  ["sha512_224", "sha512-224", 56],
  ["sha512_256", "sha512-256", 64],
  ["sha3_224", "sha3-224", 56],
  ["sha3_256", "sha3-256", 64],
  ["sha3_384", "sha3-384", 96],
  ["sha3_512", "sha3-512", 128],
  ["blake2b", "blake2b512", 128],
  ["blake2s", "blake2s256", 64],
  ["ripemd160", "ripemd160", 40],
].map(([name, node, hexLength]) => ({ name, node, hexLength } as Algorithm));

const byName = new Map(algorithms.map((a) => [a.name, a]));

/** The names accepted, for error messages and docs. */
export const checksumNames: readonly string[] = algorithms.map((a) => a.name);

/** The algorithm a request's `hashtype` names, or undefined when cartd does not know it. */
export function checksumAlgorithm(hashtype: string): Algorithm | undefined {
  return byName.get(hashtype.toLowerCase().replaceAll("-", "_"));
}

/** A running digest over the bytes of a pull. */
export function createChecksum(hashtype: string): Hash {
  const algorithm = checksumAlgorithm(hashtype);
  if (!algorithm) throw new Error(`unsupported hash type ${hashtype}`);
  return createHash(algorithm.node);
}

/** Whether two hex digests are equal, whatever their case (archives and requests differ). */
export function sameDigest(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}
