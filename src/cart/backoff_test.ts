/** Backoff delays: doubling to a ceiling, jittered over the upper half. */
import { assert } from "../../tests/support/assert.ts";
import { backoffDelay } from "./backoff.ts";

Deno.test("backoff doubles up to its ceiling, with jitter in the upper half", () => {
  for (let i = 0; i < 200; i++) {
    const first = backoffDelay(1000, 1, 60_000);
    assert(first >= 500 && first <= 1000, `first ${first}`);
    const fourth = backoffDelay(1000, 4, 60_000);
    assert(fourth >= 4000 && fourth <= 8000, `fourth ${fourth}`);
    const capped = backoffDelay(1000, 30, 60_000);
    assert(capped >= 30_000 && capped <= 60_000, `capped ${capped}`);
  }
});
