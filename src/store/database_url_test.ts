/** The database setting in the original's peewee URL forms. */
import { assertEquals, assertMatch, assertThrows } from "../../tests/support/assert.ts";
import { parseDatabaseUrl } from "./database_url.ts";

Deno.test("database URLs in peewee's forms, and a plain path", () => {
  assertEquals(parseDatabaseUrl("sqliteext:///db.sqlite3"), { kind: "sqlite", file: "db.sqlite3" });
  assertEquals(parseDatabaseUrl("sqlite:////srv/db.sqlite3"), {
    kind: "sqlite",
    file: "/srv/db.sqlite3",
  });
  assertEquals(parseDatabaseUrl("/var/lib/cartd.db"), {
    kind: "sqlite",
    file: "/var/lib/cartd.db",
  });
  assertEquals(parseDatabaseUrl("postgres://u@h/db").kind, "postgres");
  assertMatch(
    assertThrows(() => parseDatabaseUrl("mysql://u:secret@h/db")).message,
    /unsupported database URL "mysql:\/\/…@h\/db"/,
  );
});
