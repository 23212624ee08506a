/**
 * The local volume: the only code that turns a cart's file path into a path on disk. Each cart
 * lives in `<volume>/carts/<cart id>/`: verified files under `data/`, pulls in progress under
 * `partial/` (never part of a tar). Paths were validated when the cart was created; they are
 * checked again here, and directories are resolved so a planted symlink cannot lead outside.
 */
import { statfsSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { type SpaceAmount, spaceBytes } from "../config.ts";
import { CartdError } from "../errors.ts";

/** The cart volume on disk: safe paths, free space, cart folders. */
export class Volume {
  readonly root: string;
  private realRoot?: string;

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
   * claim, so two claims never write one file. What earlier claims of the file left is removed:
   * their leases are gone, so none of them can still finish.
   */
  async claimPartial(cartId: number, fileId: number, token: string): Promise<string> {
    const folder = join(this.cartDir(cartId), "partial");
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

  /** Creates the directories a file needs and checks they resolve inside the cart's data root. */
  async prepareDirectories(cartId: number, relative: string): Promise<string> {
    const target = this.filePath(cartId, relative);
    const parent = resolve(target, "..");
    await Deno.mkdir(parent, { recursive: true });
    await Deno.mkdir(join(this.cartDir(cartId), "partial"), { recursive: true });
    await this.assertInside(cartId, parent);
    await this.assertInside(cartId, join(this.cartDir(cartId), "partial"), "partial");
    return target;
  }

  /** Throws unless `path` (which must exist) resolves inside the cart's data root. */
  /**
   * Throws unless `path` (which must exist) resolves inside the cart's `data` (or `partial`)
   * folder, itself where it should be under the volume: a symlink anywhere on the way, the cart's
   * own folders included, would lead elsewhere and is refused.
   */
  async assertInside(
    cartId: number,
    path: string,
    area: "data" | "partial" = "data",
  ): Promise<void> {
    const root = join(await Deno.realPath(this.root), "carts", String(cartId), area);
    const real = await Deno.realPath(path);
    if (real !== root && !real.startsWith(root + "/")) {
      throw new CartdError("failure", `refusing ${path}: it leads outside the cart's directory`);
    }
  }

  /** Removes a cart's directory; a missing one is fine. */
  async removeCart(cartId: number): Promise<void> {
    await Deno.remove(this.cartDir(cartId), { recursive: true }).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }

  /** Bytes free for an unprivileged writer on the volume's file system, less `reserve`. */
  availableBytes(reserve: SpaceAmount = { bytes: 0 }): number {
    Deno.mkdirSync(this.root, { recursive: true });
    const stats = statfsSync(this.root);
    const free = Number(stats.bavail) * Number(stats.bsize);
    return free - spaceBytes(reserve, Number(stats.blocks) * Number(stats.bsize));
  }

  /** Size of the volume's file system in bytes. */
  totalBytes(): number {
    Deno.mkdirSync(this.root, { recursive: true });
    const stats = statfsSync(this.root);
    return Number(stats.blocks) * Number(stats.bsize);
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
