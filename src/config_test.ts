/** Configuration from defaults, an INI file, the environment and flags; README's table of keys. */
import { join } from "node:path";
import { assert, assertEquals } from "../tests/support/assert.ts";
import { withConfigTable } from "../tools/readme.ts";
import { configKeys, loadConfig, reloadConfig } from "./config.ts";

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

Deno.test("README's configuration table is the key table: every key, its variable, default and meaning", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const rows = (text: string) =>
    text.split("\n").filter((l) => l.startsWith("| `[")).map((l) =>
      l.split("|").map((cell) => cell.trim()).filter(Boolean)
    );
  assertEquals(rows(readme), rows(withConfigTable(readme)), "run `deno task docs`");
  assertEquals(rows(readme).length, configKeys.length);
  for (const k of configKeys) assert(k.meaning.length > 10, `${k.key} says what it means`);
});

Deno.test("a reload applies what a running server reads as it goes, and names what needs a restart", async () => {
  const file = await iniFile("[cartd]\nvolume_path = /v\nspace_wait = 10m\n");
  const config = loadConfig({ configFile: file, env: {} });
  await Deno.writeTextFile(file, "[cartd]\nvolume_path = /w\nspace_wait = 2m\n");
  const changes = reloadConfig(config, { configFile: file, env: {} });
  assertEquals(changes, {
    applied: ["[cartd] space_wait"],
    // The database lives on the volume by default, so it moves with it.
    needRestart: ["[cartd] volume_path", "[database] peewee_url"],
  });
  assertEquals([config.spaceWait, config.volumePath], [120_000, "/v"]);
  await Deno.writeTextFile(file, "[cartd]\nspace_wait = soon\n");
  let refused = false;
  try {
    reloadConfig(config, { configFile: file, env: {} });
  } catch {
    refused = true;
  }
  assert(refused, "a bad file is refused");
  assertEquals(config.spaceWait, 120_000, "and changes nothing");
});
