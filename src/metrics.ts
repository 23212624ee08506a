/**
 * cartd's Prometheus metrics, in one registry per process: the core counts what it does (bytes
 * pulled and served, archive requests, evictions), src/http counts requests and renders the
 * registry on `GET /-/metrics`. Counters belong to the process and never go backwards; gauges that
 * describe the database or the volume are read from them at each scrape (see `observeSite`), so
 * every node of a site reports the same numbers for them.
 *
 * prom-client's parts are imported one by one: its index also loads cluster, push-gateway and
 * default-metric code that a CLI run would pay for at every start (about 25 ms and 4 MiB).
 */
import type * as Prom from "prom-client";
import CounterModule from "prom-client/lib/counter.js";
import GaugeModule from "prom-client/lib/gauge.js";
import HistogramModule from "prom-client/lib/histogram.js";
import RegistryModule from "prom-client/lib/registry.js";
import type { SiteCounts } from "./store/stats.ts";
import { version } from "./version.ts";

const Counter = CounterModule as unknown as typeof Prom.Counter;
const Gauge = GaugeModule as unknown as typeof Prom.Gauge;
const Histogram = HistogramModule as unknown as typeof Prom.Histogram;
const Registry = RegistryModule as unknown as typeof Prom.Registry;

/** The process's registry: everything below is registered in it. */
export const registry = new Registry();
const registers = [registry];

/** What an archive request was for (`ping` is the health check's). */
export type ArchiveRequestKind = "stage" | "status" | "pull" | "ping";

/** Latency buckets (seconds) from a quick status answer to a tape recall's stage request. */
const archiveBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const httpBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60];

/** The metrics the core and the HTTP front end update. */
export const metrics = {
  pulledBytes: new Counter({
    name: "cartd_pulled_bytes_total",
    help: "Bytes pulled from the archive by this process (failed pulls included)",
    registers,
  }),
  servedBytes: new Counter({
    name: "cartd_served_bytes_total",
    help: "Bytes of cart downloads sent by this process",
    registers,
  }),
  archiveRequests: new Counter({
    name: "cartd_archive_requests_total",
    help: "Archive requests by this process, by kind and outcome " +
      "(ok, outage, file, unknown, permanent, aborted)",
    labelNames: ["kind", "outcome"] as const,
    registers,
  }),
  archiveDuration: new Histogram({
    name: "cartd_archive_request_duration_seconds",
    help: "Time to the archive's answer (for a pull, to its first byte), by kind",
    labelNames: ["kind"] as const,
    buckets: archiveBuckets,
    registers,
  }),
  pullsInFlight: new Gauge({
    name: "cartd_pulls_in_flight",
    help: "Files this process is pulling from the archive now",
    registers,
  }),
  downloadsInFlight: new Gauge({
    name: "cartd_downloads_in_flight",
    help: "Cart downloads this process is sending now",
    registers,
  }),
  evictions: new Counter({
    name: "cartd_evictions_total",
    help: "Carts (reason space) and cached files no cart referred to (reason cache) this process " +
      "evicted to make room",
    labelNames: ["reason"] as const,
    registers,
  }),
  gcRemovals: new Counter({
    name: "cartd_gc_removals_total",
    help: "Carts and cached files this process's gc removed, by reason",
    labelNames: ["reason"] as const,
    registers,
  }),
  cacheHits: new Counter({
    name: "cartd_cache_hits_total",
    help: "Files this process took from the shared cache instead of the archive",
    registers,
  }),
  notifications: new Counter({
    name: "cartd_notifications_total",
    help: "Notification deliveries by this process, by outcome (delivered, failed, given_up)",
    labelNames: ["outcome"] as const,
    registers,
  }),
  httpRequests: new Counter({
    name: "cartd_http_requests_total",
    help: "HTTP requests answered by this process, by route and status",
    labelNames: ["route", "status"] as const,
    registers,
  }),
  httpDuration: new Histogram({
    name: "cartd_http_request_duration_seconds",
    help: "Time from a request to the end of its answer (a download's last byte), by route",
    labelNames: ["route"] as const,
    buckets: httpBuckets,
    registers,
  }),
};

// Series that exist from the start, so a rate over them is defined before the first event.
metrics.evictions.inc({ reason: "space" }, 0);
metrics.evictions.inc({ reason: "cache" }, 0);
for (const reason of ["expired", "unused", "evicted", "cache"]) {
  metrics.gcRemovals.inc({ reason }, 0);
}
for (const outcome of ["delivered", "failed", "given_up"]) {
  metrics.notifications.inc({ outcome }, 0);
}

new Gauge({
  name: "cartd_build_info",
  help: "cartd's version and runtime; always 1",
  labelNames: ["version", "deno", "v8", "typescript"] as const,
  registers,
}).set({
  version,
  deno: Deno.version.deno,
  v8: Deno.version.v8,
  typescript: Deno.version.typescript,
}, 1);

/** What the site's gauges are read from at each scrape: the database's counts and the volume. */
export type SiteFigures = SiteCounts & {
  volume: { freeBytes: number; sizeBytes: number; limitBytes: number; reserveBytes: number };
};

let readSite: (() => Promise<SiteFigures>) | undefined;
/**
 * The read in progress: the gauges of one scrape are collected at once and share it. Undefined
 * when the database or the volume cannot be read: those gauges are left out, and the process's
 * own metrics are still served.
 */
let current: Promise<SiteFigures | undefined> | undefined;

function figures(): Promise<SiteFigures | undefined> {
  current ??= readSite!().catch(() => undefined).finally(() => current = undefined);
  return current;
}

/** A gauge set from the site's figures at each scrape; absent until `observeSite` is called. */
function siteGauge<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[],
  fill: (gauge: Prom.Gauge<L>, site: SiteFigures) => void,
) {
  new Gauge({
    name,
    help,
    labelNames,
    registers,
    async collect() {
      this.reset();
      const site = readSite && await figures();
      if (site) fill(this, site);
    },
  });
}

new Gauge({
  name: "cartd_site_up",
  help: "1 when this scrape could read the database and the volume (the gauges below), else 0",
  registers,
  async collect() {
    this.set(readSite && await figures() ? 1 : 0);
  },
});

siteGauge("cartd_carts", "Carts not deleted, by status", ["status"], (gauge, site) => {
  for (const status of ["staging", "ready", "error"]) {
    gauge.set({ status }, site.cartsByStatus[status] ?? 0);
  }
});
siteGauge("cartd_files", "Files of carts not deleted, by state", ["state"], (gauge, site) => {
  for (const state of ["waiting", "staging", "staged", "pulling", "ready", "error"]) {
    gauge.set({ state }, site.filesByState[state] ?? 0);
  }
});
siteGauge(
  "cartd_carts_deleted",
  "Carts deleted so far, by reason (deleted, replaced, expired, unused, evicted)",
  ["reason"],
  (gauge, site) => {
    // Every reason from the start, so alert rules need not wait for a first deletion.
    for (const reason of ["deleted", "replaced", "expired", "unused", "evicted"]) {
      gauge.set({ reason }, 0);
    }
    for (const [reason, count] of Object.entries(site.cartsDeletedByReason)) {
      gauge.set({ reason }, count);
    }
  },
);
siteGauge(
  "cartd_reserved_bytes",
  "Bytes reserved on the volume by pulls in progress",
  [],
  (g, s) => {
    g.set(s.reservedBytes);
  },
);
siteGauge(
  "cartd_notifications_pending",
  "Notifications not delivered yet (the outbox)",
  [],
  (g, s) => g.set(s.notificationsPending),
);
siteGauge(
  "cartd_volume_used_bytes",
  "Bytes of verified files on the volume, each once",
  [],
  (g, s) => {
    g.set(s.cartBytes);
  },
);
siteGauge("cartd_volume_free_bytes", "Free bytes on the volume's file system", [], (g, s) => {
  g.set(s.volume.freeBytes);
});
siteGauge("cartd_volume_size_bytes", "Size of the volume's file system", [], (g, s) => {
  g.set(s.volume.sizeBytes);
});
siteGauge(
  "cartd_volume_limit_bytes",
  "volume_size_limit (0: none, only the disk limits)",
  [],
  (g, s) => g.set(s.volume.limitBytes),
);
siteGauge(
  "cartd_volume_reserve_bytes",
  "Free space pulls leave untouched (volume_reserve)",
  [],
  (g, s) => g.set(s.volume.reserveBytes),
);

/** Where the site's gauges are read from (the server calls it once it has opened cartd). */
export function observeSite(read: () => Promise<SiteFigures>): void {
  readSite = read;
}

/** The registry in Prometheus' text format, with its content type. */
export async function renderMetrics(): Promise<{ body: string; contentType: string }> {
  return { body: await registry.metrics(), contentType: registry.contentType };
}
