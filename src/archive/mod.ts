/** Picks the archive implementation a URL names. */
import { fileURLToPath } from "node:url";
import { configError } from "../errors.ts";
import { maskSecrets } from "../text.ts";
import type { Archive } from "./archive.ts";
import { DirectoryArchive } from "./directory.ts";
import { PacificaArchive } from "./pacifica.ts";

export type { Archive, ArchiveFailure, FileStatus } from "./archive.ts";
export { ArchiveError } from "./archive.ts";

/** Tuning: how much a mounted directory is read at a time, how long a request may stall. */
export interface ArchiveOptions {
  transferSize?: number;
  transferTimeout?: number;
}

/** Why `url` cannot name an archive, or undefined when it can. */
export function archiveUrlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `${
      JSON.stringify(maskSecrets(url))
    } is not a URL (use http://host:port/ or file:///dir)`;
  }
  if (parsed.protocol === "http:" || parsed.protocol === "https:") return undefined;
  if (parsed.protocol === "file:") {
    if (parsed.host !== "") {
      return `${JSON.stringify(maskSecrets(url))} names a host; a mounted directory is file:///dir`;
    }
    return undefined;
  }
  return `${
    JSON.stringify(maskSecrets(url))
  } is not an archive URL (use http://, https:// or file:///dir)`;
}

/** The archive at `url` (which the configuration has already checked). */
export function openArchive(url: string, options: ArchiveOptions = {}): Archive {
  const problem = archiveUrlProblem(url);
  if (problem) throw configError(`bad value for [archiveinterface] url: ${problem}`);
  const parsed = new URL(url);
  if (parsed.protocol === "file:") {
    return new DirectoryArchive(fileURLToPath(parsed), options.transferSize);
  }
  return new PacificaArchive(url, options.transferTimeout);
}
