/** Sizes and durations as people write them in configuration and flags. */
import { assertEquals, assertMatch } from "../tests/support/assert.ts";
import {
  durationProblem,
  formatDuration,
  parseDuration,
  parseSize,
  parseTimeAgo,
} from "./units.ts";

Deno.test("sizes and durations, in the original's words", () => {
  assertEquals(parseSize("4 Mb"), 4_194_304);
  assertEquals(parseSize("4 MB"), 4_000_000);
  assertEquals(parseSize("500 GB"), 500e9);
  assertEquals(parseSize("12"), 12);
  assertEquals(parseSize("4 XB"), undefined);
  assertEquals(parseDuration("250ms"), 250);
  assertEquals(parseDuration("7d"), 7 * 86_400_000);
  assertEquals(parseDuration("1.5h"), 5_400_000);
  assertEquals(parseDuration("30"), undefined, "a bare number is refused: units are required");
  assertMatch(durationProblem("30"), /"30" has no unit; say ms, s, m, h, d or w \(e\.g\. "30s"\)/);
  assertEquals(parseDuration("soon"), undefined);
});

Deno.test("durations for people, and the original's purge --time-ago form", () => {
  assertEquals(formatDuration(250), "250ms");
  assertEquals(formatDuration(3_600_000), "1h");
  assertEquals(formatDuration(90_061_000), "1d 1h 1m 1s");
  assertEquals(parseTimeAgo("180 days ago"), 180 * 86_400_000);
  assertEquals(parseTimeAgo("2 hours after"), 7_200_000);
  assertEquals(parseTimeAgo("3 fortnights ago"), undefined);
});
