/** Tape polling backs off exponentially: a file on tape for 5 s is polled a handful of times. */
import { backoffDelay } from "../src/cart/backoff.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { stageCart, withSimulator } from "./support/cartd.ts";

Deno.test("a file on tape for 5 s is polled a handful of times, not hundreds", async () => {
  const options = { mode: "tape" as const, tapeDelayMs: 5000 };
  const env = { CARTD_POLL_INTERVAL: "1s", CARTD_POLL_MAX_INTERVAL: "60s" };
  await withSimulator(
    [{ id: "t", size: 1000 }],
    options,
    env,
    async ({ archive, simulator, cartd }) => {
      const started = Date.now();
      const { cart, done } = await stageCart(cartd, "tape", archive.request);
      assertEquals(done?.status, "ready");
      const polls = simulator.count("status", "t");
      assert(polls >= 2 && polls <= 8, `polled ${polls} times`);
      // Polls land at about 0, 1, 2, 5 and 11 s: the backoff may overshoot, but boundedly.
      assert(Date.now() - started < 20_000, "and still noticed soon after it reached disk");
      assertEquals(simulator.count("stage", "t"), 1);
      const [file] = await cartd.service.fileReports(cart);
      assertEquals(file.polls, polls);
    },
  );
});

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
