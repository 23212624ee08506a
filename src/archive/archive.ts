/**
 * Where files come from, behind one interface: the Pacifica archive interface over HTTP, or a
 * mounted directory. Workers only see `stage`, `status` and `open`.
 */

/** What the archive says of a file. */
export interface FileStatus {
  /** True when the file is on disk on the archive side and can be pulled now. */
  onDisk: boolean;
  /** The storage media the archive reported (`disk`, `tape`, ...). */
  media: string;
  size: number;
  /** Modification time in whole seconds since the epoch, when the archive gave one. */
  mtime?: number;
}

/** An archive as workers see it: stage a file, ask its status, read it. */
export interface Archive {
  /** A short name for messages: the archive's URL. */
  readonly name: string;
  /** Asks the archive to bring the file to disk (a tape recall); no-op where files are on disk. */
  stage(id: string, signal?: AbortSignal): Promise<void>;
  status(id: string, signal?: AbortSignal): Promise<FileStatus>;
  /** The whole file, streamed. */
  open(id: string, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>>;
  /** Whether the archive answers at all (the health check's question); throws if not. */
  ping(signal?: AbortSignal): Promise<void>;
}

/**
 * What a failed archive request says about trying again:
 * - `outage`: the archive as a whole is not answering (it cannot be reached, gives no answer in
 *   time, or asks for time with 408 or 429): wait it out, for up to `archive_outage_wait`;
 * - `file`: the archive answers, but this file failed (it is missing, its body came short, its
 *   status was malformed): try a few more times, up to `retry_limit`;
 * - `unknown`: a 5xx (502–504 included) or a body cut off, which may be either; the worker tells
 *   them apart by whether the archive still answers requests of that kind for other files;
 * - `permanent`: trying again cannot help (404 and other 4xx, an id the archive refuses).
 */
export type ArchiveFailure = "outage" | "file" | "unknown" | "permanent";

/** A failed archive request, with what it means for trying again. */
export class ArchiveError extends Error {
  constructor(message: string, readonly failure: ArchiveFailure) {
    super(message);
    this.name = "ArchiveError";
  }
}
