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

export interface Archive {
  /** A short name for messages: the archive's URL. */
  readonly name: string;
  /** Asks the archive to bring the file to disk (a tape recall); no-op where files are on disk. */
  stage(id: string, signal?: AbortSignal): Promise<void>;
  status(id: string, signal?: AbortSignal): Promise<FileStatus>;
  /** The whole file, streamed. */
  open(id: string, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>>;
}

/**
 * A failed archive request. `transient` failures (network errors, 5xx, cut bodies) are worth
 * trying again later; the others (404, a file the archive does not have, malformed answers) are not.
 */
export class ArchiveError extends Error {
  constructor(message: string, readonly transient: boolean) {
    super(message);
    this.name = "ArchiveError";
  }
}
