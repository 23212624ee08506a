/**
 * How the site stands now, read from its parts: the health check (`/-/health`: the database, the
 * archive and the volume, each on its own) and the figures behind the metrics' gauges.
 */
import { accessSync, constants } from "node:fs";
import type { ObservedArchive } from "../archive/observed.ts";
import { type Config, spaceBytes } from "../config.ts";
import { describe } from "../errors.ts";
import { log } from "../log.ts";
import type { SiteFigures } from "../metrics.ts";
import type { Store } from "../store/store.ts";
import { isoTime } from "../time.ts";
import type { Volume } from "../volume/volume.ts";

/** `/-/health`: each part's state, and the whole's. */
export interface HealthReport {
  /** `unavailable` (503): cartd cannot do its job; `degraded`: it can, but a part needs care. */
  status: "ok" | "degraded" | "unavailable";
  database: { status: "ok" | "unavailable"; message?: string };
  archive: {
    status: "ok" | "unreachable";
    /** Why it is unreachable (the health check's own ping). */
    message?: string;
    url: string;
    /** When it last answered a request of this process (ISO time). */
    lastAnswer: string | null;
    lastError: { message: string; at: string } | null;
  };
  volume: {
    status: "ok" | "low" | "unavailable";
    path: string;
    freeBytes: number | null;
    reserveBytes: number | null;
    limitBytes: number;
    message?: string;
  };
}

/** What anyone may see of the health: each part's state, without URLs, paths or errors. */
export function healthSummary(report: HealthReport) {
  return {
    status: report.status,
    database: { status: report.database.status },
    archive: { status: report.archive.status },
    volume: { status: report.volume.status },
  };
}

/** How often the health check asks the archive itself (answers in between are reused). */
const archivePingMs = 10_000;
/**
 * How long a health check waits for the database or the archive: a load balancer's check must
 * get an answer in time even from a part that hangs (that part is then reported down).
 */
const partWaitMs = 2000;

/** `promise`'s value, or `late` if it takes longer than `ms`. */
function within<T>(promise: Promise<T>, ms: number, late: T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<T>((resolve) => timer = setTimeout(() => resolve(late), ms));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Reads the site's health and figures; one per process. */
export class SiteStatus {
  private ping?: { at: number; result: Promise<string | undefined> };

  constructor(
    private readonly store: Store,
    private readonly volume: Volume,
    private readonly config: Config,
    private readonly archive: () => ObservedArchive,
  ) {}

  /** The archive as messages name it (never with credentials). */
  get archiveName(): string {
    return this.archive().name;
  }

  /** The database as messages name it (never with its password). */
  get databaseName(): string {
    return this.store.location;
  }

  async health(): Promise<HealthReport> {
    const [database, archive] = await Promise.all([this.databaseHealth(), this.archiveHealth()]);
    const volume = this.volumeHealth();
    const status = database.status !== "ok" || volume.status === "unavailable"
      ? "unavailable"
      : archive.status !== "ok" || volume.status !== "ok"
      ? "degraded"
      : "ok";
    return { status, database, archive, volume };
  }

  /** The figures the metrics' site gauges show. */
  async figures(): Promise<SiteFigures> {
    const counts = await this.store.stats.counts(Date.now());
    const total = this.volume.totalBytes();
    return {
      ...counts,
      volume: {
        freeBytes: this.volume.availableBytes(),
        sizeBytes: total,
        limitBytes: this.config.volumeSizeLimit,
        reserveBytes: spaceBytes(this.config.volumeReserve, total),
      },
    };
  }

  private async databaseHealth(): Promise<HealthReport["database"]> {
    const problem = await within(
      this.store.ping().then(() => undefined, (err) => describe(err)),
      partWaitMs,
      `no answer within ${partWaitMs / 1000} s`,
    );
    if (problem === undefined) return { status: "ok" };
    log.warn(`health check: database unreachable: ${problem}`);
    return { status: "unavailable", message: "database unreachable" };
  }

  private async archiveHealth(): Promise<HealthReport["archive"]> {
    const archive = this.archive();
    const now = Date.now();
    if (!this.ping || now - this.ping.at >= archivePingMs) {
      const result = archive.ping().then(() => undefined, (err) => describe(err));
      this.ping = { at: now, result };
    }
    // A ping still out after a while is itself the answer: the archive does not answer.
    const seconds = Math.round((Date.now() - this.ping.at) / 1000);
    const problem = await within(
      this.ping.result,
      Math.max(0, this.ping.at + partWaitMs - now),
      `no answer for ${Math.max(seconds, partWaitMs / 1000)} s`,
    );
    const failure = archive.lastFailure;
    return {
      status: problem === undefined ? "ok" : "unreachable",
      ...(problem === undefined ? {} : { message: problem }),
      url: archive.name,
      lastAnswer: isoTime(archive.lastAnswer ?? null),
      lastError: failure ? { message: failure.message, at: isoTime(failure.at)! } : null,
    };
  }

  private volumeHealth(): HealthReport["volume"] {
    const path = this.volume.root;
    const limitBytes = this.config.volumeSizeLimit;
    try {
      accessSync(path, constants.W_OK);
      const total = this.volume.totalBytes();
      const freeBytes = this.volume.availableBytes();
      const reserveBytes = spaceBytes(this.config.volumeReserve, total);
      return {
        status: freeBytes > reserveBytes ? "ok" : "low",
        path,
        freeBytes,
        reserveBytes,
        limitBytes,
        ...(freeBytes > reserveBytes
          ? {}
          : { message: "free space is at or below volume_reserve: pulls wait for eviction" }),
      };
    } catch (err) {
      return {
        status: "unavailable",
        path,
        freeBytes: null,
        reserveBytes: null,
        limitBytes,
        message: `the volume cannot be written: ${describe(err)}`,
      };
    }
  }
}
