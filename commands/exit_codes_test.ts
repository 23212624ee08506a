/** The exit code of each kind of error, pinned: scripts and cron jobs depend on these (README). */
import { assertEquals } from "../tests/support/assert.ts";
import { exitCode } from "./exit_codes.ts";

Deno.test("each kind of error has its documented exit code, 130 for an interrupted run", () => {
  assertEquals(exitCode, {
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
  });
});
