/**
 * A mounted directory as an archive (an HSM file system, a POSIX mount, the demo archive): ids are
 * paths relative to it, and every file is on disk. Ids are resolved so neither `..` nor a symlink
 * inside the directory can reach a file outside it.
 */
import { isAbsolute, join } from "node:path";
import { fileStream } from "../io.ts";
import { type Archive, ArchiveError, type FileStatus } from "./archive.ts";

/** A mounted directory (`file:///dir`) as an archive: every file is on disk, ids are paths. */
export class DirectoryArchive implements Archive {
  readonly name: string;
  private root?: string;
  private readonly resolved = new Map<string, string>();

  constructor(private readonly dir: string, private readonly readSize = 1 << 20) {
    this.name = `file://${dir}`;
  }

  stage(): Promise<void> {
    return Promise.resolve();
  }

  /** The directory must be there and readable. */
  async ping(): Promise<void> {
    try {
      if (!(await Deno.stat(this.dir)).isDirectory) throw new Error("not a directory");
      for await (const _ of Deno.readDir(this.dir)) break;
    } catch (err) {
      throw new ArchiveError(
        `archive ${this.name} cannot be read: ${err instanceof Error ? err.message : err}`,
        "outage",
      );
    }
  }

  async status(id: string): Promise<FileStatus> {
    const path = await this.resolve(id);
    this.rememberResolved(id, path);
    const info = await Deno.stat(path);
    if (!info.isFile) {
      throw new ArchiveError(`archive ${this.name} has no file ${id} (not a file)`, "permanent");
    }
    return {
      onDisk: true,
      media: "disk",
      size: info.size,
      mtime: info.mtime ? Math.floor(info.mtime.getTime() / 1000) : undefined,
    };
  }

  async open(id: string): Promise<ReadableStream<Uint8Array>> {
    // A pull follows the file's status at once: the path resolved then serves.
    const path = this.resolved.get(id) ?? await this.resolve(id);
    this.resolved.delete(id);
    return fileStream(path, { chunkSize: this.readSize });
  }

  /** Keeps the last few paths `status` resolved, for the pulls that follow. */
  private rememberResolved(id: string, path: string) {
    if (this.resolved.size >= 256) this.resolved.delete(this.resolved.keys().next().value!);
    this.resolved.set(id, path);
  }

  private async resolve(id: string): Promise<string> {
    const relative = id.startsWith("/") ? id.slice(1) : id;
    if (isAbsolute(relative) || relative.includes("\0") || relative.split("/").includes("..")) {
      throw new ArchiveError(
        `file id ${JSON.stringify(id)} is not a path inside ${this.name}`,
        "permanent",
      );
    }
    let real: string;
    try {
      // Resolved once it exists: the mount point is the administrator's choice.
      this.root ??= await Deno.realPath(this.dir);
    } catch {
      throw new ArchiveError(`archive directory ${this.dir} is not there`, "outage");
    }
    const root = this.root;
    try {
      real = await Deno.realPath(join(root, relative));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new ArchiveError(`archive ${this.name} has no file ${id}`, "permanent");
      }
      throw new ArchiveError(
        `cannot read file ${id} in ${this.name}: ${(err as Error).message}`,
        "file",
      );
    }
    if (!real.startsWith(root + "/")) {
      throw new ArchiveError(
        `file id ${JSON.stringify(id)} leads outside ${this.name}`,
        "permanent",
      );
    }
    return real;
  }
}
