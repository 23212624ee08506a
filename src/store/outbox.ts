/**
 * Notifications as rows (an outbox): when a cart becomes ready or fails, one row per receiver is
 * written in the same transaction as the cart's new status, so no crash can lose an event or send
 * one for a change that was rolled back. A deliverer (on any node) leases due rows, sends them,
 * and deletes each once its receiver took it; a failure pushes the row's next try back. A
 * receiver gets a cart's events in order: a row waits while an earlier one for the same cart and
 * receiver is still undelivered.
 */
import { type Kysely, sql } from "kysely";
import type { Database, NotificationRow } from "./schema.ts";
import type { SqlDialect } from "./sql_dialect.ts";

/** Where notifications go, read when an event is written (the configuration may change). */
export type Receivers = () => readonly string[];

/** What a notification says of a cart (the CloudEvent's `data`, less the download URL). */
export interface CartEventData {
  uid: string;
  status: "ready" | "error";
  message: string;
  files: number;
  bytes: number;
}

/** A notification leased for delivery. */
export interface Delivery {
  id: number;
  eventId: string;
  url: string;
  type: string;
  createdAt: number;
  attempts: number;
  data: CartEventData;
}

/**
 * Writes the event of a cart that just became ready or failed, for each receiver, within the
 * transaction that changed its status.
 */
export async function recordCartEvent(
  tx: Kysely<Database>,
  receivers: Receivers,
  cartId: number,
  now: number,
): Promise<void> {
  const urls = receivers();
  if (urls.length === 0) return;
  const cart = await tx.selectFrom("carts")
    .select(["uid", "status", "message", "file_count", "bytes"])
    .where("id", "=", cartId).executeTakeFirst();
  if (!cart || (cart.status !== "ready" && cart.status !== "error")) return;
  const data: CartEventData = {
    uid: cart.uid,
    status: cart.status,
    message: cart.message,
    files: Number(cart.file_count),
    bytes: Number(cart.bytes),
  };
  const eventId = crypto.randomUUID();
  await tx.insertInto("notifications").values(urls.map((url) => ({
    cart_id: cartId,
    event_id: eventId,
    url,
    type: `org.pacifica.cartd.cart.${cart.status}`,
    data: JSON.stringify(data),
    created_at: now,
    attempts: 0,
    next_try_at: now,
    owner: null,
    lease_until: null,
    last_error: "",
  }))).execute();
}

/** Leasing, completing and retrying notifications. */
export class OutboxRecords {
  constructor(private readonly db: Kysely<Database>, private readonly dialect: SqlDialect) {}

  /** Whether any notification may be due (a read, before a claim takes the write lock). */
  async anyDue(now: number): Promise<boolean> {
    const row = await this.db.selectFrom("notifications").select("id")
      .where("next_try_at", "<=", now)
      .where((eb) => eb.or([eb("lease_until", "is", null), eb("lease_until", "<", now)]))
      .limit(1).executeTakeFirst();
    return row !== undefined;
  }

  /**
   * Leases up to `limit` due notifications, each the earliest undelivered of its cart and URL,
   * none for the URLs in `skipUrls` (receivers already busy with this deliverer).
   */
  async claim(
    owner: string,
    now: number,
    leaseMs: number,
    limit: number,
    skipUrls: string[] = [],
  ): Promise<Delivery[]> {
    return await this.db.transaction().execute(async (tx) => {
      let query = tx.selectFrom("notifications as n").select("n.id")
        .where("n.next_try_at", "<=", now);
      if (skipUrls.length > 0) query = query.where("n.url", "not in", skipUrls);
      const due = await this.dialect.forUpdateSkipLocked(
        query
          .where((eb) => eb.or([eb("n.lease_until", "is", null), eb("n.lease_until", "<", now)]))
          .where(({ not, exists, selectFrom }) =>
            not(exists(
              selectFrom("notifications as earlier").select("earlier.id")
                .whereRef("earlier.cart_id", "=", "n.cart_id")
                .whereRef("earlier.url", "=", "n.url")
                .whereRef("earlier.id", "<", "n.id"),
            ))
          )
          .orderBy("n.next_try_at").orderBy("n.id").limit(limit),
      ).execute();
      if (due.length === 0) return [];
      const rows = await tx.updateTable("notifications")
        .set({ owner, lease_until: now + leaseMs })
        .where("id", "in", due.map((row) => row.id))
        .returningAll().execute();
      return rows.map(toDelivery).sort((a, b) => a.id - b.id);
    });
  }

  /** The receiver took it: it is done. */
  async delivered(id: number, owner: string): Promise<void> {
    await this.db.deleteFrom("notifications").where("id", "=", id).where("owner", "=", owner)
      .execute();
  }

  /** It failed: try again at `nextTryAt`. */
  async retryLater(id: number, owner: string, error: string, nextTryAt: number): Promise<void> {
    await this.db.updateTable("notifications")
      .set((eb) => ({
        attempts: eb("attempts", "+", 1),
        last_error: error.slice(0, 500),
        next_try_at: nextTryAt,
        owner: null,
        lease_until: null,
      }))
      .where("id", "=", id).where("owner", "=", owner).execute();
  }

  /** Given up on: removed (the deliverer logs it). */
  async giveUp(id: number, owner: string): Promise<void> {
    await this.delivered(id, owner);
  }

  /** Notifications not delivered yet. */
  async pending(): Promise<number> {
    const row = await sql<{ n: number | string }>`select count(*) as n from notifications`
      .execute(this.db);
    return Number(row.rows[0].n);
  }
}

function toDelivery(row: NotificationRow): Delivery {
  return {
    id: Number(row.id),
    eventId: row.event_id,
    url: row.url,
    type: row.type,
    createdAt: Number(row.created_at),
    attempts: Number(row.attempts),
    data: JSON.parse(row.data),
  };
}
