/** Configuration as the CLI meets it: ./cartd.ini, and a clear stop on a bad value or key. */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { runCli } from "./support/cli.ts";

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

async function iniFile(text: string): Promise<string> {
  const file = join(await Deno.makeTempDir(), "cartd.ini");
  await Deno.writeTextFile(file, text);
  return file;
}

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

Deno.test("config show says every value's source, masks passwords; --json says the same", async () => {
  const file = await iniFile(
    "[cartd]\nworkers = 7\n[database]\npeewee_url = postgres://cartd:s3cret@db.example/cartd\n",
  );
  const env = { CARTD_CONFIG: file, CARTD_SPACE_WAIT: "5m" };
  const text = await runCli(["--volume", "/from/flag", "config", "show"], { env });
  assertEquals(text.code, 0, text.stderr);
  assertMatch(text.stdout, /\[cartd\] workers = 7 +# file .*cartd\.ini/);
  assertMatch(text.stdout, /\[cartd\] space_wait = 5m +# environment CARTD_SPACE_WAIT/);
  assertMatch(text.stdout, /\[cartd\] volume_path = \/from\/flag +# command line/);
  assertMatch(text.stdout, /\[cartd\] transfer_size = 4 Mb +# default/);
  assertMatch(text.stdout, /peewee_url = postgres:\/\/cartd:\*\*\*@db\.example\/cartd/);
  assertEquals(text.stdout.includes("s3cret"), false);

  const json = await runCli(["--volume", "/from/flag", "config", "show", "--json"], { env });
  const shown = JSON.parse(json.stdout);
  const key = (name: string) => shown.keys.find((k: { key: string }) => k.key === name);
  assertEquals([key("cartd.workers").source, key("cartd.workers").value], ["file", "7"]);
  assertEquals(key("cartd.space_wait").variable, "CARTD_SPACE_WAIT");
  assertEquals(key("cartd.volume_path").source, "flag");
  assertEquals(key("cartd.lru_purge").source, "default");
  assertEquals(json.stdout.includes("s3cret"), false);
});

Deno.test("config check: exit 0 when valid; 6 on a misspelt key, with the key it meant", async () => {
  const good = await runCli(["config", "check"], {
    env: { CARTD_CONFIG: await iniFile("[cartd]\nvolume_size_limit = 10 GB\n") },
  });
  assertEquals(good.code, 0, good.stderr);
  assertMatch(good.stdout, /configuration OK/);

  const typo = await runCli(["config", "check"], {
    env: { CARTD_CONFIG: await iniFile("[cartd]\nvolume_size_limt = 10 GB\n") },
  });
  assertEquals(typo.code, 6);
  assertMatch(
    typo.stderr,
    /unknown key\(s\): \[cartd\] volume_size_limt; did you mean \[cartd\] volume_size_limit\?/,
  );

  const bad = await runCli(["config", "check"], {
    env: { CARTD_CONFIG: await iniFile("[cartd]\nworkers = many\nspace_wait = 10\n") },
  });
  assertEquals(bad.code, 6);
  assertMatch(bad.stderr, /bad value for \[cartd\] workers/);
  assertMatch(bad.stderr, /bad value for \[cartd\] space_wait/, "every bad value at once");

  const misplaced = await runCli(["config", "check"], {
    env: { CARTD_CONFIG: await iniFile("[cartd]\ntokens_file = /etc/cartd/tokens\n") },
  });
  assertMatch(misplaced.stderr, /\[cartd\] tokens_file; it belongs in \[auth\]/);

  const twice = await runCli(["config", "check"], {
    env: { CARTD_CONFIG: await iniFile("[cartd]\nworkers = 2\nworkers = 3\n") },
  });
  assertEquals(twice.code, 6);
  assertMatch(twice.stderr, /line 3: key workers is set twice/);
});

Deno.test("intervals and timeouts of 0 are refused: they would spin or fire at once", async () => {
  const zero = await runCli(["config", "check"], {
    env: {
      CARTD_CONFIG: await iniFile("[cartd]\npoll_interval = 0s\nlease_time = 0\n"),
      CARTD_ARCHIVE_TIMEOUT: "0s",
    },
  });
  assertEquals(zero.code, 6);
  for (const key of ["poll_interval", "lease_time", "\\[archiveinterface\\] timeout"]) {
    assertMatch(zero.stderr, new RegExp(`${key}.*above 0|${key}.*unit`));
  }
});

Deno.test("a SQLite database that cannot be opened fails at once, without waiting for a server", async () => {
  const dir = await Deno.makeTempDir();
  const started = performance.now();
  const result = await runCli(["list"], { env: { PEEWEE_URL: dir, VOLUME_PATH: join(dir, "v") } });
  assertEquals(result.code, 1);
  assertMatch(result.stderr, /after 1 attempt: .*unable to open database file/);
  assert(performance.now() - started < 5000);
});
