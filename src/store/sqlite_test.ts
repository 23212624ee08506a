/** SQLite failures as node:sqlite really reports them, classed by their result code. */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { assert, assertEquals } from "../../tests/support/assert.ts";
import { CartdError } from "../errors.ts";
import { sqliteResultCode, userError } from "./sqlite.ts";

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a failure");
}

Deno.test("a database locked by another connection is busy; one that cannot be opened says so", async () => {
  const file = join(await Deno.makeTempDir(), "db.sqlite3");
  const holder = new DatabaseSync(file, { timeout: 0 });
  const other = new DatabaseSync(file, { timeout: 0 });
  try {
    holder.exec("pragma journal_mode=WAL; create table t(x); begin immediate");
    const busy = thrown(() => other.exec("begin immediate"));
    assertEquals(sqliteResultCode(busy), "SQLITE_BUSY");
    const user = userError(busy);
    assert(user instanceof CartdError && user.kind === "busy");
    assertEquals(user.cause, busy, "the driver's error stays for the logs");
  } finally {
    holder.close();
    other.close();
  }
  const cannot = thrown(() => new DatabaseSync("/nonexistent-dir/x/db.sqlite3"));
  assertEquals(sqliteResultCode(cannot), "SQLITE_CANTOPEN");
  const missingTable = thrown(() => new DatabaseSync(":memory:").exec("select * from nope"));
  assertEquals(sqliteResultCode(missingTable), undefined, "other failures are not classed");
  assertEquals(userError(missingTable), missingTable);
});
