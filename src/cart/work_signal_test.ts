/** The in-process wake-up of idle worker loops. */
import { assert } from "../../tests/support/assert.ts";
import { WorkSignal } from "./work_signal.ts";

Deno.test("notify wakes every sleeping loop at once; a later sleep waits again", async () => {
  const signal = new WorkSignal();
  const started = performance.now();
  const sleeps = [signal.sleep(10_000), signal.sleep(10_000)];
  setTimeout(() => signal.notify(), 20);
  await Promise.all(sleeps);
  assert(performance.now() - started < 5_000, "the sleepers woke on notify");
  // A notify with no one asleep is not remembered: the next sleep runs its course.
  signal.notify();
  const again = performance.now();
  await signal.sleep(30);
  assert(performance.now() - again >= 25, "a sleep after the notify is not cut short");
});

Deno.test("an aborted signal ends the sleep too", async () => {
  const signal = new WorkSignal();
  const stop = new AbortController();
  const sleeping = signal.sleep(10_000, stop.signal);
  stop.abort();
  await sleeping;
});
