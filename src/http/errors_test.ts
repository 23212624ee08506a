/** The HTTP answer to each kind of error, pinned: clients and proxies depend on these. */
import { assertEquals } from "../../tests/support/assert.ts";
import { httpStatus, retryAfter } from "./errors.ts";

Deno.test("each kind of error has its HTTP status, and passing trouble says when to come back", () => {
  assertEquals(httpStatus, {
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
  });
  assertEquals(retryAfter, { busy: 5, unavailable: 5, interrupted: 5 });
});
