/**
 * Getting bytes out of a cart: its tar or zip, or one of its files (as soon as that file is
 * verified, even while the rest of the cart stages). Every answer is described before its first byte (size,
 * a strong ETag, Last-Modified), so any byte range can be asked for; every stream holds the cart's
 * files on the volume while it runs (a download row, renewed like a claim), and checks each file
 * just before reading it.
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { crc32 } from "node:zlib";
import { basename } from "node:path";
import type { Config } from "../config.ts";
import { CartdError, cartFailed, cartNotFound, cartNotReady, describe } from "../errors.ts";
import { type TarEntry, tarEtag, type TarLayout, tarLayout } from "../bundle/tar.ts";
import { tarStream } from "../bundle/tar_stream.ts";
import { zipEtag, zipLayout } from "../bundle/zip.ts";
import { passThrough } from "../io.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";
import type { Cart, CartFile, Store } from "../store/store.ts";
import { repeat } from "../time.ts";
import { removeDeletedCarts } from "../volume/space.ts";
import type { Volume } from "../volume/volume.ts";

/** Something to download, described before a byte is read. */
export interface Delivered {
  /** The name to save it under (`Content-Disposition`, the CLI's default output file). */
  filename: string;
  /** Bytes in the whole of it. */
  size: number;
  /** A strong validator: equal only for byte-identical answers. */
  etag: string;
  lastModified: Date;
  contentType: string;
  /** Further headers that describe the whole of it (a file's digests). */
  headers: Record<string, string>;
  /** Streams bytes [start, end); the cart's files stay on the volume while it runs. */
  open(start?: number, end?: number): Promise<ReadableStream<Uint8Array>>;
}

/** One line of a cart's file listing (`GET /-/carts/<uid>/files`). */
export interface FileListing {
  path: string;
  size: number | null;
  state: CartFile["state"];
  hashtype: string;
  hashsum: string;
  verified: boolean;
}

/**
 * How many layout entries are kept, over all kept layouts: a layout holds about 60 bytes a file
 * (see src/bundle/tar.ts), so some 3 MiB whatever clients ask for. A larger cart's layout is made
 * for each download.
 */
const keptEntries = 50_000;

/** Digest header names and the hash types whose sums they carry (RFC 9530 and RFC 3230). */
const digests: Record<string, { repr?: string; legacy: string }> = {
  sha256: { repr: "sha-256", legacy: "SHA-256" },
  sha512: { repr: "sha-512", legacy: "SHA-512" },
  sha1: { legacy: "SHA" },
  md5: { legacy: "MD5" },
};

/** Tars and single files of carts; see the module comment. */
export class CartDelivery {
  /** Layouts of ready carts lately downloaded; see `layoutOf`. */
  private readonly kept = new Map<string, { layout: TarLayout; etag: string }>();

  constructor(
    private readonly store: Store,
    private readonly volume: Volume,
    private readonly config: Config,
    /** Names this process's downloads in the database. */
    private readonly owner: string,
  ) {}

  /** A ready cart's tar with its members under `root/`, saved as `filename`. */
  async tar(cart: Cart, root: string, filename: string): Promise<Delivered & { files: number }> {
    const readyAt = Number(cart.ready_at ?? cart.created_at);
    const laid = await this.layoutOf(cart, readyAt, root);
    return this.wholeCart(cart, laid, filename, "application/octet-stream");
  }

  /**
   * A ready cart's zip with its members under `root/`, saved as `filename`. Files pulled before
   * CRC-32s were kept have theirs computed once here (a read of each) and kept.
   */
  async zip(cart: Cart, root: string, filename: string): Promise<Delivered & { files: number }> {
    const readyAt = Number(cart.ready_at ?? cart.created_at);
    const key = `zip\n${cart.id}\n${readyAt}\n${root}`;
    const laid = await this.keptOr(key, async () => {
      const members = await this.store.carts.zipMembers(cart.id);
      await this.fillCrc32s(cart, members);
      const layout = zipLayout(
        root,
        members.map((m) => ({ ...m, crc32: Number(m.crc32) })),
        (path) => this.volume.filePath(cart.id, path),
      );
      return { layout, etag: zipEtag(layout, `${cart.id}\n${readyAt}`) };
    });
    return this.wholeCart(cart, laid, filename, "application/zip");
  }

  /** A ready cart laid out whole (a tar or a zip), as a download. */
  private wholeCart(
    cart: Cart,
    { layout, etag }: { layout: TarLayout; etag: string },
    filename: string,
    contentType: string,
  ): Delivered & { files: number } {
    return {
      filename,
      size: layout.size,
      files: layout.files,
      etag,
      lastModified: new Date(Number(cart.ready_at ?? cart.created_at)),
      contentType,
      headers: {},
      open: (start, end) => this.held(cart, () => this.streamOf(layout, start, end)),
    };
  }

  /**
   * The CRC-32s that were not kept (files pulled before cartd kept them): each file is read once,
   * a few at a time, and what was computed is kept in one transaction.
   */
  private async fillCrc32s(
    cart: Cart,
    members: { id: number; path: string; crc32: number | null }[],
  ): Promise<void> {
    const missing = members.filter((m) => m.crc32 === null);
    if (missing.length === 0) return;
    let next = 0;
    const readSome = async () => {
      while (next < missing.length) {
        const member = missing[next++];
        const path = this.volume.filePath(cart.id, member.path);
        await this.volume.assertUnmoved(path);
        member.crc32 = await fileCrc32(path);
      }
    };
    await Promise.all(Array.from({ length: 8 }, readSome));
    await this.store.carts.keepCrc32s(missing.map((m) => ({ id: m.id, crc32: m.crc32! })));
    log.info(
      `cart ${cart.uid}: CRC-32 of ${missing.length} file(s) computed for its zip, and kept`,
      {
        uid: cart.uid,
      },
    );
  }

  /**
   * A cart's tar that starts before the cart is ready: laid out once every file's size is known
   * (the archive's status gives it), then sent in layout order, each file's bytes as soon as that
   * file is verified. Its bytes are those of the ready cart's tar under the same `root`. When a
   * file fails, the stream stops there (the client sees a body shorter than its length, never a
   * tar that looks complete).
   */
  async follow(
    cart: Cart,
    root: string,
    filename: string,
    signal?: AbortSignal,
  ): Promise<Delivered & { files: number }> {
    const members = await this.whenSized(cart, signal);
    const layout = tarLayout(root, members, (path) => this.volume.filePath(cart.id, path));
    const etag = tarEtag(layout, `${cart.id}\n${cart.created_at}\nfollow`);
    const fileOf = new Map(
      members.map((
        m,
      ) => [this.volume.filePath(cart.id, m.path), { id: Number(m.id), path: m.path }]),
    );
    return {
      filename,
      size: layout.size,
      files: layout.files,
      etag,
      lastModified: new Date(Number(cart.created_at)),
      contentType: "application/octet-stream",
      headers: {},
      open: (start, end) =>
        this.held(cart, () =>
          this.streamOf(
            layout,
            start,
            end,
            (entry, signal) => this.untilReady(cart, fileOf.get(entry.file!)!, signal),
          )),
    };
  }

  /**
   * The cart's tar members once every size and mtime is known (the archive's status gives them);
   * throws when the cart fails or goes.
   */
  private async whenSized(cart: Cart, signal?: AbortSignal) {
    for (;;) {
      const now = await this.store.carts.byId(cart.id);
      if (!now || now.deleted_at !== null) throw cartNotFound(cart.uid);
      if (now.status === "error") throw cartFailed(now.message);
      // Counted, not loaded, until they are all known.
      if (await this.store.carts.unsized(cart.id) === 0) {
        return await this.store.carts.tarMembers(cart.id);
      }
      await abortableSleep(followPollMs, signal);
    }
  }

  /**
   * Waits until the cart's file at `path` is verified, asking workers to take it first (its cart's
   * turn comes now, and the file before the cart's others). Throws when it fails or its cart goes.
   */
  private async untilReady(
    cart: Cart,
    { id, path }: { id: number; path: string },
    signal: AbortSignal,
  ): Promise<void> {
    let favoured = false;
    for (;;) {
      const file = await this.store.carts.fileById(id);
      if (!file) throw cartNotFound(cart.uid);
      if (file.state === "ready") return;
      if (file.state === "error") {
        throw cartFailed(`${path} failed (${file.error}); the download was stopped`);
      }
      const now = await this.store.carts.byId(cart.id);
      if (!now || now.deleted_at !== null) {
        throw new CartdError("failure", `cart ${cart.uid} was deleted; the download was stopped`);
      }
      // Its cart failed (another file did): this one will not be pulled.
      if (now.status === "error") {
        throw cartFailed(`cart ${cart.uid} failed (${now.message}); the download was stopped`);
      }
      if (!favoured) {
        await this.store.carts.favour(cart.id, file.id);
        favoured = true;
      }
      await abortableSleep(followPollMs, signal);
    }
  }

  /** The cart's files, in request order, with what a client needs to fetch each. */
  async files(cart: Cart): Promise<FileListing[]> {
    const files = await this.store.carts.files(cart.id);
    return files.map((f) => ({
      path: f.path,
      size: f.size === null ? null : Number(f.size),
      state: f.state,
      hashtype: f.hash_type,
      hashsum: f.hash_sum,
      verified: f.verified === 1,
    }));
  }

  /**
   * One file of the cart, as soon as it is verified (the rest of the cart may still be staging).
   * Not found when the cart has no file at `path`; not ready while the file is not verified;
   * failed (with its error) when the file failed.
   */
  async file(cart: Cart, path: string): Promise<Delivered> {
    const file = await this.store.carts.fileAt(cart.id, path);
    if (!file) {
      throw new CartdError("notFound", `cart ${cart.uid} has no file ${JSON.stringify(path)}`);
    }
    if (file.state === "error") throw cartFailed(`${path}: ${file.error}`);
    // Its cart failed (another file did): this one will not be pulled any more.
    if (file.state !== "ready" && cart.status === "error") throw cartFailed(cart.message);
    if (file.state !== "ready") {
      throw cartNotReady(`The file is not ready for download (it is ${file.state}).`);
    }
    const size = Number(file.size);
    const mtime = file.mtime === null ? Number(cart.created_at) / 1000 : Number(file.mtime);
    const disk = this.volume.filePath(cart.id, file.path);
    // Checked before the answer is described: a file that is not what was verified is an error
    // (500), not a 200 cut off after its headers.
    await this.checkOnDisk(disk, file.path, size, file.mtime === null ? 0 : Number(file.mtime));
    const layout = singleFileLayout(file.path, size, Number(file.mtime ?? 0), disk);
    const etag = `"${
      createHash("sha256").update(
        `${cart.id}\n${file.id}\n${size}\n${mtime}\n${file.hash_type}\n${file.hash_sum}`,
      ).digest("hex").slice(0, 32)
    }"`;
    return {
      filename: basename(file.path),
      size,
      etag,
      lastModified: new Date(mtime * 1000),
      contentType: "application/octet-stream",
      headers: file.verified === 1 ? digestHeaders(file.hash_type, file.hash_sum) : {},
      open: (start, end) => this.held(cart, () => this.streamOf(layout, start, end)),
    };
  }

  /**
   * The layout and ETag of a ready cart's tar under `root`. A ready cart's files do not change, so
   * the last few layouts are kept (up to `keptEntries` entries in all): a download resumed, or
   * fetched in ranges over several connections, is laid out once.
   */
  private layoutOf(cart: Cart, readyAt: number, root: string) {
    return this.keptOr(`tar\n${cart.id}\n${readyAt}\n${root}`, async () => {
      const members = await this.store.carts.tarMembers(cart.id);
      const layout = tarLayout(root, members, (path) => this.volume.filePath(cart.id, path));
      return { layout, etag: tarEtag(layout, `${cart.id}\n${readyAt}`) };
    });
  }

  /** The layout kept under `key`, or the one `make` makes (kept when small enough). */
  private async keptOr(
    key: string,
    make: () => Promise<{ layout: TarLayout; etag: string }>,
  ): Promise<{ layout: TarLayout; etag: string }> {
    const kept = this.kept.get(key);
    if (kept) {
      this.kept.delete(key);
      this.kept.set(key, kept);
      return kept;
    }
    const made = await make();
    const { layout } = made;
    // Too large to keep: made again for each download, and the kept ones stay.
    if (layout.count > keptEntries) return made;
    let entries = layout.count;
    for (const other of this.kept.values()) entries += other.layout.count;
    for (const [oldest, other] of this.kept) {
      if (entries <= keptEntries) break;
      this.kept.delete(oldest);
      entries -= other.layout.count;
    }
    if (entries <= keptEntries) this.kept.set(key, made);
    return made;
  }

  /**
   * A stream of the cart's files, registered as a download until it ends, so deleting or evicting
   * the cart meanwhile does not pull its files away.
   */
  private async held(
    cart: Cart,
    stream: () => ReadableStream<Uint8Array>,
  ): Promise<ReadableStream<Uint8Array>> {
    const lease = this.config.leaseTime;
    const register = () => this.store.space.startDownload(cart.id, this.owner, Date.now() + lease);
    let download = await register();
    // Deleted and its files removed since the answer was described.
    if (download === undefined) throw cartNotFound(cart.uid);
    // The hold is renewed like a claim; if it was taken away (a node reaped it by mistake, or it
    // ran out while the database was unreachable) it is taken again while the files are there,
    // and the download ends when they are not.
    const heartbeat = repeat(Math.max(Math.min(lease / 3, 5000), 50), async () => {
      try {
        if (await this.store.space.renewDownload(download!, Date.now() + lease)) return;
        download = await register();
        if (download === undefined) body.abort(`the files of cart ${cart.uid} were removed`);
      } catch (err) {
        log.warn(`cannot renew download of cart ${cart.uid}: ${describe(err)}`);
      }
    });
    const finished = async () => {
      await heartbeat.stop();
      try {
        if (download !== undefined) await this.store.space.endDownload(download);
        await removeDeletedCarts(this.store, this.volume);
      } catch (err) {
        log.warn(`cannot close download of cart ${cart.uid}: ${describe(err)}`);
      }
    };
    metrics.downloadsInFlight.inc();
    const body = passThrough(
      stream(),
      () => {
        metrics.downloadsInFlight.dec();
        return finished();
      },
      (bytes) => metrics.servedBytes.inc(bytes),
    );
    return body.stream;
  }

  /**
   * Bytes [start, end) of a layout. Just before each file is read: its path must still resolve to
   * itself (a symlink swapped in since, for the file or a folder, is refused), and it must be a
   * regular file of the size verified (a FIFO or a grown file put there would block the read, or
   * fill the memory).
   */
  private streamOf(
    layout: TarLayout,
    start?: number,
    end?: number,
    /**
     * Waited for before each file is checked and read (a follow waits for it to be verified);
     * its signal aborts when the reader goes away.
     */
    before?: (entry: TarEntry, signal: AbortSignal) => Promise<void>,
  ): ReadableStream<Uint8Array> {
    const gone = new AbortController();
    return tarStream(layout, {
      start,
      end,
      flushBeforeWaits: before !== undefined,
      onCancel: () => gone.abort(new Error("the download was cancelled")),
      checkFile: async (entry: TarEntry) => {
        await before?.(entry, gone.signal);
        const { name, size, mtime } = entry.header;
        await this.checkOnDisk(entry.file!, name, size, mtime);
      },
    });
  }

  /**
   * A verified file must still be itself: its path resolves to itself (a symlink swapped in since,
   * for the file or a folder, is refused), a regular file (a FIFO would block the read) of the
   * size verified, and (when the archive gave one) with the mtime it was given when verified: a
   * change in place moves it.
   */
  private async checkOnDisk(path: string, name: string, size: number, mtime: number) {
    const [info] = await Promise.all([Deno.lstat(path), this.volume.assertUnmoved(path)]);
    const stopped = (what: string) =>
      new CartdError("failure", `${name} ${what}; the download was stopped`);
    if (!info.isFile) throw stopped("is not a regular file on the volume any more");
    if (info.size !== size) {
      throw stopped(`is ${info.size} bytes on the volume, not the ${size} verified`);
    }
    if (mtime > 0 && info.mtime && Math.floor(info.mtime.getTime() / 1000) !== mtime) {
      throw stopped("was changed on the volume since it was verified");
    }
  }
}

/** How often a follow looks again at a file (or the sizes) it waits for. */
const followPollMs = 200;

/** Sleeps `ms`, or less when `signal` aborts (then throws its reason). */
function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A layout of one file alone: its bytes, no header, no trailer. */
function singleFileLayout(path: string, size: number, mtime: number, disk: string): TarLayout {
  const entry: TarEntry = {
    offset: 0,
    header: { name: path, type: "file", size, mode: 0o644, mtime },
    headerLength: 0,
    encoded: new Uint8Array(0),
    padding: 0,
    file: disk,
  };
  return {
    root: "",
    count: 1,
    entry: () => entry,
    entryAt: (position) => position < size ? 0 : 1,
    files: 1,
    trailerOffset: size,
    size,
  };
}

/**
 * `Repr-Digest` (RFC 9530, for SHA-256 and SHA-512) and `Digest` (RFC 3230) of a verified file,
 * from the checksum it was verified against; none for other hash types.
 */
function digestHeaders(hashType: string, hashSum: string): Record<string, string> {
  const names = digests[hashType.toLowerCase()];
  if (!names || !/^[0-9a-f]+$/i.test(hashSum) || hashSum.length % 2 !== 0) return {};
  const base64 = Buffer.from(hashSum, "hex").toString("base64");
  const headers: Record<string, string> = { digest: `${names.legacy}=${base64}` };
  if (names.repr) headers["repr-digest"] = `${names.repr}=:${base64}:`;
  return headers;
}

/** The CRC-32 of a file's bytes, read in large pieces. */
async function fileCrc32(path: string): Promise<number> {
  using file = await Deno.open(path);
  const buffer = new Uint8Array(1 << 20);
  let crc = 0;
  for (;;) {
    const n = await file.read(buffer);
    if (n === null) return crc;
    crc = crc32(buffer.subarray(0, n), crc);
  }
}
