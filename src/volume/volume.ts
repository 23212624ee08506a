/**
 * The local volume: the only code that turns a cart's file path into a path on disk. Each cart
 * lives in `<volume>/carts/<cart id>/`: verified files under `data/`, pulls in progress under
 * `partial/` (never part of a tar). Verified files are also hard links in `<volume>/cache/`, the
 * shared cache, where they outlive their carts. Paths were validated when the cart was created; they are
 * checked again here, and directories are resolved so a planted symlink cannot lead outside.
 */
import { existsSync, statfsSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { type SpaceAmount, spaceBytes } from "../config.ts";
import { CartdError } from "../errors.ts";

/** The cart volume on disk: safe paths, free space, cart folders. */
export class Volume {
  readonly root: string;
  private realRoot?: string;
  /** The cache folder was made (made again after any failure to link into it). */
  private cacheMade = false;

  constructor(root: string) {
    this.root = resolve(root);
  }

  cartDir(cartId: number): string {
    return join(this.root, "carts", String(cartId));
  }

  dataRoot(cartId: number): string {
    return join(this.cartDir(cartId), "data");
  }

  /** Where a verified file of the cart lives. */
  filePath(cartId: number, relative: string): string {
    const segments = relative.split("/");
    if (
      isAbsolute(relative) || relative.includes("\0") ||
      segments.some((s) => s === "" || s === "." || s === "..")
    ) {
      throw new CartdError("failure", `refusing unsafe cart path ${JSON.stringify(relative)}`);
    }
    return join(this.dataRoot(cartId), ...segments);
  }

  /**
   * Where a claim's pull of a file writes (renamed to `filePath` once verified): named for the
   * claim, so two claims never write one file. What earlier claims of the file left is removed
   * (when `pulledBefore`): their leases are gone, so none of them can still finish.
   */
  async claimPartial(
    cartId: number,
    fileId: number,
    token: string,
    pulledBefore = true,
  ): Promise<string> {
    const folder = join(this.cartDir(cartId), "partial");
    if (!pulledBefore) return join(folder, `${fileId}.${token}.part`);
    try {
      for await (const entry of Deno.readDir(folder)) {
        if (entry.name.startsWith(`${fileId}.`) && entry.name.endsWith(".part")) {
          await Deno.remove(join(folder, entry.name)).catch(() => {});
        }
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    return join(folder, `${fileId}.${token}.part`);
  }

  /**
   * Creates the directories a file needs and checks they resolve inside the cart's data root.
   * Synchronous: on the volume's own disk these take microseconds, where each asynchronous call
   * would cost tens (a hand-off to another thread), and a pull makes them for every file.
   */
  prepareDirectories(cartId: number, relative: string): string {
    const target = this.filePath(cartId, relative);
    const parent = resolve(target, "..");
    const partial = join(this.cartDir(cartId), "partial");
    Deno.mkdirSync(parent, { recursive: true });
    Deno.mkdirSync(partial, { recursive: true });
    this.assertInside(cartId, parent);
    this.assertInside(cartId, partial, "partial");
    return target;
  }

  /**
   * Throws unless `path`, a `filePath` of the cart, resolves to itself: no symlink anywhere below
   * the volume's root, put there since the file was verified (a download checks this just before
   * it reads each file).
   */
  async assertUnmoved(path: string): Promise<void> {
    const real = await Deno.realPath(path);
    if (real !== this.realRootPath() + path.slice(this.root.length)) {
      throw new CartdError("failure", `refusing ${path}: a symlink on its way leads elsewhere`);
    }
  }

  /**
   * Throws unless `path` (which must exist) resolves inside the cart's `data` (or `partial`)
   * folder, itself where it should be under the volume: a symlink anywhere on the way, the cart's
   * own folders included, would lead elsewhere and is refused. Synchronous (see
   * `prepareDirectories`).
   */
  private assertInside(cartId: number, path: string, area: "data" | "partial" = "data"): void {
    const real = Deno.realPathSync(path);
    const root = join(this.realRootPath(), "carts", String(cartId), area);
    if (real !== root && !real.startsWith(root + "/")) {
      throw new CartdError("failure", `refusing ${path}: it leads outside the cart's directory`);
    }
  }

  /** The volume's own path, resolved once; what is under it is resolved every time. */
  private realRootPath(): string {
    return this.realRoot ??= Deno.realPathSync(this.root);
  }

  /** Where a cached file lives: `<volume>/cache/<key>`, the key a UUID cartd made. */
  cachePath(key: string): string {
    if (!/^[0-9a-f-]{36}$/.test(key)) {
      throw new CartdError("failure", `refusing cache key ${JSON.stringify(key)}`);
    }
    return join(this.root, "cache", key);
  }

  /**
   * Links a verified file into the cache under a new key (a hard link: no copy, and it outlives
   * the cart's folder). Undefined when the file system will not link (the file then stays its
   * cart's alone).
   */
  async addToCache(file: string, size: number): Promise<string | undefined> {
    const key = crypto.randomUUID();
    try {
      if (!this.cacheMade) {
        Deno.mkdirSync(join(this.root, "cache"), { recursive: true });
        this.cacheMade = true;
      }
      this.assertCacheInPlace();
      // The file itself, where it should be (no symlink on its way), a regular file of its size:
      // and the cache entry made is that very file (the same inode).
      await this.assertUnmoved(file);
      const before = await Deno.lstat(file);
      if (!before.isFile || before.size !== size) return undefined;
      // Asynchronous: a link costs the kernel about as much as creating a file, and pulls of
      // many small files make one each.
      await Deno.link(file, this.cachePath(key));
      const linked = await Deno.lstat(this.cachePath(key));
      if (linked.ino !== before.ino || linked.dev !== before.dev) {
        await this.removeCached(key);
        return undefined;
      }
      return key;
    } catch {
      this.cacheMade = false;
      return undefined;
    }
  }

  /** Throws unless the cache folder is itself, under the volume (no symlink planted for it). */
  private assertCacheInPlace(): void {
    const cache = join(this.root, "cache");
    if (Deno.realPathSync(cache) !== join(this.realRootPath(), "cache")) {
      throw new CartdError("failure", `refusing ${cache}: a symlink leads elsewhere`);
    }
  }

  /**
   * Puts a cached file into a cart (a hard link, no copy). False when the cached file is gone
   * (evicted meanwhile).
   */
  linkFromCache(key: string, size: number, cartId: number, relative: string): boolean {
    const target = this.prepareDirectories(cartId, relative);
    try {
      Deno.removeSync(target);
    } catch { /* not there: the usual case */ }
    try {
      this.assertCacheInPlace();
      // Only a regular file of the size recorded: anything else there is not the verified file.
      const entry = Deno.lstatSync(this.cachePath(key));
      if (!entry.isFile || entry.size !== size) return false;
      Deno.linkSync(this.cachePath(key), target);
      return true;
    } catch {
      // Gone, a cache folder not in place, or a file the system will not link once more (its
      // link count at the limit): the file is pulled instead.
      return false;
    }
  }

  /**
   * Takes back a link `linkFromCache` made that its cart did not take after all: left there, it
   * would hold the file's bytes once the cached copy is evicted, counted nowhere.
   */
  unlinkFromCart(cartId: number, relative: string): void {
    try {
      Deno.removeSync(this.filePath(cartId, relative));
    } catch { /* gone already */ }
  }

  /** The cache folder's entries, with when each was last changed (linked), oldest first. */
  async cacheEntries(): Promise<{ key: string; changed: number }[]> {
    const entries: { key: string; changed: number }[] = [];
    try {
      for await (const entry of Deno.readDir(join(this.root, "cache"))) {
        if (!/^[0-9a-f-]{36}$/.test(entry.name)) continue;
        const info = await Deno.lstat(join(this.root, "cache", entry.name)).catch(() => undefined);
        if (info) entries.push({ key: entry.name, changed: info.ctime?.getTime() ?? 0 });
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    return entries;
  }

  /** Removes a cached file; a missing one is fine. */
  async removeCached(key: string): Promise<void> {
    await Deno.remove(this.cachePath(key)).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }

  /** Removes a cart's folder of pulls in progress and whatever is in it; a missing one is fine. */
  async removePartials(cartId: number): Promise<void> {
    await Deno.remove(join(this.cartDir(cartId), "partial"), { recursive: true }).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }

  /**
   * Removes a cart's directory; a missing one is fine. A pull of the cart that has not yet seen
   * the deletion may create a file in it meanwhile ("Directory not empty"): the removal is tried
   * again a few times.
   */
  async removeCart(cartId: number): Promise<void> {
    for (let attempt = 1;; attempt++) {
      try {
        return await Deno.remove(this.cartDir(cartId), { recursive: true });
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return;
        if ((err as { code?: unknown }).code !== "ENOTEMPTY" || attempt >= 5) throw err;
        await new Promise((resolve) => setTimeout(resolve, 20 * attempt));
      }
    }
  }

  /** Bytes free for an unprivileged writer on the volume's file system, less `reserve`. */
  availableBytes(reserve: SpaceAmount = { bytes: 0 }): number {
    const stats = this.statfs();
    const free = Number(stats.bavail) * Number(stats.bsize);
    return free - spaceBytes(reserve, Number(stats.blocks) * Number(stats.bsize));
  }

  /** Size of the volume's file system in bytes. */
  totalBytes(): number {
    const stats = this.statfs();
    return Number(stats.blocks) * Number(stats.bsize);
  }

  /**
   * The volume's file system figures. A volume that is gone is not made again here: that would
   * hide its loss behind an empty one (it is made when cartd opens it, see `ensure`).
   */
  private statfs() {
    return statfsSync(this.root);
  }

  /** Makes the volume's folder if it is not there yet (a new site). */
  ensure(): void {
    if (!existsSync(this.root)) Deno.mkdirSync(this.root, { recursive: true });
  }

  /** Ids of the cart directories on the volume. */
  async cartDirectories(): Promise<number[]> {
    const ids: number[] = [];
    try {
      for await (const entry of Deno.readDir(join(this.root, "carts"))) {
        if (entry.isDirectory && /^\d+$/.test(entry.name)) ids.push(Number(entry.name));
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    return ids;
  }
}
