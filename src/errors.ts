/**
 * Errors a user may see. The core says what kind of trouble it is (a cart not found, input refused,
 * a busy database, …) and a message for humans; each front end maps kinds to what it speaks:
 * src/http/errors.ts to HTTP statuses, commands/exit_codes.ts to exit codes. Anything else thrown
 * inside cartd is a bug or a backend failure: front ends log its detail and show a generic message.
 */

/** What went wrong, in terms a front end can answer for. */
export type ErrorKind =
  /** The request, a uid or a flag is wrong; nothing was written. */
  | "invalid"
  /** The input is larger than cartd accepts. */
  | "tooLarge"
  /** No live cart answers to the uid (or there is no database at all). */
  | "notFound"
  /** The cart exists but is still being staged. */
  | "notReady"
  /** The cart ended in error; the message is the cart's own. */
  | "cartFailed"
  /** A configuration value cartd cannot use. */
  | "config"
  /** The database is locked by another process; trying again shortly will do. */
  | "busy"
  /** Something cartd needs is down or full (its database unreachable, the database's disk full). */
  | "unavailable"
  /** A foreground run was stopped by the user; running it again carries on. */
  | "interrupted"
  /** The uid is held by another user's cart. */
  | "conflict"
  /** Any other failure the message explains (a migration, a refused path on disk, ...). */
  | "failure";

/** An error of a known kind, with a message meant for people. */
export class CartdError extends Error {
  /** What the user can do about it, when there is something; shown after the message. */
  hint?: string;

  /** `cause`: the failure behind it (a driver error, say), for logs; users see `message`. */
  constructor(readonly kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CartdError";
  }

  /** Adds what the user can do about it. */
  withHint(hint: string): this {
    this.hint = hint;
    return this;
  }
}

/** True when `err` is a cartd error of `kind`. */
export function isKind(err: unknown, kind: ErrorKind): err is CartdError {
  return err instanceof CartdError && err.kind === kind;
}

/** The request (a cart body, a uid, a flag) is wrong; nothing was written. */
export const invalidInput = (message: string) => new CartdError("invalid", message);

/** No live cart answers to this uid. */
export const cartNotFound = (uid: string) =>
  new CartdError("notFound", `No cart with uid ${uid} found`);

/** The cart exists but is still being staged. */
export const cartNotReady = (message: string) => new CartdError("notReady", message);

/** The cart ended in error; `message` is the cart's own message. */
export const cartFailed = (message: string) => new CartdError("cartFailed", message);

/** A configuration key has a value cartd cannot use. */
export const configError = (message: string) => new CartdError("config", message);

/** The text of any thrown value, for logs: with the failure behind it, when it has one. */
export function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const text = err.message || err.name;
  return err instanceof CartdError && err.cause !== undefined
    ? `${text} (${describe(err.cause)})`
    : text;
}
