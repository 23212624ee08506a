/**
 * The database as an operator meets it: PostgreSQL URLs, a server that is not up yet, and a schema
 * that is new, older or newer than this cartd.
 */
// @ts-types="@types/pg"
import pg from "pg";
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { openTestCartd } from "./support/cartd.ts";
import { runCli } from "./support/cli.ts";
import { testPostgres } from "./support/postgres.ts";

async function sqlOn(url: string, query: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(query);
  } finally {
    await client.end();
  }
}

Deno.test("postgres: a new database is set up at start, in every URL form pg understands", async () => {
  const postgres = await testPostgres();
  const archive = await makeArchive([{ id: "a", size: 100 }]);
  const volume = await Deno.makeTempDir();
  const url = await postgres.createDatabase();
  const name = new URL(url).pathname.slice(1);
  for (
    const form of [
      url,
      url.replace("postgres://", "postgresql://"),
      `postgres://postgres@127.0.0.1:${postgres.port}/${name}?sslmode=disable`,
      `postgres://postgres@/${name}?host=${postgres.socketDir}&port=${postgres.port}`,
    ]
  ) {
    const env = {
      VOLUME_PATH: volume,
      ARCHIVE_INTERFACE_URL: `file://${archive.dir}`,
      PEEWEE_URL: form,
    };
    const uid = `c${form.length}`;
    const created = await runCli(["create", uid, "-", "--wait"], {
      env,
      stdin: JSON.stringify(archive.request),
    });
    assertEquals(created.code, 0, `${form}: ${created.stderr}`);
    assertMatch(created.stdout, new RegExp(`^${uid}: ready`));
  }
  const check = await runCli(["db", "check"], { env: { PEEWEE_URL: url, VOLUME_PATH: volume } });
  assertEquals([check.code, check.stdout], [0, "schema is up to date\n"]);
  assertEquals(
    [...Deno.readDirSync(volume)].map((e) => e.name).includes("cartd.sqlite3"),
    false,
    "no SQLite file beside PostgreSQL",
  );
});

Deno.test("postgres: a server that is not up is tried connect_attempts times, then one line naming it", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  const started = Date.now();
  const result = await runCli(["list"], {
    env: {
      PEEWEE_URL: `postgres://cartd:s3cret@127.0.0.1:${port}/cartd`,
      DATABASE_CONNECT_ATTEMPTS: "3",
      DATABASE_CONNECT_WAIT: "1",
    },
  });
  const elapsed = Date.now() - started;
  assertEquals(result.code, 1);
  const lines = result.stderr.trimEnd().split("\n");
  // A warning per failed try, then one line that says it all.
  assertEquals(lines.length, 3, result.stderr);
  assertEquals(
    lines[2],
    `cartd: cannot connect to the database at 127.0.0.1:${port}/cartd after 3 attempts: ` +
      `The database is unavailable (connect ECONNREFUSED 127.0.0.1:${port})`,
  );
  assert(!result.stderr.includes("s3cret"), "never the password");
  assert(elapsed >= 2000 && elapsed < 15_000, `waited ${elapsed} ms`);

  // A database that does not exist is not waited for; a URL pg cannot read is not repeated.
  const postgres = await testPostgres();
  const fast = Date.now();
  const missing = await runCli(["list"], {
    env: {
      PEEWEE_URL: `postgres://postgres:s3cret@127.0.0.1:${postgres.port}/nosuchdb`,
      DATABASE_CONNECT_ATTEMPTS: "5",
      DATABASE_CONNECT_WAIT: "2",
    },
  });
  assertEquals(missing.code, 1);
  assertMatch(missing.stderr, /after 1 attempt: .*database "nosuchdb" does not exist/);
  assert(Date.now() - fast < 5000, "no waiting for what waiting cannot mend");
  assert(!missing.stderr.includes("s3cret"), "never the password");
  const unreadable = await runCli(["list"], {
    env: { PEEWEE_URL: "postgres://cartd:s3cr#et@127.0.0.1/cartd" },
  });
  assertEquals(unreadable.code, 6);
  assert(!unreadable.stderr.includes("s3cr"), unreadable.stderr);
});

Deno.test("postgres: another schema's migration table does not confuse cartd's", async () => {
  const url = await (await testPostgres()).createDatabase();
  await sqlOn(
    url,
    "create schema other; create table other.kysely_migration (name varchar(255) primary key, " +
      "timestamp varchar(255)); insert into other.kysely_migration values ('0099_theirs', 'x')",
  );
  const env = { PEEWEE_URL: url, VOLUME_PATH: await Deno.makeTempDir() };
  const listed = await runCli(["list"], { env });
  assertEquals([listed.code, listed.stdout], [0, "no carts\n"], listed.stderr);
  assertEquals((await runCli(["db", "check"], { env })).code, 0);
});

Deno.test("postgres: an older schema is refused with the command to run unless auto_migrate is on", async () => {
  const postgres = await testPostgres();
  const url = await postgres.createDatabase();
  const env = { PEEWEE_URL: url, VOLUME_PATH: await Deno.makeTempDir() };
  assertEquals((await runCli(["db", "migrate"], { env })).code, 0);
  // As an older cartd left it: without the last migration.
  await sqlOn(url, "delete from kysely_migration where name = '0010_delivery'");
  await sqlOn(
    url,
    "alter table files drop column crc32; " +
      "alter table blobs drop column crc32",
  );

  const refused = await runCli(["list"], { env });
  assertEquals(refused.code, 1);
  assertMatch(
    refused.stderr,
    /the database schema is older than this cartd: it is at version 9 \(0009_admission\), this cartd needs version 10 \(0010_delivery\)\ncartd: run "cartd db migrate" to bring it up to date/,
  );
  const check = await runCli(["db", "check"], { env });
  assertEquals(check.code, 1);
  assertMatch(check.stderr, /pending migrations: 0010_delivery/);

  const auto = await runCli(["list"], { env: { ...env, CARTD_AUTO_MIGRATE: "on" } });
  assertEquals([auto.code, auto.stdout], [0, "no carts\n"]);
  assertEquals((await runCli(["db", "check"], { env })).code, 0, "migrated at start");
});

Deno.test("a newer schema is refused by every command, db check and db migrate included", async () => {
  const postgres = await testPostgres();
  const pgUrl = await postgres.createDatabase();
  const volume = await Deno.makeTempDir();
  const sqliteFile = join(volume, "cartd.sqlite3");
  for (const url of [pgUrl, sqliteFile]) {
    const env = { PEEWEE_URL: url, VOLUME_PATH: volume };
    assertEquals((await runCli(["db", "migrate"], { env })).code, 0);
    const future = "insert into kysely_migration (name, timestamp) values ('0099_future', 'x')";
    if (url === pgUrl) await sqlOn(url, future);
    else {
      const { DatabaseSync } = await import("node:sqlite");
      const db = new DatabaseSync(url);
      db.exec(future);
      db.close();
    }
    for (const args of [["list"], ["status", "x"], ["db", "check"], ["db", "migrate"]]) {
      const result = await runCli(args, { env });
      assertEquals(result.code, 1, `${url} ${args.join(" ")}: ${result.stderr}`);
      assertMatch(
        result.stderr,
        /the database was written by a newer cartd: its schema is at version 99 \(0099_future\), this cartd knows up to version 10 \(0010_delivery\)/,
      );
    }
  }
});

Deno.test("db copy moves a SQLite site to PostgreSQL and back: ready carts serve byte-identically, staging ones finish", async () => {
  const { startServer, waitWhileStaging } = await import("./support/server.ts");
  const { cartdEnv } = await import("./support/cli.ts");
  const archive = await makeArchive([
    { id: "r1", size: 50_000 },
    { id: "r2", size: 20_000 },
    { id: "s1", size: 30_000 },
    { id: "f1", size: 10 },
  ]);
  const pick = (...ids: string[]) => ({
    fileids: archive.request.fileids.filter((f) => ids.includes(f.id)),
  });
  const volume = await Deno.makeTempDir();
  const sqliteEnv = cartdEnv(volume, `file://${archive.dir}`);
  const run = (args: string[], env: Record<string, string> = sqliteEnv, stdin?: string) =>
    runCli(args, { env, stdin });
  assertEquals(
    (await run(["create", "ready", "-", "--wait"], sqliteEnv, JSON.stringify(pick("r1", "r2"))))
      .code,
    0,
  );
  const failing = pick("f1");
  failing.fileids[0].hashsum = "0".repeat(40);
  assertEquals(
    (await run(["create", "failed", "-", "--wait"], sqliteEnv, JSON.stringify(failing))).code,
    5,
  );
  assertEquals(
    (await run(["create", "staging", "-"], sqliteEnv, JSON.stringify(pick("s1")))).code,
    0,
  );
  const tarBefore = join(await Deno.makeTempDir(), "before.tar");
  assertEquals((await run(["get", "ready", "-o", tarBefore, "--filename", "x"])).code, 0);
  const listBefore = JSON.parse((await run(["list", "--json"])).stdout);

  const pgUrl = await (await testPostgres()).createDatabase();
  const sqliteFile = join(volume, "cartd.sqlite3");
  const copied = await run(["db", "copy", sqliteFile, pgUrl]);
  assertEquals(copied.code, 0, copied.stderr);
  assertEquals(copied.stdout, "copied 3 cart(s) and 4 file(s)\n");
  const onto = await run(["db", "copy", sqliteFile, `sqlite:///${sqliteFile}`, "--force"]);
  assertEquals(onto.code, 2);
  assertMatch(onto.stderr, /the source and the target are the same database/);
  const again = await run(["db", "copy", sqliteFile, pgUrl]);
  assertEquals(again.code, 1);
  assertMatch(
    again.stderr,
    /the target database already holds 3 cart\(s\); nothing was copied\ncartd: --force replaces/,
  );
  assertEquals((await run(["db", "copy", sqliteFile, pgUrl, "--force"])).code, 0);

  // One line of configuration changes; nothing else.
  const pgEnv = { ...sqliteEnv, PEEWEE_URL: pgUrl };
  assertEquals(
    JSON.parse((await run(["list", "--json"], pgEnv)).stdout),
    listBefore,
    "carts, states and use times intact",
  );
  const server = await startServer(pgEnv);
  try {
    const tar = await fetch(`${server.url}ready?filename=x`);
    assertEquals(new Uint8Array(await tar.arrayBuffer()), await Deno.readFile(tarBefore));
    const staged = await waitWhileStaging(`${server.url}staging`, 100);
    assertEquals(staged.headers.get("x-pacifica-status"), "ready");
    const failed = await fetch(`${server.url}failed`, { method: "HEAD" });
    assertEquals([failed.status, failed.headers.get("x-pacifica-status")], [500, "error"]);
    // New carts get new ids: the sequences carry on after the copied ones.
    const created = await fetch(`${server.url}new`, {
      method: "POST",
      body: JSON.stringify(pick("r2")),
      headers: { "content-type": "application/json" },
    });
    assertEquals(created.status, 201);
    await created.body?.cancel();
    assertEquals(
      (await waitWhileStaging(`${server.url}new`, 100)).headers.get("x-pacifica-status"),
      "ready",
    );
  } finally {
    server.child.kill("SIGTERM");
    assertEquals((await server.exited).code, 0, server.log());
  }

  // Copied again over what it now holds: ids are never handed out twice.
  const audit = (url: string) =>
    openTestCartd("file:///nowhere", { PEEWEE_URL: url, VOLUME_PATH: volume });
  const beforeForce = await audit(pgUrl);
  const highest = Math.max(...(await beforeForce.store.carts.all()).map((c) => c.id));
  await beforeForce.close();
  assertEquals((await run(["db", "copy", sqliteFile, pgUrl, "--force"])).code, 0);
  const later = await run(["create", "later", "-"], pgEnv, JSON.stringify(pick("r2")));
  assertEquals(later.code, 0, later.stderr);
  const afterForce = await audit(pgUrl);
  const laterCart = (await afterForce.store.carts.all()).find((c) => c.uid === "later")!;
  await afterForce.close();
  assert(laterCart.id > highest, `id ${laterCart.id} came after ${highest}`);

  // And back to a new SQLite file.
  const back = join(await Deno.makeTempDir(), "back.sqlite3");
  assertEquals((await run(["db", "copy", pgUrl, back])).code, 0);
  const listBack = JSON.parse(
    (await run(["list", "--json"], { ...sqliteEnv, PEEWEE_URL: back })).stdout,
  );
  assertEquals(listBack.map((c: { uid: string }) => c.uid).sort(), [
    "failed",
    "later",
    "ready",
    "staging",
  ]);
});
