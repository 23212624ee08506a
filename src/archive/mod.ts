/** Picks the archive implementation a URL names. */
import { fileURLToPath } from "node:url";
import { configError } from "../errors.ts";
import type { Archive } from "./archive.ts";
import { DirectoryArchive } from "./directory.ts";
import { PacificaArchive } from "./pacifica.ts";

export type { Archive, FileStatus } from "./archive.ts";
export { ArchiveError } from "./archive.ts";

/** Tuning: how much a mounted directory is read at a time, how long a request may stall. */
export interface ArchiveOptions {
  transferSize?: number;
  transferTimeout?: number;
}

/** The archive at `url`. */
export function openArchive(url: string, options: ArchiveOptions = {}): Archive {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw configError(`bad value for [archiveinterface] url: ${JSON.stringify(url)} is not a URL`);
  }
  if (parsed.protocol === "http:" || parsed.protocol === "https:") {
    return new PacificaArchive(url, options.transferTimeout);
  }
  if (parsed.protocol === "file:") {
    return new DirectoryArchive(fileURLToPath(parsed), options.transferSize);
  }
  throw configError(
    `bad value for [archiveinterface] url: ${
      JSON.stringify(url)
    } (use http://, https:// or file:///dir)`,
  );
}
