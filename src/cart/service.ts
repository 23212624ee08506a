/**
 * What a cart is, for both front ends: creating one from a validated request, reporting its
 * status, deleting it, and opening its tar. The CLI commands and the HTTP handlers are thin
 * wrappers over these calls, so both tell the same story.
 */
import { existsSync } from "node:fs";
import type { WorkSignal } from "./work_signal.ts";
import type { Config } from "../config.ts";
import { CartdError, cartFailed, cartNotFound, cartNotReady } from "../errors.ts";
import { defaultTarName, downloadName, tarRootName } from "../bundle/tar.ts";
import { CartDelivery, type Delivered, type FileListing } from "./delivery.ts";
import type { Cart, CartFile, CartProgress, Store } from "../store/store.ts";
import { isoTime } from "../time.ts";
import { log } from "../log.ts";
import { collectGarbage, type GcOptions, type GcReport } from "../volume/gc.ts";

export type { GcOptions, GcReport };
import { removeDeletedCarts } from "../volume/space.ts";
import type { Volume } from "../volume/volume.ts";
import { newOwnerName } from "./owner.ts";
import { type CartRequest, fingerprint, validateUid } from "./request.ts";

/** The fine-grained phase, shown beside the Pacifica status (which stays `staging` until the end). */
export type CartPhase = "waiting" | "staging" | "pulling" | "ready" | "error";

/** A cart's status for people and clients: what `cartd status` prints and HEAD reports. */
export interface CartReport {
  uid: string;
  status: Cart["status"];
  phase: CartPhase;
  message: string;
  bundle: boolean;
  created: string;
  lastUsed: string;
  readyAt: string | null;
  progress: {
    filesTotal: number;
    filesReady: number;
    filesFailed: number;
    bytesDone: number;
    /** Sum of the sizes the archive has reported so far. */
    bytesTotal: number;
    /** How many files' sizes are known (all of them once staged). */
    sizesKnown: number;
    /** Ready files that no checksum verified (their request gave none). */
    filesUnverified: number;
    /** Since when files of the cart have been waiting for the archive to come back, if they are. */
    waitingForArchiveSince: string | null;
    /** Since when files of the cart have been waiting for space on the volume, if they are. */
    waitingForSpaceSince: string | null;
  };
}

/** One file's detail in `status --json` and `/-/carts/<uid>`. */
export interface FileReport {
  id: string;
  path: string;
  state: CartFile["state"];
  size: number | null;
  bytesPulled: number;
  attempts: number;
  polls: number;
  error: string;
  hashtype: string;
  verified: boolean;
  /** Taken from the shared cache (held for another cart), not pulled for this one. */
  fromCache: boolean;
}

/** What a create did: made the cart, found it already there (retrying it if failed), or replaced one. */
export interface CreateOutcome {
  cart: Cart;
  /** False when the same request had already created this cart. */
  created: boolean;
  replaced: boolean;
  /** When the same request found the cart failed: how many failed files start again. */
  retried?: number;
}

const touchPrecisionMs = 1000;

/** What a whole cart is downloaded as. */
export type DownloadFormat = "tar" | "zip";

/** A ready cart's tar or zip, described before a byte is read: what a download answers with. */
export type CartDownload = Delivered & {
  /** The root folder of its members: the name without its `.tar` or `.zip`. */
  root: string;
  files: number;
};

/** One line of `cartd list`. */
export interface CartListing {
  uid: string;
  status: Cart["status"];
  files: number;
  bytes: number;
  created: string;
  lastUsed: string;
}

/**
 * Who asks, when access control is on: the name carts are owned by, and whether they see every
 * cart (an admin). Without one, the caller is the site's operator (the CLI) and sees everything.
 */
export interface Viewer {
  name: string;
  seesAll: boolean;
}

/** Whether a viewer may see a cart: theirs, one created without an owner, or any for an admin. */
function canSee(viewer: Viewer, cart: Cart): boolean {
  return viewer.seesAll || cart.owner === null || cart.owner === viewer.name;
}

/** The cart operations both front ends call; they hold no logic of their own. */
export class CartService {
  /** Names this process's downloads in the database. */
  private readonly owner = newOwnerName();
  /** When this process last recorded a use of each cart. */
  private readonly touched = new Map<number, number>();
  /** Carts' progress as last counted; see `progressOf`. */
  private readonly progressKept = new Map<
    number,
    { key: string; until: number; progress: CartProgress }
  >();
  /** Tars and single files of carts. */
  private readonly delivery: CartDelivery;

  constructor(
    private readonly store: Store,
    private readonly volume: Volume,
    private readonly config: Config,
    /** Told when a cart has work for this process's workers. */
    private readonly workArrived?: WorkSignal,
  ) {
    this.delivery = new CartDelivery(store, volume, config, this.owner);
  }

  /**
   * Registers a cart; see `Store.createCart` for what a repeated uid does. A `viewer`'s cart is
   * theirs; a uid whose live cart is someone else's is refused, and that cart is left alone.
   */
  async create(uid: string, request: CartRequest, viewer?: Viewer): Promise<CreateOutcome> {
    validateUid(uid);
    const existing = viewer && await this.store.carts.live(uid);
    if (existing && !canSee(viewer, existing)) {
      throw new CartdError(
        "conflict",
        `uid ${uid} is taken by another user's cart; choose another`,
      );
    }
    const bundle = request.bundle ?? this.config.bundleTask;
    const result = await this.store.carts.create({
      uid,
      owner: viewer?.name,
      replacesOthers: viewer?.seesAll,
      fingerprint: fingerprint(request, bundle),
      bundle,
      files: request.files.map((f, seq) => ({
        seq,
        archive_id: f.id,
        path: f.path,
        hash_type: f.hashtype,
        hash_sum: f.hashsum,
      })),
    }, Date.now());
    if (result.replaced) await removeDeletedCarts(this.store, this.volume);
    const outcome = {
      cart: result.cart,
      created: result.created,
      replaced: result.replaced !== undefined,
    };
    if (result.created) {
      this.workArrived?.notify();
      const { cart } = result;
      log.info(
        `cart ${uid} created: ${cart.file_count} file(s)` +
          (result.replaced ? ", replacing the cart of that uid" : "") +
          (cart.status === "ready" ? "; ready (no files)" : ""),
        { uid },
      );
    }
    // The same request for a cart that failed: try its failed files again, as the original did.
    if (!result.created && result.cart.status === "error") {
      const retried = await this.store.carts.retry(result.cart.id, Date.now());
      this.workArrived?.notify();
      if (retried !== undefined) return { ...outcome, retried, cart: await this.find(uid) };
    }
    return outcome;
  }

  /**
   * Starts a failed cart's failed files again, keeping its verified ones. Returns how many files
   * restart; 0 when the cart had not failed (nothing to retry).
   */
  async retry(uid: string): Promise<number> {
    const cart = await this.find(uid);
    if (cart.status !== "error") return 0;
    const retried = await this.store.carts.retry(cart.id, Date.now()) ?? 0;
    this.workArrived?.notify();
    return retried;
  }

  /**
   * The live cart of `uid`; throws the contract's not-found error when there is none, or when it
   * is not the `viewer`'s to see (so another user's cart cannot be told from a missing one).
   */
  async find(uid: string, viewer?: Viewer): Promise<Cart> {
    const cart = await this.store.carts.live(uid);
    if (!cart || (viewer && !canSee(viewer, cart))) throw cartNotFound(uid);
    return cart;
  }

  /** The status report of a cart (a status request counts as a use of the cart). */
  async report(uid: string, viewer?: Viewer): Promise<CartReport> {
    const cart = await this.find(uid, viewer);
    await this.touch(cart.id);
    return await this.reportOf(cart);
  }

  /** The report with every file's detail: `cartd status --json` and `GET /-/carts/<uid>`. */
  async detailedReport(
    uid: string,
    viewer?: Viewer,
  ): Promise<CartReport & { files: FileReport[] }> {
    const cart = await this.find(uid, viewer);
    await this.touch(cart.id);
    const report = await this.reportOf(cart);
    return { ...report, files: await this.fileReports(cart) };
  }

  /**
   * A cart's report. While its files wait for the archive to come back, its message says so, since
   * when and why (the Pacifica status stays `staging`).
   */
  private async reportOf(cart: Cart): Promise<CartReport> {
    const progress = await this.progressOf(cart);
    let message = cart.message;
    if (cart.status === "staging" && progress.archiveWaitSince !== null) {
      const reason = await this.store.carts.waitReason(cart.id, "outage_since");
      message = `Waiting for the archive since ${isoTime(progress.archiveWaitSince)}` +
        (reason ? `: ${reason}` : "");
    } else if (cart.status === "staging" && progress.spaceWaitSince !== null) {
      const reason = await this.store.carts.waitReason(cart.id, "space_wait_since");
      message = `Waiting for space on the volume since ${isoTime(progress.spaceWaitSince)}` +
        (reason ? `: ${reason}` : "");
    }
    return toReport({ ...cart, message }, progress);
  }

  /**
   * A cart's progress: counted over its files, and kept while it cannot have changed (a ready
   * cart's files are all ready) or else for a moment, twenty times as long as counting took (at
   * most 2 s): polling a cart of 100 000 files in a tight loop then costs a lookup, not a count,
   * and a small cart's count stays current.
   */
  private async progressOf(cart: Cart): Promise<CartProgress> {
    const key = `${cart.status}:${cart.finished_at}`;
    const now = Date.now();
    const kept = this.progressKept.get(cart.id);
    if (kept && kept.key === key && now < kept.until) return kept.progress;
    const started = performance.now();
    const progress = await this.store.carts.progress(cart.id);
    const until = cart.status === "ready"
      ? Infinity
      : now + Math.min((performance.now() - started) * 20, 2000);
    if (this.progressKept.size >= 1000) {
      this.progressKept.delete(this.progressKept.keys().next().value!);
    }
    this.progressKept.set(cart.id, { key, until, progress });
    return progress;
  }

  /**
   * Records a use of the cart for least-recently-used eviction. A second by second precision is
   * plenty, and a client polling in a tight loop then costs the database no writes.
   */
  private async touch(cartId: number): Promise<void> {
    const now = Date.now();
    if (now - (this.touched.get(cartId) ?? 0) < touchPrecisionMs) return;
    if (this.touched.size > 10_000) this.touched.clear();
    this.touched.set(cartId, now);
    await this.store.carts.touch(cartId, now);
  }

  /** Every file of the cart, in request order. */
  async fileReports(cart: Cart): Promise<FileReport[]> {
    const files = await this.store.carts.files(cart.id);
    return files.map((f) => ({
      id: f.archive_id,
      path: f.path,
      state: f.state,
      size: f.size === null ? null : Number(f.size),
      bytesPulled: Number(f.bytes_pulled),
      attempts: f.attempts,
      polls: f.polls,
      error: f.error,
      hashtype: f.hash_type,
      verified: f.verified === 1,
      fromCache: f.from_cache === 1,
    }));
  }

  /**
   * Deletes the live cart of `uid`: it is gone for every new request at once, and its files leave
   * the volume as soon as no download of it is running.
   */
  async delete(uid: string, viewer?: Viewer): Promise<Cart> {
    const seen = viewer && await this.find(uid, viewer);
    const cart = await this.store.carts.delete(uid, Date.now(), seen?.id);
    if (!cart) throw cartNotFound(uid);
    log.info(`cart ${uid} deleted (${cart.file_count} file(s), ${cart.bytes} bytes)`, {
      uid,
      bytes: Number(cart.bytes),
    });
    await removeDeletedCarts(this.store, this.volume);
    return cart;
  }

  /** What the shared cache holds that no cart refers to (`cartd list`). */
  cacheTotals(): Promise<{ files: number; bytes: number }> {
    return this.store.cache.unreferencedTotals();
  }

  /** Every live cart with its size, least recently used first (`cartd list`). */
  async list(): Promise<CartListing[]> {
    const carts = await this.store.carts.sized(Date.now());
    return carts.map((c) => ({
      uid: c.uid,
      status: c.status,
      files: c.file_count,
      bytes: c.bytes,
      created: isoTime(c.created_at)!,
      lastUsed: isoTime(c.used_at)!,
    }));
  }

  /**
   * A ready cart's tar, rooted at the requested download name without its `.tar` (by default
   * `data_…` of when the cart became ready), with everything a download needs to know before its
   * first byte. Throws the contract's errors for a cart that is unknown, still staging, or failed.
   */
  async download(
    uid: string,
    requestedName?: string,
    viewer?: Viewer,
    format?: DownloadFormat,
  ): Promise<CartDownload> {
    const cart = await this.find(uid, viewer);
    if (cart.status === "error") throw cartFailed(cart.message);
    if (cart.status !== "ready") {
      const p = await this.store.carts.progress(cart.id);
      throw cartNotReady(
        `The cart is not ready for download (${p.filesReady} of ${p.files} files ready).`,
      );
    }
    // A folder gone from the volume (removed by hand, a volume lost) is said before any byte:
    // a 200 whose body then breaks off tells the client much less.
    if (cart.file_count > 0 && !existsSync(this.volume.dataRoot(cart.id))) {
      throw new CartdError(
        "failure",
        `the files of cart ${uid} are missing from the volume; delete it and create it again`,
      );
    }
    const readyAt = Number(cart.ready_at ?? cart.created_at);
    // A zip when asked for, or when the name asked for ends in .zip.
    const zip = format === "zip" || (format === undefined && /\.zip$/i.test(requestedName ?? ""));
    await this.touch(cart.id);
    if (zip) {
      const name = requestedName || defaultTarName(new Date(readyAt));
      const root = tarRootName(name.replace(/\.zip$/i, ""));
      return { ...await this.delivery.zip(cart, root, `${root}.zip`), root };
    }
    const { root, filename } = downloadName(requestedName || defaultTarName(new Date(readyAt)));
    return { ...await this.delivery.tar(cart, root, filename), root };
  }

  /**
   * A cart's tar that starts while it stages (see `CartDelivery.follow`): the same bytes as the
   * ready cart's tar under the same name (default: the uid). Its answer waits until every size is
   * known.
   */
  async follow(
    uid: string,
    requestedName?: string,
    viewer?: Viewer,
    signal?: AbortSignal,
  ): Promise<CartDownload> {
    const cart = await this.find(uid, viewer);
    if (cart.status === "error") throw cartFailed(cart.message);
    await this.touch(cart.id);
    const { root, filename } = downloadName(requestedName || `${uid}.tar`);
    return { ...await this.delivery.follow(cart, root, filename, signal), root };
  }

  /** The cart's files with their state and checksums (`GET /-/carts/<uid>/files`). */
  async fileList(uid: string, viewer?: Viewer): Promise<FileListing[]> {
    const cart = await this.find(uid, viewer);
    await this.touch(cart.id);
    return await this.delivery.files(cart);
  }

  /**
   * One file of a cart, as soon as it is verified (the cart may still be staging); see
   * `CartDelivery.file` for what a file that is not there, not ready or failed throws.
   */
  async fileDownload(uid: string, path: string, viewer?: Viewer): Promise<Delivered> {
    const cart = await this.find(uid, viewer);
    const file = await this.delivery.file(cart, path);
    await this.touch(cart.id);
    return file;
  }

  /** Removes expired, unused and least-recently-used carts as `options` say (`cartd gc`). */
  collectGarbage(options: GcOptions): Promise<GcReport> {
    return collectGarbage(this.store, this.volume, this.config, options);
  }
}

function toReport(cart: Cart, p: CartProgress): CartReport {
  return {
    uid: cart.uid,
    status: cart.status,
    phase: phaseOf(cart, p),
    message: cart.message,
    bundle: cart.bundle === 1,
    created: isoTime(cart.created_at)!,
    lastUsed: isoTime(cart.used_at)!,
    readyAt: isoTime(cart.ready_at),
    progress: {
      filesTotal: p.files,
      filesReady: p.filesReady,
      filesFailed: p.filesError,
      bytesDone: p.bytesDone,
      bytesTotal: p.bytesTotal,
      sizesKnown: p.sizesKnown,
      filesUnverified: p.filesUnverified,
      waitingForArchiveSince: isoTime(p.archiveWaitSince),
      waitingForSpaceSince: isoTime(p.spaceWaitSince),
    },
  };
}

function phaseOf(cart: Cart, p: CartProgress): CartPhase {
  if (cart.status === "ready" || cart.status === "error") return cart.status;
  if (p.filesPulling > 0 || p.filesReady > 0) return "pulling";
  if (p.filesOnTape > 0) return "staging";
  return "waiting";
}
