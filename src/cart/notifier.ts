/**
 * Delivers the notification outbox (see src/store/outbox.ts): each cart event is POSTed to its
 * receiver as a CloudEvent (structured mode, `application/cloudevents+json`), at least once, in
 * order per cart. A receiver that fails or is slow gets the event again later, with backoff, until
 * `notify_give_up` has passed since the event; then it is dropped with a log line. Deliveries run
 * on their own, never on a request's path or a worker's, so a dead receiver slows nothing else.
 */
import type { Config } from "../config.ts";
import { describe } from "../errors.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";
import type { Delivery, Store } from "../store/store.ts";
import { sleep } from "../time.ts";
import { version } from "../version.ts";
import { networkReason } from "../archive/pacifica.ts";
import { backoffDelay } from "./backoff.ts";
import { newOwnerName } from "./owner.ts";

/** How long a receiver may take to answer. */
const answerTimeoutMs = 10_000;
/** Deliveries in flight at once, and to one receiver. */
const inFlight = 8;
const perReceiver = 2;
/** How long a delivery is leased: well past the answer timeout. */
const leaseMs = 60_000;
/** First and longest delay between tries. */
const firstRetryMs = 1000;
const longestRetryMs = 5 * 60_000;
/** How often to look for due notifications when there were none. */
const idleMs = 500;

/**
 * A receiver's URL as logs show it: its origin alone, since webhook URLs often carry their secret
 * in the path or the query (and credentials before the host).
 */
export function shownUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return parsed.pathname === "/" && !parsed.search ? parsed.origin : `${parsed.origin}/…`;
  } catch {
    return "(a notify_url)";
  }
}

/** The CloudEvent (JSON, structured mode) a delivery sends. */
export function cloudEvent(delivery: Delivery, publicUrl: string) {
  const { data } = delivery;
  return {
    specversion: "1.0",
    id: delivery.eventId,
    source: publicUrl || "cartd",
    type: delivery.type,
    subject: data.uid,
    time: new Date(delivery.createdAt).toISOString(),
    datacontenttype: "application/json",
    data: publicUrl ? { ...data, url: `${publicUrl}/${encodeURIComponent(data.uid)}` } : data,
  };
}

/** Delivers notifications until stopped (`cartd serve` runs one). */
export class Notifier {
  private readonly owner = newOwnerName();
  /** Receivers whose last delivery failed: said once when they start failing, once on recovery. */
  private readonly failing = new Set<string>();
  private readonly stopping = new AbortController();
  private running?: Promise<void>;

  constructor(private readonly store: Store, private readonly config: Config) {}

  start(): void {
    this.running ??= this.loop();
  }

  /** Stops taking new deliveries and waits for those in flight (each ends by its timeout). */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.running;
  }

  /**
   * Keeps up to `inFlight` deliveries going, each on its own (a slow receiver holds one slot, not
   * a batch), and at most `perReceiver` to one receiver, so a receiver that hangs cannot take
   * every slot from the others.
   */
  private async loop(): Promise<void> {
    const signal = this.stopping.signal;
    const running = new Map<Promise<void>, string>();
    while (!signal.aborted) {
      const busy = new Map<string, number>();
      for (const url of running.values()) busy.set(url, (busy.get(url) ?? 0) + 1);
      const skipUrls = [...busy].filter(([, n]) => n >= perReceiver).map(([url]) => url);
      let batch: Delivery[] = [];
      const free = inFlight - running.size;
      try {
        if (free > 0 && await this.store.outbox.anyDue(Date.now())) {
          batch = await this.store.outbox.claim(this.owner, Date.now(), leaseMs, free, skipUrls);
        }
      } catch (err) {
        log.warn(`notifications: cannot read the outbox: ${describe(err)}`);
      }
      for (const delivery of batch) {
        const sending: Promise<void> = this.deliver(delivery).finally(() =>
          running.delete(sending)
        );
        running.set(sending, delivery.url);
      }
      if (batch.length === 0 || running.size >= inFlight) {
        // Until the next look at the outbox, or a slot comes free.
        await Promise.race([sleep(idleMs, signal), ...running.keys()]);
      }
    }
    await Promise.all(running.keys());
  }

  private async deliver(delivery: Delivery): Promise<void> {
    const { uid } = delivery.data;
    const what = `${delivery.type} of cart ${uid} to ${shownUrl(delivery.url)}`;
    let problem: string | undefined;
    try {
      const response = await fetch(delivery.url, {
        method: "POST",
        headers: {
          "content-type": "application/cloudevents+json; charset=utf-8",
          "user-agent": `cartd/${version}`,
        },
        body: JSON.stringify(cloudEvent(delivery, this.config.publicUrl)),
        signal: AbortSignal.timeout(answerTimeoutMs),
      });
      await response.body?.cancel();
      if (!response.ok) problem = `answered ${response.status}`;
    } catch (err) {
      problem = networkReason(err);
    }
    try {
      const receiver = shownUrl(delivery.url);
      if (problem === undefined) {
        await this.store.outbox.delivered(delivery.id, this.owner);
        metrics.notifications.inc({ outcome: "delivered" });
        log.debug(`notification ${what} delivered`, { uid });
        if (this.failing.delete(delivery.url)) {
          log.info(`notifications to ${receiver} go through again`);
        }
        return;
      }
      if (!this.failing.has(delivery.url)) {
        this.failing.add(delivery.url);
        log.warn(
          `notifications to ${receiver} fail (${problem}); each is tried again until ` +
            "notify_give_up",
        );
      }
      const now = Date.now();
      if (now - delivery.createdAt >= this.config.notifyGiveUp) {
        await this.store.outbox.giveUp(delivery.id, this.owner);
        metrics.notifications.inc({ outcome: "given_up" });
        log.warn(
          `notification ${what} given up after ${delivery.attempts + 1} tries ` +
            `(notify_give_up): ${problem}`,
          { uid },
        );
        return;
      }
      const delay = backoffDelay(firstRetryMs, delivery.attempts + 1, longestRetryMs);
      await this.store.outbox.retryLater(delivery.id, this.owner, problem, now + delay);
      metrics.notifications.inc({ outcome: "failed" });
      log.debug(`notification ${what} failed (${problem}); next try in ${delay} ms`, { uid });
    } catch (err) {
      // Its lease runs out and it is tried again.
      log.warn(`notifications: cannot record the outcome of ${what}: ${describe(err)}`, { uid });
    }
  }
}
