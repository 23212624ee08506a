/**
 * What each kind of core error answers over HTTP: one table, so every route maps errors the same
 * way, and a 503 tells the client when to come back.
 */
import type { ErrorKind } from "../errors.ts";

/** The HTTP status for each kind of error. */
export const httpStatus: Record<ErrorKind, number> = {
  invalid: 400,
  tooLarge: 413,
  notFound: 404,
  notReady: 202,
  cartFailed: 500,
  config: 500,
  busy: 503,
  unavailable: 503,
  interrupted: 503,
  conflict: 409,
  failure: 500,
};

/** Seconds a client should wait before trying again, for kinds that pass. */
export const retryAfter: Partial<Record<ErrorKind, number>> = {
  busy: 5,
  unavailable: 5,
  interrupted: 5,
};
