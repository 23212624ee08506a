/** The archive's health as one process sees it: outages, probes, and who answered lately. */
import { assert, assertEquals } from "../../tests/support/assert.ts";
import { ArchiveHealth } from "./archive_health.ts";

Deno.test("a healthy archive lets everyone through", () => {
  const health = new ArchiveHealth("a", 100, 1000);
  assertEquals(health.permit(0), { wait: 0, probe: false });
  assertEquals(health.nextContactAt(5), 5);
});

Deno.test("in an outage one probe at a time goes, after a delay that grows to its ceiling", () => {
  const health = new ArchiveHealth("a", 100, 1000);
  assertEquals(health.unavailable(1000, "refused"), 1000);
  const first = health.permit(1000);
  assert(first.wait >= 50 && first.wait <= 100 && !first.probe, JSON.stringify(first));
  const probe = health.permit(1100);
  assertEquals(probe, { wait: 0, probe: true });
  assert(health.permit(1100).wait > 0, "a second caller waits for the probe");
  // The probe fails: the next one waits longer, and the outage still dates from its start.
  assertEquals(health.unavailable(1150, "refused"), 1000);
  const next = health.nextContactAt(1150) - 1150;
  assert(next >= 100 && next <= 200, `doubled: ${next}`);
  let t = 1150;
  for (let probes = 0; probes < 12; probes++) {
    t = health.nextContactAt(t);
    assert(health.permit(t).probe);
    health.unavailable(t, "refused");
  }
  const delay = health.nextContactAt(t) - t;
  assert(delay >= 500 && delay <= 1000, `capped at the ceiling: ${delay}`);
});

Deno.test("failures of requests sent before the outage was noticed do not push the probe back", () => {
  const health = new ArchiveHealth("a", 100, 1000);
  health.unavailable(1000, "refused");
  const next = health.nextContactAt(1000);
  health.unavailable(1001, "refused");
  health.unavailable(1002, "refused");
  assertEquals(health.nextContactAt(1002), next);
});

Deno.test("a probe that learnt nothing lets the next caller probe; an answer ends the outage", () => {
  const health = new ArchiveHealth("a", 100, 1000);
  health.unavailable(0, "refused");
  assert(health.permit(500).probe);
  health.probeEnded();
  assert(health.permit(500).probe, "another caller may probe");
  health.answered("status", 600);
  assertEquals(health.permit(600), { wait: 0, probe: false });
  assertEquals(health.judge("status", 1, 600), "file", "answered lately");
  assertEquals(health.judge("pull", 1, 1), "outage", "per kind of request");
});

Deno.test("a 5xx is one file's trouble while others are answered, and an outage when three files fail in a row", () => {
  const health = new ArchiveHealth("a", 100, 1000);
  health.answered("pull", 1000);
  // One bad file, failing again and again between others' answers: its own trouble.
  for (let t = 1001; t < 1010; t++) {
    assertEquals(health.judge("pull", 7, 0), "file");
    health.answered("pull", t);
  }
  // The archive goes down just after answering: the third file failing with no answer between
  // is an outage, though the last answer is recent.
  assertEquals(health.judge("pull", 1, 0), "file");
  assertEquals(health.judge("pull", 1, 0), "file", "the same file again is not another file");
  assertEquals(health.judge("pull", 2, 0), "file");
  assertEquals(health.judge("pull", 3, 0), "outage");
  assertEquals(health.judge("stage", 4, 0), "file", "per kind of request");
  health.answered("pull", 2000);
  assertEquals(health.judge("pull", 5, 0), "file", "an answer starts the count again");
  // Files whose pulls fail while the archive answers other requests are each their own trouble.
  for (const file of [6, 7, 8, 9]) {
    assertEquals(health.judge("pull", file, 0), "file");
    health.answered("status", 2001);
  }
});
