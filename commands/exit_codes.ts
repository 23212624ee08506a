/**
 * The exit codes of `cartd`, one table for every kind of error (README documents them), so every
 * subcommand ends the same way for the same trouble.
 */
import type { ErrorKind } from "../src/errors.ts";

/** Success, and what commander's own usage errors give. */
export const ExitCode = { ok: 0, failure: 1, usage: 2 } as const;

/** The exit code for each kind of error. */
export const exitCode: Record<ErrorKind, number> = {
  failure: 1,
  busy: 1,
  unavailable: 1,
  invalid: 2,
  conflict: 2,
  tooLarge: 2,
  notFound: 3,
  notReady: 4,
  cartFailed: 5,
  config: 6,
  interrupted: 130,
};
