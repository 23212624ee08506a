/**
 * Who asked what, and how it went: a request id (echoed in `X-Request-Id`), the client's address
 * (from `X-Forwarded-For` only when the connection comes from a configured proxy), and one access
 * log line per request, written when its answer is complete (a download's when its body ends).
 */
import { BlockList, isIP } from "node:net";
import { log, logs } from "../log.ts";
import type { StreamEnd } from "../io.ts";
import { metrics } from "../metrics.ts";

/** Addresses and networks (`10.0.0.0/8`) whose `X-Forwarded-*` headers are believed. */
export class TrustedProxies {
  private readonly list = new BlockList();
  private readonly empty: boolean;

  constructor(entries: readonly string[]) {
    this.empty = entries.length === 0;
    for (const entry of entries) {
      const [address, prefix] = entry.split("/");
      const family = isIP(address) === 6 ? "ipv6" : "ipv4";
      if (prefix === undefined) this.list.addAddress(address, family);
      else this.list.addSubnet(address, Number(prefix), family);
    }
  }

  has(address: string): boolean {
    if (this.empty) return false;
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 6 ? "ipv6" : "ipv4");
  }
}

/** A request id another hop may have given: short, and nothing a log line could be broken by. */
const saneRequestId = /^[A-Za-z0-9._:=+\/-]{1,128}$/;

/** One request's id, client, route and access line. */
export class RequestRecord {
  readonly id: string;
  readonly client: string;
  /** The route's pattern (`GET /{uid}`), set once the request is routed; `other` if none. */
  route = "other";
  /** The cart the request is about, if any. */
  uid?: string;
  /** The name of the caller's token, when access control is on. */
  user?: string;
  /** The request's path, as sent (percent-encoded). */
  readonly path: string;
  private readonly started = performance.now();

  constructor(
    private readonly req: Request,
    peer: string | undefined,
    proxies: TrustedProxies,
  ) {
    const fromProxy = peer !== undefined && proxies.has(peer);
    const given = req.headers.get("x-request-id");
    this.id = fromProxy && given && saneRequestId.test(given) ? given : crypto.randomUUID();
    this.client = fromProxy ? forwardedClient(req, proxies) ?? peer : peer ?? "-";
    this.path = new URL(req.url).pathname;
  }

  /** Counts and logs an answer whose body (if any) is sent as it is. */
  answered(response: Response): void {
    const length = response.headers.get("content-length");
    this.finish(response.status, length === null ? 0 : Number(length));
  }

  /** Counts and logs a streamed answer, once its body has ended. */
  streamed(status: number, end: StreamEnd): void {
    this.finish(status, end.bytes, end.how === "complete" ? "" : ` (${end.how})`);
  }

  private finish(status: number, bytes: number, note = "") {
    const seconds = (performance.now() - this.started) / 1000;
    const { count, duration: latency } = httpSeries(this.route, status);
    count.inc();
    latency.observe(seconds);
    if (!logs("info")) return;
    const path = this.path;
    const duration = Math.round(seconds * 1000);
    log.info(
      `${this.client} ${this.user ?? "-"} "${this.req.method} ${path}" ${status} ${bytes} B ` +
        `${duration} ms${note} request ${this.id}`,
      {
        requestId: this.id,
        uid: this.uid,
        route: this.route,
        status,
        duration,
        bytes,
        client: this.client,
        user: this.user,
      },
    );
  }
}

/**
 * The client behind the trusted proxies: the last address of `X-Forwarded-For` that is not one of
 * them (each proxy appends the address it was reached from; earlier entries can be forged).
 */
function forwardedClient(req: Request, proxies: TrustedProxies): string | undefined {
  const chain = (req.headers.get("x-forwarded-for") ?? "").split(",").map((a) => a.trim())
    .filter((a) => isIP(a) !== 0);
  for (let i = chain.length - 1; i >= 0; i--) {
    if (!proxies.has(chain[i]) || i === 0) return chain[i];
  }
  return undefined;
}

type Series = {
  count: ReturnType<typeof metrics.httpRequests.labels>;
  duration: ReturnType<typeof metrics.httpDuration.labels>;
};
/** The labelled series of each route and status (looking labels up per request is costly). */
const series = new Map<string, Series>();

function httpSeries(route: string, status: number): Series {
  const key = `${route} ${status}`;
  let found = series.get(key);
  if (!found) {
    found = {
      count: metrics.httpRequests.labels({ route, status }),
      duration: metrics.httpDuration.labels({ route }),
    };
    series.set(key, found);
  }
  return found;
}
