/**
 * The worker: claims due file rows and moves each one step along
 * `waiting → staging → staged → pulling → ready | error`, writing every outcome back to the
 * database. Several workers (loops in one process, processes, nodes) share the rows through
 * leases; a worker that dies loses nothing but the lease, and verified files are never pulled
 * again.
 */
import { type Archive, ArchiveError } from "../archive/mod.ts";
import type { Config } from "../config.ts";
import { CartdError, describe, isKind } from "../errors.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";
import { sleep } from "../time.ts";
import { fileIdentity, waitingMessage } from "../store/cache.ts";
import type { Cart, CartFile, FileState, Store } from "../store/store.ts";
import { SpaceManager } from "../volume/space.ts";
import type { Volume } from "../volume/volume.ts";
import { formatDuration } from "../units.ts";
import { ArchiveHealth, type ArchiveStep } from "./archive_health.ts";
import { repeat } from "../time.ts";
import { WorkSignal } from "./work_signal.ts";
import { backoffDelay } from "./backoff.ts";
import { isDeadLocalOwner, newOwnerName } from "./owner.ts";
import { ChecksumMismatch, pullFile } from "./pull.ts";

/** A file as progress displays see it. */
export interface FileEvent {
  id: number;
  path: string;
  state: FileState;
  /** Why it failed, when it did. */
  error: string;
  size: number | null;
  bytesPulled: number;
}

/** Called whenever a file changes state or makes progress, for progress displays. */
export type WorkerEvent = (file: FileEvent, event: "state" | "progress") => void;

function fileEvent(file: CartFile): FileEvent {
  return {
    id: file.id,
    path: file.path,
    state: file.state,
    error: file.error,
    size: file.size === null ? null : Number(file.size),
    bytesPulled: Number(file.bytes_pulled),
  };
}

class LeaseLost extends Error {}

/**
 * A claimed file as the worker last saved it, and the claim's own name: every write checks it, so
 * a claim that ran out and was taken by anyone else, even another loop of this worker, can no
 * longer change the file.
 */
interface Job {
  file: CartFile;
  /** Its cart's uid, for log lines. */
  uid: string;
  owner: string;
  /** Names this claim's partial file, so two claims never write the same one. */
  token: string;
  /**
   * Outcomes of steps not written yet: a step followed at once by the next (a stage request by a
   * status that finds the file on disk, that by the pull) is written with the next step's write.
   * Losing them in a crash costs only a repeated archive request.
   */
  unsaved: Partial<CartFile>;
}

const progressWriteMs = 1000;

/**
 * How often a lease is renewed: well within the lease, and at least every 5 s, because renewing
 * is also how a worker learns that the cart it works for was deleted (and stops its pull).
 */
function heartbeatMs(leaseMs: number): number {
  return Math.max(Math.min(leaseMs / 3, 5000), 50);
}
const spaceWaitLogMs = 5 * 60_000;
/** A file still on tape has its stage request sent again every this many polls. */
const restageEveryPolls = 10;
const idlePollMs = 1000;

/** A set of worker loops sharing one lease owner and one view of the archive's health. */
export class Worker {
  /** This worker's name; each claim is named `owner#n`. */
  readonly owner = newOwnerName();
  /** Counts this worker's claims; with a random prefix, names each one apart on every node. */
  private claims = 0;
  private readonly claimPrefix = crypto.randomUUID().slice(0, 8);
  private readonly space: SpaceManager;
  private readonly health: ArchiveHealth;
  /** When a loop of this worker last logged a pause (the database out of reach). */
  private pauseLogged = 0;
  /** When this worker last logged each file's wait for space. */
  private readonly spaceWaitLogged = new Map<number, number>();
  /** Files whose pull this worker found corrupt (see `fail`). */
  private readonly mismatched = new Set<number>();
  /** Uids of carts this worker has worked on, for log lines (a few hundred at most). */
  private readonly uids = new Map<number, string>();

  constructor(
    private readonly store: Store,
    private readonly archive: Archive,
    private readonly volume: Volume,
    private readonly config: Config,
    private readonly onEvent?: WorkerEvent,
    /** Wakes idle loops when this process gets new work. */
    private readonly workArrived = new WorkSignal(),
  ) {
    this.space = new SpaceManager(store, volume, config);
    this.health = new ArchiveHealth(archive.name, config.retryInterval, config.pollMaxInterval);
  }

  /**
   * Works on one cart until it is ready, in error or deleted, with `config.workers` files at a
   * time, and returns the cart as it ends (undefined if it was deleted).
   */
  async drainCart(cartId: number, signal?: AbortSignal): Promise<Cart | undefined> {
    await reclaimCrashedWork(this.store);
    await this.store.carts.settle(cartId, Date.now());
    // The first loop to see the cart finished wakes the others from their idle sleep.
    const finished = new AbortController();
    const loops = Array.from({ length: this.config.workers }, async () => {
      await this.loop(signal, cartId, finished.signal);
      finished.abort();
    });
    await Promise.all(loops);
    const cart = await this.store.carts.byId(cartId);
    return cart?.deleted_at === null ? cart : undefined;
  }

  /** Works on every cart until `signal` aborts (the server's workers). */
  async run(signal: AbortSignal): Promise<void> {
    await reclaimCrashedWork(this.store);
    const loops = Array.from({ length: this.config.workers }, () => this.loop(signal));
    await Promise.all(loops);
  }

  /** Hands back every lease this worker holds. */
  releaseLeases(): Promise<void> {
    return this.store.work.release(this.owner);
  }

  private async loop(signal?: AbortSignal, cartId?: number, finished?: AbortSignal): Promise<void> {
    const wake = finished ? (signal ? AbortSignal.any([signal, finished]) : finished) : signal;
    while (!signal?.aborted && !finished?.aborted) {
      let wait: number | "done";
      try {
        wait = await this.step(signal, cartId);
      } catch (err) {
        // The database is busy or gone for a moment: say so (once a minute), wait, carry on.
        const now = Date.now();
        if (now - this.pauseLogged >= 60_000) {
          this.pauseLogged = now;
          log.warn(`workers paused: ${describe(err)}; they carry on when the database answers`);
        }
        wait = idlePollMs;
      }
      if (wait === "done") return;
      if (wait > 0) await this.workArrived.sleep(wait, wake);
    }
  }

  /** Claims and processes one due file; otherwise says how long to wait, or that the cart is done. */
  private async step(signal?: AbortSignal, cartId?: number): Promise<number | "done"> {
    // While the archive is down, only one step at a time probes it.
    const archive = this.health.permit(Date.now());
    if (archive.wait === 0) {
      try {
        const token = `${this.claimPrefix}-${++this.claims}`;
        const owner = `${this.owner}#${token}`;
        const file = await this.store.work.claim(owner, Date.now(), this.config.leaseTime, cartId);
        if (file) {
          const uid = await this.uidOf(file.cart_id);
          await this.process({ file, uid, owner, token, unsaved: {} }, signal);
          return 0;
        }
      } finally {
        if (archive.probe) this.health.probeEnded();
      }
    }
    if (cartId === undefined) return Math.min(archive.wait || idlePollMs, idlePollMs);
    const cart = await this.store.carts.byId(cartId);
    if (!cart || cart.deleted_at !== null || cart.status !== "staging") return "done";
    if (archive.wait > 0) return Math.min(archive.wait, idlePollMs);
    const due = await this.store.work.nextDue(cartId);
    if (due === undefined) {
      await this.store.carts.settle(cartId, Date.now());
      return 0;
    }
    return Math.min(Math.max(due - Date.now(), 20), idlePollMs);
  }

  /**
   * Takes the file from the shared cache when the cache holds it: the same archive id and the
   * checksum the request gives, verified; without a checksum, the archive's size and mtime (one
   * status request). Its cart is admitted first (see SpaceRecords.admit). True when the file is
   * done with for now: ready, or waiting for its cart to be admitted.
   */
  private async takeFromCache(job: Job, signal: AbortSignal): Promise<boolean> {
    const file = job.file;
    let candidates = await this.store.cache.matches(file.archive_id, file.hash_type, file.hash_sum);
    // A file whose mtime the archive gave already (a download may have laid it out) takes only a
    // copy of that mtime, so its tar stays the same.
    if (file.mtime !== null) {
      candidates = candidates.filter((b) =>
        b.mtime !== null && Number(b.mtime) === Number(file.mtime)
      );
    }
    if (candidates.length === 0) return false;
    if (file.hash_sum === "") {
      const status = await this.archive.status(file.archive_id, signal).catch(() => undefined);
      if (!status) return false;
      this.health.answered("status", Date.now());
      candidates = candidates.filter((blob) =>
        Number(blob.size) === status.size && status.mtime !== undefined &&
        Number(blob.mtime) === status.mtime
      );
    }
    for (const blob of candidates) {
      if (!this.volume.linkFromCache(blob.key!, Number(blob.size), file.cart_id, file.path)) {
        continue;
      }
      const cached = {
        id: Number(blob.id),
        size: Number(blob.size),
        mtime: blob.mtime === null ? null : Number(blob.mtime),
        verified: Number(blob.verified),
        crc32: blob.crc32 === null ? null : Number(blob.crc32),
      };
      let taken = await this.store.work.adopt(file, job.owner, cached, Date.now());
      if (taken === "unadmitted") {
        const space = await this.space.admit(file);
        if (!space.ok) {
          this.volume.unlinkFromCart(file.cart_id, file.path);
          if (space.never) await this.markError(job, space.message);
          else await this.waitForSpace(job, space.message);
          return true;
        }
        taken = await this.store.work.adopt(file, job.owner, cached, Date.now());
      }
      if (taken === "gone" || taken === "unadmitted") {
        this.volume.unlinkFromCart(file.cart_id, file.path);
        continue;
      }
      if (!taken) throw new LeaseLost(`lost the lease on file ${file.id}`);
      job.file = {
        ...job.file,
        state: "ready",
        size: Number(blob.size),
        mtime: blob.mtime,
        blob_id: Number(blob.id),
        from_cache: 1,
        reserved: 0,
      };
      metrics.cacheHits.inc();
      this.onEvent?.(fileEvent(job.file), "state");
      log.debug(`${fileOf(job)}: taken from the cache`, { uid: job.uid });
      if (taken.cartReady && !taken.cartRemoved) {
        await this.logReady(job);
        await this.volume.removePartials(file.cart_id).catch(() => {});
      }
      if (taken.cartRemoved) await this.removeIfCartGone(job);
      return true;
    }
    // The file linked for a cached copy evicted meanwhile is not left behind: the pull rewrites it.
    return false;
  }

  /**
   * True when another cart's file pulls the same file now (see `CacheRecords.leadPull`): this one
   * is given back to be tried again shortly, when the file is cached (or the other pull failed,
   * and this one pulls it).
   */
  private async waitForOtherPull(job: Job): Promise<boolean> {
    const file = job.file;
    const identity = fileIdentity(file.archive_id, file.hash_type, file.hash_sum);
    const now = Date.now();
    // Steps not written yet go first: waiting hands the file back.
    if (Object.keys(job.unsaved).length > 0) await this.save(job, {}, false);
    // Woken when that pull ends (see the store's `endPull`); looked at again now and then in case
    // its process died, and taken over when no one works on it any more.
    const turn = await this.store.cache.leadPull(identity, { id: file.id, owner: job.owner }, now, {
      untilMs: this.config.pollMaxInterval,
      abandonedMs: this.config.leaseTime + this.config.pollMaxInterval,
    });
    if (turn === "lead") {
      // Its wait is over: the message goes with the next write of the file.
      if (file.error === waitingMessage) this.note(job, { error: "" });
      return false;
    }
    log.debug(`${fileOf(job)}: another cart's file is pulling it; waiting`, { uid: job.uid });
    job.file = { ...job.file, next_try_at: now + this.config.pollMaxInterval, owner: null };
    // Nothing here waited on the archive or the disk: let requests in before the next claim.
    await sleep(0);
    return true;
  }

  /** A cart's uid (cached: looked up once per cart). */
  private async uidOf(cartId: number): Promise<string> {
    let uid = this.uids.get(cartId);
    if (uid === undefined) {
      uid = (await this.store.carts.byId(cartId))?.uid ?? `#${cartId}`;
      if (this.uids.size >= 500) this.uids.delete(this.uids.keys().next().value!);
      this.uids.set(cartId, uid);
    }
    return uid;
  }

  /**
   * Runs the steps a claimed file is due for, holding its lease with a heartbeat. Work stops when
   * the lease is lost, and also when it could not be renewed in time (the database is out of
   * reach): by then another worker may have the file.
   */
  private async process(job: Job, outer?: AbortSignal): Promise<void> {
    const claimed = job.file;
    const lease = new AbortController();
    const signal = outer ? AbortSignal.any([outer, lease.signal]) : lease.signal;
    const every = heartbeatMs(this.config.leaseTime);
    let renewed = Date.now();
    const heartbeat = repeat(every, async () => {
      try {
        const until = Date.now() + this.config.leaseTime;
        if (await this.store.work.renew(claimed.id, job.owner, until)) renewed = Date.now();
        else lease.abort(new LeaseLost("lease lost or cart gone"));
      } catch (err) {
        log.warn(`${fileOf(job)}: cannot renew its lease: ${describe(err)}`, { uid: job.uid });
        if (Date.now() - renewed > this.config.leaseTime - every) {
          lease.abort(new LeaseLost("the lease could not be renewed in time"));
        }
      }
    });
    try {
      // A file the cache holds is taken from it: no stage, no pull. One claimed again once staged
      // (after a tape recall, or a wait for space) may have been cached by another cart meanwhile,
      // or be pulled by another cart now (one that took the lead while this one's cart waited).
      const beforePull = job.file.state === "waiting" || job.file.state === "staged";
      if (beforePull && await this.takeFromCache(job, signal)) return;
      // Another cart's file is pulling this very file: wait, and take it from the cache after.
      if (beforePull && await this.waitForOtherPull(job)) return;
      // The lead was taken: a pull that ended (its file cached) just before is seen now, since a
      // pull's end and its cached file are committed together.
      if (beforePull && await this.takeFromCache(job, signal)) return;
      if (job.file.state === "waiting") await this.stage(job, signal);
      if (job.file.state === "staging") await this.poll(job, signal);
      if (job.file.state === "staged" || job.file.state === "pulling") await this.pull(job, signal);
    } catch (err) {
      if (err instanceof LeaseLost) {
        log.debug(`${fileOf(job)}: ${err.message}`, { uid: job.uid });
        // Its cart failed or went while it worked: if the claim is still this one's, give the
        // file back as it was, so no file of a failed cart shows "pulling" for ever.
        await this.release(job);
      } else if (signal.aborted) {
        log.debug(`${fileOf(job)}: work stopped (${describe(signal.reason)})`, { uid: job.uid });
        if (!lease.signal.aborted) await this.release(job);
      } else if (await this.cartGone(claimed.cart_id)) {
        // Its folder went with it, which is what failed the step: nothing to report.
        log.debug(`${fileOf(job)}: its cart was deleted meanwhile (${describe(err)})`, {
          uid: job.uid,
        });
      } else {
        await this.fail(job, err);
      }
    } finally {
      await heartbeat.stop();
    }
    // (A completion answers this itself.)
    if (job.file.state !== "ready") await this.removeIfCartGone(job);
  }

  /** Whether the cart was deleted, replaced or evicted while one of its files was worked on. */
  private async cartGone(cartId: number): Promise<boolean> {
    const cart = await this.store.carts.byId(cartId).catch(() => undefined);
    return cart !== undefined && cart.deleted_at !== null;
  }

  /**
   * A cart deleted while this worker was on one of its files may have had its folder removed
   * just before the worker created it again: remove it once more, so nothing is left behind.
   * (When the database cannot say, housekeeping's sweep of stray folders does it later.)
   */
  private async removeIfCartGone(job: Job): Promise<void> {
    const cartId = job.file.cart_id;
    const cart = await this.store.carts.byId(cartId).catch(() => undefined);
    if (cart === undefined || cart.removed_at === null) return;
    await this.volume.removeCart(cartId).catch((err) =>
      log.warn(`cart ${job.uid}: cannot remove its folder after deletion: ${describe(err)}`, {
        uid: job.uid,
      })
    );
  }

  private async stage(job: Job, signal: AbortSignal): Promise<void> {
    await this.archive.stage(job.file.archive_id, signal);
    const now = Date.now();
    this.health.answered("stage", now);
    this.note(job, { state: "staging", stage_requested_at: now, next_try_at: now, ...recovered });
  }

  private async poll(job: Job, signal: AbortSignal): Promise<void> {
    const { file } = job;
    const status = await this.archive.status(file.archive_id, signal);
    const now = Date.now();
    this.health.answered("status", now);
    const polls = file.polls + 1;
    if (status.onDisk) {
      return this.note(job, {
        state: "staged",
        size: status.size,
        mtime: status.mtime ?? Math.floor(now / 1000),
        polls,
        ...recovered,
      });
    }
    const waited = now - Number(file.stage_requested_at ?? now);
    if (waited > this.config.stageTimeout) {
      const seconds = Math.round(waited / 1000);
      const message = `file ${file.archive_id} is still on ${status.media} ${seconds} s after ` +
        "its stage request (stage_timeout)";
      return await this.markError(job, message);
    }
    // Still on tape after many polls: the stage request is sent again, in case the archive lost
    // it (a restart of its recall queue). Staging is idempotent, so a recall under way is not hurt.
    if (polls % restageEveryPolls === 0) {
      await this.archive.stage(file.archive_id, signal);
      log.info(`${fileOf(job)}: still on ${status.media} after ${polls} polls; stage asked again`, {
        uid: job.uid,
      });
    }
    const delay = backoffDelay(this.config.pollInterval, polls, this.config.pollMaxInterval);
    // Its size and mtime are known from now on (a download that follows the cart lays it out).
    const mtime = status.mtime ?? (file.mtime === null ? null : Number(file.mtime));
    await this.save(
      job,
      { polls, size: status.size, mtime, next_try_at: now + delay, ...recovered },
      true,
    );
  }

  private async pull(job: Job, signal: AbortSignal): Promise<void> {
    const file = job.file;
    const size = Number(file.size);
    const pulling = { state: "pulling" as const, attempts: file.attempts + 1, bytes_pulled: 0 };
    // No byte is pulled without a reservation; a released file holds none. The reservation
    // writes the file's steps so far with it.
    if (Number(file.reserved) < size) {
      const space = await this.space.reserve(file, job.owner, { ...job.unsaved, ...pulling });
      if (!space.ok && space.never) return await this.markError(job, space.message);
      if (!space.ok) return await this.waitForSpace(job, space.message);
      this.spaceWaitLogged.delete(file.id);
      this.saved(job, { ...pulling, reserved: size, space_wait_since: null, error: "" });
    } else {
      await this.save(job, pulling, false);
    }
    const target = this.volume.prepareDirectories(file.cart_id, file.path);
    let lastWrite = Date.now();
    let recording = false;
    let counted = 0;
    metrics.pullsInFlight.inc();
    const result = await pullFile({
      archive: this.archive,
      id: file.archive_id,
      hashtype: file.hash_type,
      hashsum: file.hash_sum,
      size,
      mtime: file.mtime === null ? undefined : Number(file.mtime),
      // A file never pulled before has no partial file of an earlier claim to remove.
      partial: await this.volume.claimPartial(file.cart_id, file.id, job.token, file.attempts > 0),
      target,
      signal,
      transferSize: this.config.transferSize,
      idleTimeoutMs: this.config.transferTimeout,
      onProgress: (bytes) => {
        metrics.pulledBytes.inc(bytes - counted);
        counted = bytes;
        const now = Date.now();
        if (now - lastWrite < progressWriteMs) return;
        lastWrite = now;
        job.file.bytes_pulled = bytes;
        this.onEvent?.(fileEvent(job.file), "progress");
        // One progress write at a time: a slow database never piles them up.
        if (recording) return;
        recording = true;
        this.store.work.save(file.id, job.owner, { bytes_pulled: bytes }, false, now)
          .catch((err) =>
            log.warn(`${fileOf(job)}: cannot record progress: ${describe(err)}`, { uid: job.uid })
          )
          .finally(() => recording = false);
      },
    }).finally(() => metrics.pullsInFlight.dec());
    metrics.pulledBytes.inc(result.bytes - counted);
    this.health.answered("pull", Date.now());
    const done = {
      size: result.bytes,
      bytes_pulled: result.bytes,
      verified: result.verified ? 1 : 0,
      crc32: result.crc32,
      ...recovered,
    };
    // Into the shared cache too, before the database says so: a cached file's row never names a
    // file that is not there.
    const key = await this.volume.addToCache(target, result.bytes);
    const blob = {
      key: key ?? null,
      archive_id: file.archive_id,
      hash_type: file.hash_type,
      hash_sum: file.hash_sum,
      verified: done.verified,
      size: result.bytes,
      mtime: file.mtime === null ? null : Number(file.mtime),
      crc32: result.crc32,
    };
    const completed = await this.store.work.complete(file, job.owner, done, Date.now(), blob)
      .catch(async (err) => {
        if (key) await this.volume.removeCached(key).catch(() => {});
        throw err;
      });
    if (!completed) {
      if (key) await this.volume.removeCached(key).catch(() => {});
      throw new LeaseLost(`lost the lease on file ${file.id}`);
    }
    job.file = { ...job.file, ...done, state: "ready", reserved: 0 };
    this.onEvent?.(fileEvent(job.file), "state");
    log.debug(
      `${fileOf(job)}: ${result.bytes} bytes, ${
        result.verified ? "verified" : "unverified (no hashsum)"
      }`,
      { uid: job.uid, bytes: result.bytes },
    );
    // Its cart is ready: no pull of it is left, so what killed or abandoned pulls left in its
    // partial folder (a retried file's earlier pull, say) goes, with the folder.
    if (completed.cartReady && !completed.cartRemoved) {
      await this.logReady(job);
      await this.volume.removePartials(file.cart_id).catch((err) =>
        log.warn(`cart ${job.uid}: cannot remove its partial folder: ${describe(err)}`, {
          uid: job.uid,
        })
      );
    }
    // Its cart was deleted and its folder removed while the file was pulled: the folder the pull
    // made again goes too.
    if (completed.cartRemoved) {
      await this.volume.removeCart(file.cart_id).catch((err) =>
        log.warn(`cart ${job.uid}: cannot remove its folder after deletion: ${describe(err)}`, {
          uid: job.uid,
        })
      );
    }
  }

  /**
   * No room for the file yet: wait with backoff, up to `space_wait`, then fail its cart. The wait
   * is logged when it begins and then every few minutes, not at every try.
   */
  private async waitForSpace(job: Job, message: string): Promise<void> {
    const now = Date.now();
    const since = Number(job.file.space_wait_since ?? now);
    if (now - since >= this.config.spaceWait) return await this.markError(job, message);
    const logged = this.spaceWaitLogged.get(job.file.id);
    if (logged === undefined || now - logged >= spaceWaitLogMs) {
      const until = new Date(since + this.config.spaceWait).toISOString();
      log.info(`${fileOf(job)}: ${message}; waiting for space until ${until}`, { uid: job.uid });
      this.spaceWaitLogged.set(job.file.id, now);
    }
    const delay = Math.min(
      Math.max((now - since) / 2, this.config.retryInterval),
      this.config.pollMaxInterval,
    );
    await this.save(job, {
      // A file waiting to be taken from the cache stays waiting: it is looked for there again.
      state: job.file.state === "waiting" ? "waiting" : "staged",
      space_wait_since: since,
      error: message,
      next_try_at: now + Math.round(delay * (0.5 + Math.random() * 0.5)),
    }, true);
  }

  /**
   * Records a failed step. A file that failed is tried again a few times (`retry_limit`); an
   * archive that is down is waited for (`archive_outage_wait`); a checksum mismatch is pulled once
   * more; anything else fails the file at once.
   */
  private async fail(job: Job, err: unknown): Promise<void> {
    const { file } = job;
    try {
      if (err instanceof ChecksumMismatch) {
        this.health.reachable(Date.now());
        // A second mismatch means the request's checksum (or the archive's file) is wrong. Pulls
        // cut short before do not count; a mismatch seen by a process since restarted is
        // forgotten, which costs one more pull, within `retry_limit` pulls in all.
        if (this.mismatched.has(file.id) || file.attempts > this.config.retryLimit) {
          this.mismatched.delete(file.id);
          return void await this.markError(job, err.message);
        }
        if (this.mismatched.size >= 10_000) this.mismatched.clear();
        this.mismatched.add(file.id);
        log.warn(`${fileOf(job)}: ${err.message}; pulling it once more`, { uid: job.uid });
        await this.retryLater(job, 1, err.message);
        return;
      }
      if (err instanceof ArchiveError) {
        const failure = this.judge(err, file);
        if (failure === "outage") return void await this.waitForArchive(job, err);
        this.health.reachable(Date.now());
        if (failure === "permanent") return void await this.markError(job, err.message);
        const failures = file.failures + 1;
        if (failures >= this.config.retryLimit) {
          return void await this.markError(
            job,
            `${err.message} (gave up after ${failures} tries)`,
          );
        }
        log.warn(
          `${fileOf(job)}: ${err.message}; try ${failures} of ${this.config.retryLimit}`,
          { uid: job.uid },
        );
        await this.retryLater(job, failures, err.message);
        return;
      }
      // The database is busy or down: the file keeps its place, and its lease runs out.
      if (isKind(err, "busy") || isKind(err, "unavailable")) {
        log.warn(`${fileOf(job)}: ${err.message}; it is tried again later`, { uid: job.uid });
        return;
      }
      // The volume refused a path (a planted symlink) or similar: the file cannot be placed.
      if (err instanceof CartdError) return void await this.markError(job, err.message);
      const message = diskMessage(err);
      if (message) return void await this.markError(job, message);
      // A file the step worked on went from under it: taken over by another claim whose lease
      // this one outlived, or removed by hand. Worth another try, within the budget.
      if (
        (err as { code?: unknown })?.code === "ENOENT" && file.failures + 1 < this.config.retryLimit
      ) {
        log.warn(`${fileOf(job)}: ${describe(err)}; trying again`, { uid: job.uid });
        return void await this.retryLater(job, file.failures + 1, describe(err));
      }
      log.error(`${fileOf(job)}: unexpected failure: ${describe(err)}`, { uid: job.uid });
      if (err instanceof Error && err.stack) log.debug(err.stack);
      await this.markError(job, `internal error while staging: ${describe(err)}`);
    } catch (saveErr) {
      // The database itself failed; the lease runs out and the step is tried again.
      log.error(`${fileOf(job)}: cannot record failure: ${describe(saveErr)}`, { uid: job.uid });
    }
  }

  /**
   * Settles a failure that could concern the archive or only this file (see `ArchiveHealth.judge`):
   * the file's while the archive answers the same kind of request for other files.
   */
  private judge(err: ArchiveError, file: CartFile): Exclude<ArchiveError["failure"], "unknown"> {
    if (err.failure !== "unknown") return err.failure;
    const recently = Date.now() - Math.max(60_000, this.config.pollMaxInterval);
    return this.health.judge(stepOf(file), file.id, recently);
  }

  /**
   * The archive is down: the file keeps its place and waits, while only one request at a time
   * probes the archive, until `archive_outage_wait` has passed since the outage began.
   */
  private async waitForArchive(job: Job, err: ArchiveError): Promise<void> {
    const now = Date.now();
    const outageBegan = this.health.unavailable(now, err.message);
    const since = Math.min(Number(job.file.outage_since ?? now), outageBegan);
    if (now - since >= this.config.archiveOutageWait) {
      return await this.markError(
        job,
        `${err.message} (the archive has been unavailable since ${
          new Date(since).toISOString()
        }; ` +
          `gave up after archive_outage_wait, ${formatDuration(this.config.archiveOutageWait)})`,
      );
    }
    await this.save(job, {
      state: job.file.state === "pulling" ? "staged" : job.file.state,
      bytes_pulled: 0,
      outage_since: since,
      error: err.message,
      next_try_at: this.health.nextContactAt(now),
    }, true);
  }

  private async retryLater(job: Job, failures: number, reason: string): Promise<void> {
    const delay = backoffDelay(this.config.retryInterval, failures, this.config.pollMaxInterval);
    await this.save(job, {
      // A pull that failed starts over from the archive's staged copy.
      state: job.file.state === "pulling" ? "staged" : job.file.state,
      failures,
      error: reason,
      outage_since: null,
      bytes_pulled: 0,
      next_try_at: Date.now() + delay,
    }, true);
  }

  /** Fails the file for good, and settles its cart in the same transaction. */
  private async markError(job: Job, message: string): Promise<void> {
    this.spaceWaitLogged.delete(job.file.id);
    const failed = await this.store.work.fail(job.file, job.owner, message, Date.now());
    if (!failed) throw new LeaseLost(`lost the lease on file ${job.file.id}`);
    job.file = { ...job.file, state: "error", error: message };
    this.onEvent?.(fileEvent(job.file), "state");
    log.warn(`${fileOf(job)} failed: ${message}`, { uid: job.uid });
    if (failed.cartFailed) {
      log.info(`cart ${job.uid} failed: file ${job.file.path}: ${message}`, { uid: job.uid });
    }
  }

  /** The lifecycle line of a cart that just became ready. */
  private async logReady(job: Job): Promise<void> {
    const cart = await this.store.carts.byId(job.file.cart_id).catch(() => undefined);
    if (!cart) return;
    const seconds = ((Number(cart.ready_at ?? Date.now()) - Number(cart.created_at)) / 1000)
      .toFixed(1);
    log.info(
      `cart ${cart.uid} ready: ${cart.file_count} file(s), ${cart.bytes} bytes, ${seconds} s after ` +
        "it was created",
      { uid: cart.uid, bytes: Number(cart.bytes) },
    );
  }

  private async release(job: Job): Promise<void> {
    const state = job.file.state === "pulling" ? "staged" : job.file.state;
    await this.save(job, { state, bytes_pulled: 0 }, true).catch(() => {});
  }

  /**
   * Writes `changes`, with the steps not written yet, to the file's row (while this worker holds
   * it) and to `job.file`.
   */
  private async save(job: Job, changes: Partial<CartFile>, release: boolean): Promise<void> {
    const now = Date.now();
    const all = { ...job.unsaved, ...changes, updated_at: now };
    const held = await this.store.work.save(job.file.id, job.owner, all, release, now);
    if (!held) throw new LeaseLost(`lost the lease on file ${job.file.id}`);
    this.saved(job, all);
  }

  /** Notes that `changes` (and every step before them) are written. */
  private saved(job: Job, changes: Partial<CartFile>): void {
    job.unsaved = {};
    job.file = { ...job.file, ...changes };
    if (changes.state !== undefined) this.onEvent?.(fileEvent(job.file), "state");
  }

  /** Notes a step's outcome, to be written with the next write of the file. */
  private note(job: Job, changes: Partial<CartFile>): void {
    job.unsaved = { ...job.unsaved, ...changes };
    job.file = { ...job.file, ...changes };
    if (changes.state !== undefined) this.onEvent?.(fileEvent(job.file), "state");
  }
}

/**
 * Frees the leases (and download registrations) of cartd processes of this host that have exited,
 * so a restarted cartd carries on at once instead of waiting for them to run out.
 */
export async function reclaimCrashedWork(store: Store): Promise<void> {
  const freed = await store.work.reap(isDeadLocalOwner);
  if (freed > 0) log.info(`took back ${freed} file(s) left by a cartd process that has exited`);
}

/** What a file that made progress leaves behind: no failures counted, no outage waited for. */
const recovered = { failures: 0, outage_since: null, error: "" };

/** The archive request a file's next step makes. */
function stepOf(file: CartFile): ArchiveStep {
  if (file.state === "waiting") return "stage";
  if (file.state === "staging") return "status";
  return "pull";
}

/** A clear message for a local disk failure (by its errno), or undefined for anything else. */
function diskMessage(err: unknown): string | undefined {
  const code = (err as { code?: unknown })?.code;
  if (code === "ENOSPC") return "Not enough space to download file (volume full)";
  if (code === "EDQUOT") return "Not enough space to download file (disk quota exceeded)";
  if (err instanceof Deno.errors.PermissionDenied || code === "EACCES" || code === "EROFS") {
    return `cannot write to the volume: ${describe(err)}`;
  }
  return undefined;
}

/** How log lines name a file a worker holds: its cart, archive id and path. */
function fileOf(job: Job): string {
  return `cart ${job.uid}: file ${job.file.archive_id} (${job.file.path})`;
}
