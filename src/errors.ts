/**
 * One error type for everything a user may see. It carries a message for humans, the HTTP status
 * the server answers with, and the exit code the CLI ends with. Anything else thrown inside cartd is
 * a bug or a backend failure: front ends log its detail and show a generic message instead.
 */

/** Exit codes of the `cartd` command; README documents them. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  notReady: 4,
  cartError: 5,
  config: 6,
} as const;

export type ExitCode = typeof ExitCode[keyof typeof ExitCode];

export class CartdError extends Error {
  readonly status: number;
  readonly exitCode: ExitCode;
  /** What the user can do about it, when there is something; shown after the message. */
  hint?: string;

  constructor(message: string, status = 500, exitCode: ExitCode = ExitCode.failure) {
    super(message);
    this.name = "CartdError";
    this.status = status;
    this.exitCode = exitCode;
  }

  withHint(hint: string): this {
    this.hint = hint;
    return this;
  }
}

/** The request (a cart body, a uid, a flag) is wrong; nothing was written. */
export const invalidInput = (message: string) => new CartdError(message, 400, ExitCode.usage);

/** No active cart answers to this uid. */
export const cartNotFound = (uid: string) =>
  new CartdError(`No cart with uid ${uid} found`, 404, ExitCode.notFound);

/** The cart exists but is still being staged. */
export const cartNotReady = (message: string) => new CartdError(message, 202, ExitCode.notReady);

/** The cart ended in error; `message` is the cart's own message. */
export const cartFailed = (message: string) => new CartdError(message, 500, ExitCode.cartError);

/** A configuration key has a value cartd cannot use. */
export const configError = (message: string) => new CartdError(message, 500, ExitCode.config);

/** The text of any thrown value, for logs. */
export function describe(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/**
 * A user-facing error for a known backend failure (a busy or full database), or undefined when
 * `err` is something else. The detail stays in the logs.
 */
export function backendFailure(err: unknown): CartdError | undefined {
  const text = describe(err);
  if (/database is locked|SQLITE_BUSY|database table is locked/i.test(text)) {
    return new CartdError(
      "The database is busy (locked by another process); try again shortly",
      503,
      ExitCode.failure,
    );
  }
  if (/database or disk is full|SQLITE_FULL/i.test(text)) {
    return new CartdError("The database's disk is full", 503, ExitCode.failure);
  }
  return undefined;
}
