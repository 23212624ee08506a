/** The command line's surface: help, usage errors, exit codes, interruption, the single-file build. */
import { sleep } from "../src/time.ts";
import { join } from "node:path";
import { startArchiveSimulator } from "../fixtures/archive_server.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { cartdEnv, cliCommand, runCli } from "./support/cli.ts";

Deno.test("cartd --help and every subcommand's --help explain themselves", async () => {
  const root = await runCli(["--help"]);
  assertEquals(root.code, 0);
  for (const sub of ["create", "bundle", "status", "get", "delete", "db"]) {
    assert(root.stdout.includes(sub), `${sub} listed`);
    const help = await runCli([sub, "--help"]);
    assertEquals(help.code, 0, sub);
    assertMatch(help.stdout, new RegExp(`Usage: cartd ${sub}`));
  }
  assertMatch(root.stdout, /Exit codes: 0 ok/);
});

Deno.test("usage errors exit 2 with commander's message and no stack trace", async () => {
  const missing = await runCli(["bundle"]);
  assertEquals(missing.code, 2);
  assertMatch(missing.stderr, /missing required argument 'uid'/);
  const unknown = await runCli(["status", "x", "--bogus"]);
  assertEquals(unknown.code, 2);
  assertMatch(unknown.stderr, /unknown option '--bogus'/);
  const noRequest = await runCli(["create", "x", "/no/such/request.json"]);
  assertEquals(noRequest.code, 2);
  assertMatch(noRequest.stderr, /no such request file/);
});

Deno.test("exit codes: unknown cart 3, not ready 4, cart in error 5; delete then 3", async () => {
  const archive = await makeArchive([{ id: "a", size: 10 }]);
  const volume = await Deno.makeTempDir();
  const env = cartdEnv(volume, `file://${archive.dir}`);
  assertEquals((await runCli(["get", "nope"], { env })).code, 3);
  assertEquals((await runCli(["delete", "nope"], { env })).code, 3);

  await runCli(["create", "later", "-"], { env, stdin: JSON.stringify(archive.request) });
  const notReady = await runCli(["get", "later", "-o", "-"], { env });
  assertEquals(notReady.code, 4);
  assertEquals(notReady.stdout, "", "nothing written to stdout");

  const bad = structuredClone(archive.request);
  bad.fileids[0].hashsum = "f".repeat(40);
  const failed = await runCli(["create", "bad", "-", "--wait"], {
    env,
    stdin: JSON.stringify(bad),
  });
  assertEquals(failed.code, 5);
  assertMatch(failed.stderr, /cartd: Failed to pull file\(a: File hash does not match/);
  assertEquals((await runCli(["get", "bad", "-o", "-"], { env })).code, 5);

  const deleted = await runCli(["delete", "bad"], { env });
  assertEquals(deleted.code, 0);
  assertEquals((await runCli(["status", "bad"], { env })).code, 3);
});

Deno.test("an interrupted bundle exits 130, hands back its claims, and a new run finishes", async () => {
  const archive = await makeArchive([{ id: "slow", size: 1_000_000 }]);
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    faults: [{ op: "pull", kind: "slow", bytesPerSecond: 200_000, times: 1 }],
  });
  const volume = await Deno.makeTempDir();
  // A long lease: the second run finishes quickly only if the first handed its claim back.
  const env = cartdEnv(volume, simulator.url, { CARTD_LEASE_TIME: "10m" });
  try {
    await runCli(["create", "i", "-"], { env, stdin: JSON.stringify(archive.request) });
    const child = cliCommand(["bundle", "i"], { env }).spawn();
    while (simulator.count("pull", "slow") === 0) await sleep(50);
    await sleep(300);
    child.kill("SIGINT");
    const out = await child.output();
    assertEquals(out.code, 130);
    assertMatch(new TextDecoder().decode(out.stderr), /interrupted; run "cartd bundle i" again/);
    const started = Date.now();
    const again = await runCli(["bundle", "i"], { env });
    assertEquals(again.code, 0, again.stderr);
    assert(Date.now() - started < 30_000);
  } finally {
    await simulator.stop();
  }
});

Deno.test("the deno bundle single file runs a cart end to end from anywhere", async () => {
  const dir = await Deno.makeTempDir();
  const file = join(dir, "cartd.js");
  const main = new URL("../main.ts", import.meta.url).pathname;
  const bundled = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--platform", "deno", "-o", file, main],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(bundled.success, new TextDecoder().decode(bundled.stderr));

  const archive = await makeArchive([{ id: "x/y", size: 5000 }]);
  const env = { ...cartdEnv(join(dir, "vol"), `file://${archive.dir}`), NO_COLOR: "1" };
  const run = (args: string[], stdin?: string) => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", file, ...args],
      cwd: dir,
      env,
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (stdin !== undefined) {
      const w = child.stdin.getWriter();
      w.write(new TextEncoder().encode(stdin)).then(() => w.close());
    }
    return child.output();
  };
  const created = await run(["create", "one", "-", "--wait"], JSON.stringify(archive.request));
  assertEquals(created.code, 0, new TextDecoder().decode(created.stderr));
  const got = await run(["get", "one", "-o", "one.tar", "--filename", "one"]);
  assertEquals(got.code, 0);
  const listed = await new Deno.Command("tar", {
    args: ["-tf", join(dir, "one.tar")],
    stdout: "piped",
  }).output();
  assertEquals(new TextDecoder().decode(listed.stdout).trim().split("\n"), [
    "one/",
    "one/x/",
    "one/x/y",
  ]);
});

Deno.test("read-only commands never create a database, and name the one they looked for", async () => {
  const work = await Deno.makeTempDir();
  const expected = join(work, "cartd-data", "cartd.sqlite3");
  const env = { ARCHIVE_INTERFACE_URL: "file:///nowhere" };
  for (const args of [["status", "x"], ["get", "x"], ["delete", "x"], ["bundle", "x"]]) {
    const result = await runCli(args, { env, cwd: work });
    assertEquals(result.code, 3, args.join(" "));
    const [message, hint, ...rest] = result.stderr.trim().split("\n");
    assertEquals(
      message,
      `cartd: there is no database at ${expected} (no cart was ever created with it)`,
    );
    assertMatch(hint, /is this the right configuration\? \(--config, --volume, --database\)/);
    assertEquals(rest, []);
  }
  const list = await runCli(["list"], { env, cwd: work });
  assertEquals([list.code, list.stdout], [0, "no carts\n"]);
  assert(list.stderr.includes(expected), list.stderr);
  assertEquals(JSON.parse((await runCli(["list", "--json"], { env, cwd: work })).stdout), []);
  const gc = await runCli(["gc", "--dry-run"], { env, cwd: work });
  assertEquals([gc.code, gc.stdout], [0, "nothing to do\n"]);
  const check = await runCli(["db", "check"], { env, cwd: work });
  assertEquals(check.code, 1);
  assertMatch(check.stderr, /no database at .*; "cartd db migrate" creates it/);
  assertEquals([...Deno.readDirSync(work)], [], "nothing was written");
});

Deno.test("durations need a unit: gc --older-than 30 is refused rather than read as 30 seconds", async () => {
  const volume = await Deno.makeTempDir();
  const result = await runCli(["gc", "--older-than", "30"], { env: { VOLUME_PATH: volume } });
  assertEquals(result.code, 2);
  assertMatch(result.stderr, /"30" has no unit; say ms, s, m, h, d or w \(e\.g\. "30s"\)/);
  assertEquals(
    (await runCli(["gc", "--older-than", "30d"], { env: { VOLUME_PATH: volume } })).code,
    0,
  );
  const free = await runCli(["gc", "--free", "20"], { env: { VOLUME_PATH: volume } });
  assertEquals(free.code, 2, "20 what: per cent or bytes?");
  assertEquals((await runCli(["gc", "--free", "20%"], { env: { VOLUME_PATH: volume } })).code, 0);
});

Deno.test("the one-line status says when ready files were left unverified", async () => {
  const archive = await makeArchive([{ id: "a", size: 10 }, { id: "b", size: 10 }]);
  const env = cartdEnv(await Deno.makeTempDir(), `file://${archive.dir}`);
  const request = structuredClone(archive.request);
  request.fileids[1].hashsum = "";
  const created = await runCli(["create", "u", "-", "--wait"], {
    env,
    stdin: JSON.stringify(request),
  });
  assertEquals(created.code, 0, created.stderr);
  const status = await runCli(["status", "u"], { env });
  assertMatch(
    status.stdout,
    /^u: ready, 2\/2 files ready, 1 of them unverified \(no checksum given\)/,
  );
  const json = JSON.parse((await runCli(["status", "u", "--json"], { env })).stdout);
  assertEquals(json.progress.filesUnverified, 1);
});

Deno.test("serve: a taken port names the address, IPv6 prints in brackets, SIGHUP reloads what it can", async () => {
  const volume = await Deno.makeTempDir();
  const config = join(volume, "cartd.ini");
  await Deno.writeTextFile(config, `[cartd]\nvolume_path = ${volume}\nspace_wait = 10m\n`);
  const env = { CARTD_CONFIG: config, ARCHIVE_INTERFACE_URL: "file:///nowhere", CARTD_LOG: "info" };
  const { startServer } = await import("./support/server.ts");
  const server = await startServer(env, ["--address", "::1"]);
  try {
    assertMatch(server.url, /^http:\/\/\[::1\]:\d+\/$/);
    assertEquals((await fetch(server.url)).status, 200);

    const port = new URL(server.url).port;
    const taken = await runCli(["serve", "--address", "::1", "--port", port], { env });
    assertEquals(taken.code, 1);
    assertMatch(
      taken.stderr,
      new RegExp(`cannot listen on \\[::1\\]:${port}: the address is already in use`),
    );
    assertEquals(taken.stdout, "");
    // A fresh volume: the taken address is found before anything is written.
    const fresh = join(volume, "fresh");
    const refused = await runCli(["serve", "--address", "::1", "--port", port, "--volume", fresh], {
      env,
    });
    assertEquals(refused.code, 1);
    assertEquals(await Deno.stat(fresh).then(() => true, () => false), false, "nothing written");
    for (const bad of ["x..y", "", "127.0.0.1:80", "http://127.0.0.1", "300.1.1.1"]) {
      const malformed = await runCli(["serve", "--address", bad, "--port", "0"], { env });
      assertEquals(malformed.code, 2, bad);
      assertMatch(malformed.stderr, /not an IP address or host name/);
    }

    await Deno.writeTextFile(
      config,
      `[cartd]\nvolume_path = ${volume}/elsewhere\nspace_wait = 2m\n`,
    );
    server.child.kill("SIGHUP");
    const deadline = Date.now() + 5000;
    while (!server.log().includes("SIGHUP: restart") && Date.now() < deadline) {
      await sleep(50);
    }
    assertMatch(server.log(), /SIGHUP: now in effect: \[cartd\] space_wait/);
    assertMatch(server.log(), /SIGHUP: restart cartd serve to apply \[cartd\] volume_path/);
    assertEquals((await fetch(server.url)).status, 200, "still serving after SIGHUP");
  } finally {
    server.child.kill("SIGTERM");
    assertEquals((await server.exited).code, 0);
  }
});

const good = { id: 1, path: "a.txt", hashtype: "sha1", hashsum: "" };
const body = (...files: unknown[]) => JSON.stringify({ fileids: files });

Deno.test("create refuses bad requests and uids with exit code 2 and writes nothing", async () => {
  const parent = await Deno.makeTempDir();
  const volume = join(parent, "volume");
  const env = cartdEnv(volume, "http://127.0.0.1:9/");
  const cases: [string, string][] = [
    ["ok-uid", body({ ...good, path: "../escape" })],
    ["ok-uid", "{broken"],
    ["ok-uid", body(good, good)],
    ["ok-uid", body({ ...good, hashtype: "nope" })],
    ["a/b", body(good)],
    ["-", body(good)],
  ];
  for (const [uid, text] of cases) {
    const result = await runCli(["create", uid, "-"], { env, stdin: text });
    assertEquals(result.code, 2, `${uid} ${text}: ${result.stderr}`);
    assert(result.stderr.startsWith("cartd: "), result.stderr);
    assert(!result.stderr.includes("    at "), "no stack trace");
  }
  assertEquals([...Deno.readDirSync(parent)], [], "not even the volume or database was created");
  const missing = await runCli(["status", "ok-uid"], { env });
  assertEquals(missing.code, 3, "no cart was created");
});
