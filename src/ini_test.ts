/** The INI reader against what Python's configparser makes of the same text. */
import { assertEquals } from "../tests/support/assert.ts";
import { parseIni } from "./ini.ts";

Deno.test("INI files are read as Python's configparser reads them", () => {
  const sections = parseIni(`
; comment
# comment
[DEFAULT]
shared = yes
[database]
peewee_url = postgresql://cartd:s3cr;et#x@db/cartd
Key: value
long = first
  second
`);
  assertEquals(sections.database.peewee_url, "postgresql://cartd:s3cr;et#x@db/cartd");
  assertEquals(sections.database.key, "value");
  assertEquals(sections.database.long, "first\nsecond");
  assertEquals(sections.database.shared, "yes");
});
