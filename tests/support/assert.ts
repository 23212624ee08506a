/** Assertions in the shape of Deno's standard library, over `node:assert/strict`. */
import nodeAssert from "node:assert/strict";

export function assert(condition: unknown, message?: string): asserts condition {
  if (message === undefined) nodeAssert.ok(condition);
  else nodeAssert.ok(condition, message);
}

export function assertEquals<T>(actual: T, expected: T, message?: string): void {
  if (message === undefined) nodeAssert.deepStrictEqual(actual, expected);
  else nodeAssert.deepStrictEqual(actual, expected, message);
}

export function assertMatch(actual: string, pattern: RegExp, message?: string): void {
  if (message === undefined) nodeAssert.match(actual, pattern);
  else nodeAssert.match(actual, pattern, message);
}

/** Awaits `fn`, which must reject; returns the error for further checks. */
export async function assertRejects(fn: () => Promise<unknown>, message?: string): Promise<Error> {
  try {
    await fn();
  } catch (err) {
    return err as Error;
  }
  throw new nodeAssert.AssertionError({ message: message ?? "expected a rejection" });
}

/** Calls `fn`, which must throw; returns the error. */
export function assertThrows(fn: () => unknown, message?: string): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new nodeAssert.AssertionError({ message: message ?? "expected an exception" });
}
