/**
 * Download throughput and server memory: `cartd serve` on a file:// archive, one cart, C clients
 * downloading its tar at once. Reports MB/s (all clients together) and the server's peak RSS.
 *
 *   deno run -A bench/download_bench.ts [--size-mb 512] [--files 8] [--clients 1,10,50]
 */
import { parseArgs } from "node:util";
import { bytes, makeArchive } from "../tests/support/archive.ts";
import { cartdEnv } from "../tests/support/cli.ts";
import { startServer, waitWhileStaging } from "../tests/support/server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-mb": { type: "string", default: "512" },
    files: { type: "string", default: "8" },
    clients: { type: "string", default: "1,10,50" },
  },
});
const totalMb = Number(values["size-mb"]);
const fileCount = Number(values.files);
const each = Math.floor(totalMb * 1e6 / fileCount);
const block = bytes(1 << 20, 3);
const specs = Array.from({ length: fileCount }, (_, i) => ({
  id: `f${i}`,
  data: new Uint8Array(each).map((_, j) => block[j & 0xfffff]),
}));
const archive = await makeArchive(specs);
const server = await startServer(cartdEnv(await Deno.makeTempDir(), `file://${archive.dir}`));
try {
  const created = await fetch(`${server.url}bench`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(archive.request),
  });
  await created.body?.cancel();
  const staging = performance.now();
  await waitWhileStaging(`${server.url}bench`, 100, 600_000);
  const stageSeconds = (performance.now() - staging) / 1000;
  console.log(
    `staged ${totalMb} MB in ${fileCount} files: ${stageSeconds.toFixed(1)} s (${
      (totalMb / stageSeconds).toFixed(0)
    } MB/s, checksums included)`,
  );
  for (const clients of values.clients.split(",").map(Number)) {
    const started = performance.now();
    const sizes = await Promise.all(Array.from({ length: clients }, async () => {
      const response = await fetch(`${server.url}bench?filename=b`);
      let n = 0;
      for await (const chunk of response.body!) n += chunk.length;
      return n;
    }));
    const seconds = (performance.now() - started) / 1000;
    const mb = sizes.reduce((a, b) => a + b, 0) / 1e6;
    const status = await Deno.readTextFile(`/proc/${server.child.pid}/status`);
    const peak = Number(/VmHWM:\s+(\d+)/.exec(status)![1]) / 1024;
    console.log(
      `${clients} client(s): ${mb.toFixed(0)} MB in ${seconds.toFixed(2)} s = ${
        (mb / seconds).toFixed(0)
      } MB/s; server peak RSS ${peak.toFixed(0)} MiB`,
    );
  }
} finally {
  server.child.kill("SIGTERM");
  await server.exited;
  await Deno.remove(archive.dir, { recursive: true });
}
