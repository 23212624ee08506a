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

/** How often the health check asks the archive itself (answers in between are reused). */
const archivePingMs = 10_000;

/** Reads the site's health and figures; one per process. */
export class SiteStatus {
  private ping?: { at: number; result: Promise<string | undefined> };

  constructor(
    private readonly store: Store,
    private readonly volume: Volume,
    private readonly config: Config,
    private readonly archive: () => ObservedArchive,
  ) {}

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
    try {
      await this.store.ping();
      return { status: "ok" };
    } catch (err) {
      log.warn(`health check: database unreachable: ${describe(err)}`);
      return { status: "unavailable", message: "database unreachable" };
    }
  }

  private async archiveHealth(): Promise<HealthReport["archive"]> {
    const archive = this.archive();
    const now = Date.now();
    if (!this.ping || now - this.ping.at >= archivePingMs) {
      const result = archive.ping().then(() => undefined, (err) => describe(err));
      this.ping = { at: now, result };
    }
    const problem = await this.ping.result;
    const failure = archive.lastFailure;
    return {
      status: problem === undefined ? "ok" : "unreachable",
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
