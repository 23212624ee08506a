/**
 * A throwaway PostgreSQL for tests: a cluster made with `initdb` and run with `pg_ctl` as an
 * unprivileged user (the `postgres` account when the tests run as root), on a free loopback port
 * with its own socket folder, stopped when the test module ends. Each test gets a fresh database.
 * If PostgreSQL cannot start, the test fails: it is never skipped.
 */
// @ts-types="@types/pg"
import pg from "pg";
import { join } from "node:path";

/** A running cluster. */
export interface TestPostgres {
  port: number;
  /** The folder of its Unix socket, for `?host=/socket/dir` URLs. */
  socketDir: string;
  /** A URL for `database` on this cluster (the `postgres` database by default). */
  url(database?: string): string;
  /** Makes a new, empty database and returns its URL. */
  createDatabase(): Promise<string>;
  /**
   * Stops the server and starts it again on the same port after `downMs`: `fast` (the default)
   * ends every session as an operator's restart does; `immediate` is a crash (with this test
   * cluster's fsync off, the last commits may then be lost).
   */
  restart(options?: { downMs?: number; mode?: "fast" | "immediate" }): Promise<void>;
  stop(): void;
}

let shared: Promise<TestPostgres> | undefined;

/** The cluster this test module shares, started on first use. */
export function testPostgres(): Promise<TestPostgres> {
  shared ??= startPostgres();
  return shared;
}

/** Runs a PostgreSQL program as the cluster's owner; throws with its output when it fails. */
function runAs(owner: string | undefined, program: string, args: string[], sync = false) {
  const [command, commandArgs] = owner
    ? ["runuser", ["-u", owner, "--", program, ...args]]
    : [program, args];
  const run = new Deno.Command(command, { args: commandArgs, stdout: "piped", stderr: "piped" });
  const check = (out: Deno.CommandOutput) => {
    if (!out.success) {
      const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
      throw new Error(`${program} ${args[0] ?? ""} failed: ${text.trim().slice(0, 2000)}`);
    }
    return out;
  };
  return sync ? Promise.resolve(check(run.outputSync())) : run.output().then(check);
}

async function binDir(): Promise<string> {
  for (const dir of ["/usr/lib/postgresql"]) {
    try {
      const versions = [...Deno.readDirSync(dir)].map((e) => e.name)
        .filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
      if (versions.length) return join(dir, versions[0], "bin");
    } catch { /* not here */ }
  }
  const out = await new Deno.Command("pg_config", { args: ["--bindir"] }).output().catch(() =>
    undefined
  );
  if (out?.success) return new TextDecoder().decode(out.stdout).trim();
  throw new Error("PostgreSQL is not installed (no initdb): apt-get install postgresql");
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

async function startPostgres(): Promise<TestPostgres> {
  const bin = await binDir();
  const owner = Deno.uid() === 0 ? "postgres" : undefined;
  const base = await Deno.makeTempDir({ prefix: "cartd-pg-" });
  const data = join(base, "data");
  const sockets = join(base, "sockets");
  await Deno.mkdir(sockets);
  if (owner) {
    const uid = Number(new TextDecoder().decode(
      (await new Deno.Command("id", {
        args: ["-u", owner],
      }).output()).stdout,
    ));
    const gid = Number(new TextDecoder().decode(
      (await new Deno.Command("id", {
        args: ["-g", owner],
      }).output()).stdout,
    ));
    for (const path of [base, sockets]) await Deno.chown(path, uid, gid);
  }
  await runAs(owner, join(bin, "initdb"), [
    "-D",
    data,
    "-U",
    "postgres",
    "-A",
    "trust",
    "-E",
    "UTF8",
    "--no-sync",
  ]);
  const port = freePort();
  const options = [
    "-c listen_addresses=127.0.0.1",
    `-p ${port}`,
    `-k ${sockets}`,
    "-c fsync=off",
    "-c synchronous_commit=off",
    "-c full_page_writes=off",
    "-c max_connections=200",
  ].join(" ");
  const start = () =>
    runAs(owner, join(bin, "pg_ctl"), [
      "-D",
      data,
      "-l",
      join(base, "log"),
      "-w",
      "-o",
      options,
      "start",
    ]);
  const stop = (mode: "fast" | "immediate", sync = false) =>
    runAs(owner, join(bin, "pg_ctl"), ["-D", data, "-m", mode, "-w", "stop"], sync);
  await start();
  let stopped = false;
  const stopSync = () => {
    if (stopped) return;
    stopped = true;
    stop("immediate", true).catch(() => {});
    try {
      Deno.removeSync(base, { recursive: true });
    } catch { /* best effort */ }
  };
  globalThis.addEventListener("unload", stopSync);
  let databases = 0;
  const url = (database = "postgres") => `postgres://postgres@127.0.0.1:${port}/${database}`;
  return {
    port,
    socketDir: sockets,
    url,
    async createDatabase() {
      const name = `cartd_test_${Deno.pid}_${++databases}`;
      const client = new pg.Client({ connectionString: url() });
      await client.connect();
      try {
        await client.query(`create database ${name}`);
      } finally {
        await client.end();
      }
      return url(name);
    },
    async restart({ downMs = 0, mode = "fast" } = {}) {
      await stop(mode);
      await new Promise((resolve) => setTimeout(resolve, downMs));
      await start();
    },
    stop: stopSync,
  };
}
