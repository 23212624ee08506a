/** Configuration: defaults < INI file < environment < flags, and a clear stop on a bad value. */
import { join } from "node:path";
import { loadConfig } from "../src/config.ts";
import { parseIni } from "../src/ini.ts";
import { parseDatabaseUrl } from "../src/store/database_url.ts";
import { durationProblem, parseDuration, parseSize } from "../src/units.ts";
import { assertEquals, assertMatch, assertThrows } from "./support/assert.ts";
import { runCli } from "./support/cli.ts";

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

async function iniFile(text: string): Promise<string> {
  const file = join(await Deno.makeTempDir(), "cartd.ini");
  await Deno.writeTextFile(file, text);
  return file;
}

Deno.test("with no configuration at all, cartd uses its built-in defaults", () => {
  const config = loadConfig({ env: {} });
  assertEquals(config.volumePath, "./cartd-data");
  assertEquals(config.archiveUrl, "http://127.0.0.1:8080/");
  assertEquals(config.transferSize, 4 * 1024 * 1024);
  assertEquals(config.lruPurge, true);
  assertEquals(config.bundleTask, false);
  assertEquals(config.databaseUrl, join(Deno.cwd(), "cartd-data", "cartd.sqlite3"));
});

Deno.test("the INI file overrides defaults, the environment overrides the file, flags override both", async () => {
  const file = await iniFile(`
[cartd]
volume_path = /from/ini
transfer_size = 1 MB
lru_buffer_time = 30
bundle_task = on

[archiveinterface]
url = http://ini.example:8080/

[database]
peewee_url = sqliteext:///from-ini.sqlite3
`);
  const fromFile = loadConfig({ configFile: file, env: {} });
  assertEquals(fromFile.volumePath, "/from/ini");
  assertEquals(fromFile.transferSize, 1_000_000);
  assertEquals(fromFile.lruBufferTime, 30_000);
  assertEquals(fromFile.bundleTask, true);
  assertEquals(fromFile.databaseUrl, "sqliteext:///from-ini.sqlite3");

  const env = { VOLUME_PATH: "/from/env", TRANSFER_SIZE: "2 Mb", CARTD_CONFIG: file };
  const fromEnv = loadConfig({ env });
  assertEquals(fromEnv.volumePath, "/from/env");
  assertEquals(fromEnv.transferSize, 2 * 1024 * 1024);
  assertEquals(
    fromEnv.archiveUrl,
    "http://ini.example:8080/",
    "the file named by CARTD_CONFIG is read",
  );

  const fromFlags = loadConfig({ env, flags: { "cartd.volume_path": "/from/flag" } });
  assertEquals(fromFlags.volumePath, "/from/flag");
  assertEquals(fromFlags.transferSize, 2 * 1024 * 1024);
});

Deno.test("./cartd.ini is read when no file is named", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(join(dir, "cartd.ini"), "[cartd]\nvolume_path = /from/cwd\n");
  const result = await runCli(["db", "check"], {
    cwd: dir,
    env: { PEEWEE_URL: join(dir, "db.sqlite3") },
  });
  // The database has no schema yet: the check fails, but it used the file's volume silently.
  assertEquals(result.code, 1, result.stderr);
  const config = await runCli(["status", "x"], {
    cwd: dir,
    env: { PEEWEE_URL: join(dir, "db.sqlite3") },
  });
  assertEquals(config.code, 3, config.stderr);
});

Deno.test("a bad value stops start-up with exit code 6, naming the key and where it came from", async () => {
  const file = await iniFile("[cartd]\ntransfer_size = 4 XB\n");
  const result = await runCli(["status", "x", "--config", file]);
  assertEquals(result.code, 6);
  assertMatch(
    result.stderr,
    /bad value for \[cartd\] transfer_size \(from .*cartd\.ini\): "4 XB" is not a size/,
  );

  const fromEnv = await runCli(["status", "x"], { env: { LRU_PURGE: "sometimes" } });
  assertEquals(fromEnv.code, 6);
  assertMatch(fromEnv.stderr, /bad value for \[cartd\] lru_purge \(from LRU_PURGE\): "sometimes"/);

  const missing = await runCli(["status", "x", "--config", "/no/such/file.ini"]);
  assertEquals(missing.code, 6);
  assertMatch(missing.stderr, /cannot read config file \/no\/such\/file\.ini: no such file/);

  // Every key is checked before anything starts or is written: a bad archive URL stops even a
  // command that would never reach the archive, and the server never says it listens.
  const volume = join(await Deno.makeTempDir(), "volume");
  for (const args of [["bundle", "x"], ["serve", "--port", "0"]]) {
    const badUrl = await runCli([...args, "--archive-url", "ftp://x/", "--volume", volume]);
    assertEquals(badUrl.code, 6, badUrl.stderr);
    assertMatch(
      badUrl.stderr,
      /bad value for \[archiveinterface\] url \(from command line\): "ftp:\/\/x\/" is not an archive URL/,
    );
    assertEquals(badUrl.stdout, "", "nothing started");
  }
  const badDatabase = await runCli(["serve", "--volume", volume], {
    env: { PEEWEE_URL: "mysql://cartd:secret@db/cartd" },
  });
  assertEquals(badDatabase.code, 6);
  assertMatch(badDatabase.stderr, /\[database\] peewee_url \(from PEEWEE_URL\)/);
  assertEquals(badDatabase.stderr.includes("secret"), false, "no password in messages");
  const bareDuration = await runCli(["serve", "--volume", volume], {
    env: { CARTD_SPACE_WAIT: "30" },
  });
  assertEquals(bareDuration.code, 6);
  assertMatch(bareDuration.stderr, /space_wait \(from CARTD_SPACE_WAIT\): "30" has no unit/);
  assertEquals(await exists(volume), false, "nothing was written");
});

Deno.test("an unknown key warns and the rest of the file still applies", async () => {
  const dir = await Deno.makeTempDir();
  const file = await iniFile(
    `[cartd]\nvolume_path = ${dir}\nvolume_pth = typo\n[celery]\nbroker_url = pyamqp://\n`,
  );
  const result = await runCli(["status", "x", "--config", file]);
  assertEquals(result.code, 3);
  assertMatch(result.stderr, /unknown key \[cartd\] volume_pth ignored/);
  assertEquals(
    result.stderr.includes("broker_url"),
    false,
    "the original's broker keys are accepted quietly",
  );
});

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

Deno.test("sizes, durations and database URLs", () => {
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
