/**
 * What a site installs from deploy/: the systemd units pass `systemd-analyze verify`, the sample
 * INI is current and valid, the `deno bundle` file serves with exactly the unit's permissions
 * (never `-A`), and `cartd db backup` copies the database while the server writes to it.
 */
import { join } from "node:path";
import { sampleIni } from "../tools/readme.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { cartdEnv, runCli } from "./support/cli.ts";
import { startServer, waitWhileStaging } from "./support/server.ts";

const deploy = (name: string) => new URL(`../deploy/${name}`, import.meta.url);
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

/** The unit's ExecStart as arguments (continuation lines joined). */
async function execStart(unit: string): Promise<string[]> {
  const text = (await Deno.readTextFile(deploy(unit))).replaceAll("\\\n", " ");
  const line = text.split("\n").find((l) => l.startsWith("ExecStart="))!;
  return line.slice("ExecStart=".length).trim().split(/\s+/);
}

Deno.test("systemd-analyze verify accepts the units, with nothing to warn about", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cartd-" });
  const names = ["cartd.service", "cartd-gc.service", "cartd-gc.timer"];
  for (const name of names) {
    // The deno binary where this machine has it (verify checks that it is executable).
    const text = (await Deno.readTextFile(deploy(name)))
      .replaceAll("/usr/local/bin/deno", Deno.execPath());
    await Deno.writeTextFile(join(dir, name), text);
  }
  const out = await new Deno.Command("systemd-analyze", {
    args: ["verify", ...names.map((n) => join(dir, n))],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const said = decode(out.stderr) + decode(out.stdout);
  assert(out.success, said);
  assertEquals(said.trim(), "", "no warnings");

  const serve = await execStart("cartd.service");
  assert(serve[0].endsWith("/deno") && serve[1] === "run", "deno itself, not npx");
  assert(!serve.includes("-A") && !serve.includes("--allow-all"), "the least permissions");
  const unit = await Deno.readTextFile(deploy("cartd.service"));
  for (const hardening of ["NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths="]) {
    assert(unit.includes(hardening), hardening);
  }
});

Deno.test("the sample INI is made from the key table, documents every key, and is valid", async () => {
  const sample = await Deno.readTextFile(deploy("cartd.ini"));
  assertEquals(sample, sampleIni(), "run `deno task docs`");
  const checked = await runCli(["config", "check"], {
    env: { CARTD_CONFIG: deploy("cartd.ini").pathname },
  });
  assertEquals(checked.code, 0, checked.stderr);
});

Deno.test("the bundle serves with exactly the unit's permissions", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cartd-" });
  const bundle = join(dir, "cartd.js");
  const built = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--platform", "deno", "-o", bundle, "main.ts"],
    cwd: new URL("..", import.meta.url).pathname,
    stderr: "piped",
  }).output();
  assert(built.success, decode(built.stderr));

  const archive = await makeArchive([{ id: "a", size: 20_000 }, { id: "b/c", size: 10 }]);
  const state = join(dir, "state");
  const conf = join(dir, "conf");
  await Deno.mkdir(state);
  await Deno.mkdir(conf);
  await Deno.writeTextFile(
    join(conf, "cartd.ini"),
    `[cartd]\nvolume_path = ${state}/volume\n[archiveinterface]\nurl = file://${archive.dir}\n`,
  );
  // The unit's flags, its directories mapped to this test's, and the archive's directory.
  const flags = (await execStart("cartd.service"))
    .filter((arg) => arg.startsWith("--allow") || arg === "--no-prompt")
    .map((arg) => arg.replaceAll("/var/lib/cartd", state).replaceAll("/etc/cartd", conf))
    .map((arg) => arg.startsWith("--allow-read=") ? `${arg},${archive.dir}` : arg);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, bundle, "--config", join(conf, "cartd.ini"), "serve", "--port", "0"],
    env: { DENO_DIR: join(state, ".deno"), NO_COLOR: "1", CARTD_CONFIG: "", CARTD_LOG: "info" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  const first = decode((await reader.read()).value ?? new Uint8Array());
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  const url = /http:\/\/\S+/.exec(first)?.[0];
  try {
    assert(url, `no listening line: ${first}`);
    const created = await fetch(`${url}perm`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(archive.request),
    });
    await created.body?.cancel();
    assertEquals(created.status, 201);
    const done = await waitWhileStaging(`${url}perm`, 50);
    assertEquals(done.status, 204);
    const tar = await fetch(`${url}perm`);
    assertEquals(tar.status, 200);
    assert((await tar.arrayBuffer()).byteLength > 20_000);
    const health = await (await fetch(`${url}-/health`)).json();
    assertEquals(health.status, "ok", JSON.stringify(health));
    const metrics = await fetch(`${url}-/metrics`);
    assertEquals(metrics.status, 200);
    assertMatch(await metrics.text(), /cartd_volume_free_bytes \d+/);
    child.kill("SIGHUP");
  } finally {
    child.kill("SIGTERM");
    const out = await child.output();
    const log = decode(out.stderr);
    assertEquals(out.code, 0, log);
    assert(!/Requires \w+ access|PermissionDenied|NotCapable/.test(log), log);
    assertMatch(log, /SIGHUP: configuration read again/);
  }
  // The gc unit's command, and a backup, with the same permissions.
  const gcFlags = (await execStart("cartd-gc.service"))
    .filter((arg) => arg.startsWith("--allow") || arg === "--no-prompt")
    .map((arg) => arg.replaceAll("/var/lib/cartd", state).replaceAll("/etc/cartd", conf));
  for (const command of [["gc", "--older-than", "30d"], ["db", "backup", `${state}/backup.db`]]) {
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...gcFlags, bundle, "--config", join(conf, "cartd.ini"), ...command],
      env: { DENO_DIR: join(state, ".deno"), NO_COLOR: "1", CARTD_CONFIG: "" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(run.code, 0, `${command.join(" ")}: ${decode(run.stderr)}`);
  }
});

Deno.test("cartd db backup copies the database consistently while the server writes to it", async () => {
  const archive = await makeArchive([{ id: "a", size: 100 }]);
  const dir = await Deno.makeTempDir({ prefix: "cartd-" });
  const env = cartdEnv(join(dir, "volume"), `file://${archive.dir}`, { CARTD_LOG: "warn" });
  const node = await startServer(env);
  try {
    let writing = true;
    let created = 0;
    const writer = (async () => {
      while (writing) {
        const response = await fetch(`${node.url}c${created}`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(archive.request),
        });
        await response.body?.cancel();
        created++;
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 300));
    await Deno.mkdir(join(dir, "backups"));
    const backup = join(dir, "backups", "cartd.sqlite3");
    const result = await runCli(["db", "backup", backup], { env });
    writing = false;
    await writer;
    assertEquals(result.code, 0, result.stderr);
    assertMatch(result.stdout, /^backed up to .*cartd\.sqlite3 \(\d/);

    const listed = await runCli(["list", "--json"], {
      env: { ...env, PEEWEE_URL: backup, VOLUME_PATH: join(dir, "elsewhere") },
    });
    assertEquals(listed.code, 0, listed.stderr);
    const carts = JSON.parse(listed.stdout).length;
    assert(carts > 0 && carts <= created, `${carts} carts in the backup, ${created} created`);

    assertEquals((await Deno.stat(backup)).mode! & 0o777, 0o600, "for cartd's eyes only");
    const beside = [];
    for await (const entry of Deno.readDir(join(dir, "backups"))) beside.push(entry.name);
    assertEquals(beside, ["cartd.sqlite3"], "one file that stands alone (no -wal, no -shm)");
    const again = await runCli(["db", "backup", backup], { env });
    assertEquals(again.code, 2, "never overwrites");
    assertMatch(again.stderr, /already exists/);
    const nowhere = await runCli(["db", "backup", join(dir, "typo", "x.sqlite3")], { env });
    assertEquals(nowhere.code, 2, "no folder is made for a mistyped path");
  } finally {
    node.child.kill("SIGTERM");
    await node.exited;
  }
});
