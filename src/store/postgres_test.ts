/** PostgreSQL failures classed by SQLSTATE, errno or pg's own fixed texts. */
import { assert, assertEquals } from "../../tests/support/assert.ts";
import { CartdError } from "../errors.ts";
import { isPermanentConnectFailure, isUnavailable, userError } from "./postgres.ts";

const withCode = (code: string) => Object.assign(new Error(`failure ${code}`), { code });

Deno.test("what says the database cannot be used now, and what is for someone else to mend", () => {
  for (
    const code of ["08006", "57P01", "57P03", "57014", "53300", "58030", "25006", "ECONNREFUSED"]
  ) {
    assert(isUnavailable(withCode(code)), code);
  }
  assert(isUnavailable(new Error("timeout exceeded when trying to connect")), "pool exhausted");
  assert(isUnavailable(new Error("Connection terminated unexpectedly")));
  assert(!isUnavailable(withCode("23505")), "a unique violation is no outage");
  assert(isPermanentConnectFailure(withCode("28P01")), "wrong password");
  assert(isPermanentConnectFailure(withCode("3D000")), "no such database");
  assert(!isPermanentConnectFailure(withCode("08006")));
  const busy = userError(withCode("40P01"));
  assert(busy instanceof CartdError && busy.kind === "busy");
  const full = userError(withCode("53100"));
  assert(full instanceof CartdError && full.kind === "unavailable");
  const unique = withCode("23505");
  assertEquals(userError(unique), unique, "left for the caller (a racing create retries)");
});
