/**
 * The conditions the store's queries share, written once: what a live cart is, what work is due
 * and unleased, which carts a running download holds, and which files a worker still has work for.
 */
import { type ExpressionBuilder, type RawBuilder, sql } from "kysely";
import type { Database, FileState } from "./schema.ts";

/** States a worker still has something to do for. */
export const pendingStates: FileState[] = ["waiting", "staging", "staged", "pulling"];

/**
 * A cart that answers to its uid: not deleted, not a draft, not expired (`lifetime` > 0). Plain
 * SQL, usable in a query builder's `where` and in the hot lookup by uid (which skips the builder).
 */
export function liveCart(now: number, lifetime: number): RawBuilder<boolean> {
  const notDeleted = sql`carts.deleted_at is null and carts.status != 'creating'`;
  if (lifetime <= 0) return sql<boolean>`(${notDeleted})`;
  return sql<boolean>`(${notDeleted}
    and (carts.finished_at is null or carts.finished_at > ${now - lifetime}))`;
}

/** A cart whose files workers still take: staging and not deleted. */
export function stagingCart(eb: ExpressionBuilder<Database, "carts">) {
  return eb.and([eb("carts.status", "=", "staging"), eb("carts.deleted_at", "is", null)]);
}

/** A file whose cart workers still take (a seek on the cart's key, not a list of carts). */
export function ofStagingCart({ exists, selectFrom }: ExpressionBuilder<Database, "files">) {
  return exists(
    selectFrom("carts").select("carts.id").whereRef("carts.id", "=", "files.cart_id")
      .where(stagingCart),
  );
}

/** A file with a step to do now that no worker holds (or whose holder's lease ran out). */
export function dueAndUnleased(now: number) {
  return (eb: ExpressionBuilder<Database, "files">) =>
    eb.and([
      eb("files.state", "in", pendingStates),
      eb("files.next_try_at", "<=", now),
      eb.or([eb("files.lease_until", "is", null), eb("files.lease_until", "<", now)]),
    ]);
}

/** A cart no running download holds (a download's lease runs out if its process dies). */
export function noLiveDownload(now: number) {
  return ({ not, exists, selectFrom }: ExpressionBuilder<Database, "carts">) =>
    not(exists(
      selectFrom("downloads").select("downloads.id")
        .whereRef("downloads.cart_id", "=", "carts.id")
        .where("downloads.lease_until", ">", now),
    ));
}
