/**
 * Scale-out: staging many small files from an archive with some latency, on SQLite with one node
 * and on PostgreSQL with 1, 2 and 3 `cartd serve` nodes sharing one database and one volume,
 * first with the same workers in all (split across the nodes), then with the same workers per
 * node. Reports files/s and the database's share of the time (each node runs with
 * CARTD_DB_TIMING=1 and logs its query time on exit).
 *
 *   deno run -A bench/scale_bench.ts [--files 3000] [--carts 30] [--latency 20] [--workers 12]
 */
import { parseArgs } from "node:util";
import { startArchiveSimulator } from "../fixtures/archive_server.ts";
import { makeArchive } from "../tests/support/archive.ts";
import { cartdEnv } from "../tests/support/cli.ts";
import { testPostgres } from "../tests/support/postgres.ts";
import { type RunningServer, startServer } from "../tests/support/server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    files: { type: "string", default: "3000" },
    carts: { type: "string", default: "30" },
    latency: { type: "string", default: "20" },
    workers: { type: "string", default: "12" },
  },
});
const files = Number(values.files);
const carts = Number(values.carts);
const totalWorkers = Number(values.workers);
const perCart = Math.ceil(files / carts);

const archive = await makeArchive(
  Array.from({ length: files }, (_, i) => ({ id: `f${i}`, size: 1000 })),
);
const simulator = await startArchiveSimulator({
  prefix: archive.dir,
  latencyMs: Number(values.latency),
});
const postgres = await testPostgres();

interface Run {
  engine: "sqlite" | "postgres";
  nodes: number;
  workersPerNode: number;
}

async function measure(run: Run) {
  const volume = await Deno.makeTempDir();
  const env = cartdEnv(volume, simulator.url, {
    CARTD_WORKERS: String(run.workersPerNode),
    CARTD_DB_TIMING: "1",
    CARTD_LOG: "info",
    CARTD_POLL_INTERVAL: "100ms",
    ...(run.engine === "postgres" ? { PEEWEE_URL: await postgres.createDatabase() } : {}),
  });
  const nodes: RunningServer[] = [];
  for (let n = 0; n < run.nodes; n++) nodes.push(await startServer(env));
  const started = performance.now();
  for (let c = 0; c < carts; c++) {
    const response = await fetch(`${nodes[c % nodes.length].url}b${c}`, {
      method: "POST",
      body: JSON.stringify({
        fileids: archive.request.fileids.slice(c * perCart, (c + 1) * perCart),
      }),
      headers: { "content-type": "application/json" },
    });
    await response.body?.cancel();
  }
  const pending = new Set(Array.from({ length: carts }, (_, c) => c));
  while (pending.size) {
    for (const c of [...pending]) {
      const head = await fetch(`${nodes[c % nodes.length].url}b${c}`, { method: "HEAD" });
      const status = head.headers.get("x-pacifica-status");
      if (status === "ready") pending.delete(c);
      else if (status !== "staging") throw new Error(`cart b${c}: ${status}`);
    }
    if (pending.size) await new Promise((r) => setTimeout(r, 50));
  }
  const seconds = (performance.now() - started) / 1000;
  let databaseMs = 0;
  for (const node of nodes) {
    node.child.kill("SIGTERM");
    await node.exited;
    const line = /database time: \d+ queries, (\d+) ms/.exec(node.log());
    databaseMs += Number(line?.[1] ?? 0);
  }
  const share = databaseMs / 1000 / (seconds * run.nodes * run.workersPerNode);
  console.log(
    `${run.engine.padEnd(8)} ${run.nodes} node(s) × ${String(run.workersPerNode).padStart(2)} ` +
      `workers: ${(files / seconds).toFixed(0).padStart(5)} files/s (${seconds.toFixed(1)} s); ` +
      `database ${(databaseMs / 1000).toFixed(1)} s of queries, ` +
      `${(share * 100).toFixed(0)}% of worker time`,
  );
}

console.log(
  `${files} files of 1000 B in ${carts} carts, archive latency ${values.latency} ms, ` +
    `${totalWorkers} workers in all, then ${totalWorkers} per node:`,
);
await measure({ engine: "sqlite", nodes: 1, workersPerNode: totalWorkers });
for (const nodes of [1, 2, 3]) {
  await measure({ engine: "postgres", nodes, workersPerNode: Math.round(totalWorkers / nodes) });
}
for (const nodes of [2, 3]) {
  await measure({ engine: "postgres", nodes, workersPerNode: totalWorkers });
}
await simulator.stop();
postgres.stop();
