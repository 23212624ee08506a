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
import { backoffDelay } from "./backoff.ts";
import { newOwnerName } from "./owner.ts";

/** How long a receiver may take to answer. */
const answerTimeoutMs = 10_000;
/** Deliveries in flight at once. */
const inFlight = 8;
/** How long a delivery is leased: well past the answer timeout. */
const leaseMs = 60_000;
/** First and longest delay between tries. */
const firstRetryMs = 1000;
const longestRetryMs = 5 * 60_000;
/** How often to look for due notifications when there were none. */
const idleMs = 500;

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

  private async loop(): Promise<void> {
    const signal = this.stopping.signal;
    while (!signal.aborted) {
      let batch: Delivery[] = [];
      try {
        batch = await this.store.outbox.claim(this.owner, Date.now(), leaseMs, inFlight);
      } catch (err) {
        log.warn(`notifications: cannot read the outbox: ${describe(err)}`);
      }
      if (batch.length === 0) {
        await sleep(idleMs, signal);
        continue;
      }
      await Promise.all(batch.map((delivery) => this.deliver(delivery)));
    }
  }

  private async deliver(delivery: Delivery): Promise<void> {
    const { uid } = delivery.data;
    const what = `${delivery.type} of cart ${uid} to ${delivery.url}`;
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
      problem = describe(err);
    }
    try {
      if (problem === undefined) {
        await this.store.outbox.delivered(delivery.id, this.owner);
        metrics.notifications.inc({ outcome: "delivered" });
        log.debug(`notification ${what} delivered`, { uid });
        return;
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
