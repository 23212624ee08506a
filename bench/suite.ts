/**
 * `deno task bench`: cartd's speed and memory against physical references measured in the same
 * run on the same data, each cartd figure printed beside its reference and as a ratio. It makes
 * its own data, runs the archive simulator and `cartd serve` as a user would, and uses GNU tar,
 * dd and sha1sum for the references. Not part of `deno task test`.
 *
 *   deno task bench [--only small,large,memory,big,head,cli,follow] [--large-mb 512] [--runs 1]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startArchiveSimulator } from "../fixtures/archive_server.ts";
import { bytes, makeArchive, type TestArchive } from "../tests/support/archive.ts";
import { cartdEnv, runCli } from "../tests/support/cli.ts";
import { type RunningServer, startServer, waitWhileStaging } from "../tests/support/server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    only: { type: "string", default: "small,large,memory,big,head,cli,follow" },
    "large-mb": { type: "string", default: "512" },
  },
});
const parts = new Set(values.only.split(","));
const largeBytes = Number(values["large-mb"]) * 2 ** 20;
const work = await Deno.makeTempDir({ prefix: "cartd-bench-" });
const rows: string[][] = [];
const json = { "content-type": "application/json" };

/** One line of the table: what, cartd's figure, the reference, and their ratio. */
function row(what: string, cartd: string, reference: string, ratio?: number) {
  rows.push([what, cartd, reference, ratio === undefined ? "" : `${ratio.toFixed(2)}×`]);
  console.error(`  ${what}: ${cartd} (reference ${reference})`);
}

async function time<T>(body: () => Promise<T>): Promise<[number, T]> {
  const started = performance.now();
  const result = await body();
  return [(performance.now() - started) / 1000, result];
}

async function shell(command: string): Promise<number> {
  const [seconds, out] = await time(() =>
    new Deno.Command("bash", { args: ["-c", command], stdout: "null", stderr: "piped" }).output()
  );
  if (!out.success) throw new Error(`${command}: ${new TextDecoder().decode(out.stderr)}`);
  return seconds;
}

/** Peak RSS (MiB) of a process since the last `resetPeak`. */
async function peakRss(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmHWM:\s+(\d+)/.exec(status)![1]) / 1024;
}

/** RSS (MiB) of a process now. */
async function rss(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

/** Starts a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM). */
async function resetPeak(pid: number): Promise<void> {
  await Deno.writeTextFile(`/proc/${pid}/clear_refs`, "5");
}

async function post(server: RunningServer, uid: string, request: unknown) {
  const response = await fetch(`${server.url}${uid}`, {
    method: "POST",
    body: JSON.stringify(request),
    headers: json,
  });
  if (response.status !== 201) throw new Error(`POST ${uid}: ${response.status}`);
  await response.body?.cancel();
}

/** POST, then HEAD every 50 ms until ready, as the comparison with the original did. */
async function stage(server: RunningServer, uid: string, request: unknown): Promise<number> {
  const [seconds] = await time(async () => {
    await post(server, uid, request);
    await waitWhileStaging(`${server.url}${uid}`, 50, 600_000);
  });
  return seconds;
}

/**
 * Downloads a cart's tar with `clients` clients at once; MB/s over all of them. With curl when it
 * is there (a client in another process, as users have), else with fetch from this process.
 */
async function download(server: RunningServer, uid: string, clients = 1): Promise<number> {
  const url = `${server.url}${uid}?filename=b`;
  const curl = await new Deno.Command("curl", { args: ["--version"], stdout: "null" }).output()
    .then((o) => o.success, () => false);
  const [seconds, sizes] = await time(() =>
    Promise.all(Array.from({ length: clients }, async () => {
      if (curl) {
        const out = await new Deno.Command("curl", {
          args: ["-sf", "-o", "/dev/null", "-w", "%{size_download}", url],
          stdout: "piped",
        }).output();
        if (!out.success) throw new Error(`curl ${url} failed`);
        return Number(new TextDecoder().decode(out.stdout));
      }
      const response = await fetch(url);
      let n = 0;
      for await (const chunk of response.body!) n += chunk.length;
      return n;
    }))
  );
  return sizes.reduce((a, b) => a + b, 0) / 1e6 / seconds;
}

async function server(archiveUrl: string, extra: Record<string, string> = {}) {
  return await startServer(
    cartdEnv(await Deno.makeTempDir({ dir: work }), archiveUrl, {
      CARTD_LOG: "warn",
      CARTD_POLL_INTERVAL: "1s",
      CARTD_RETRY_INTERVAL: "1s",
      CARTD_LEASE_TIME: "60s",
      ...extra,
    }),
  );
}

async function stop(node: RunningServer) {
  node.child.kill("SIGTERM");
  await node.exited;
}

async function smallSet(): Promise<TestArchive> {
  return await makeArchive(
    Array.from(
      { length: 1000 },
      (_, i) => ({ id: `s/f${i}`, path: `d${i % 20}/f${i}`, size: 65536 }),
    ),
  );
}

/**
 * HEAD requests from 8 clients for 5 s: requests per second and the 99th percentile latency (ms).
 * With wrk (Debian's `wrk`) when it is there, since a load generator in this process would share
 * its two cores with the server less fairly.
 */
async function headLoad(url: string): Promise<[number, number]> {
  const script = join(work, "head.lua");
  await Deno.writeTextFile(script, 'wrk.method = "HEAD"\n');
  const wrk = await new Deno.Command("wrk", {
    args: ["-t", "2", "-c", "8", "-d", "5s", "--latency", "-s", script, url],
    stdout: "piped",
    stderr: "null",
  }).output().catch(() => undefined);
  if (wrk?.success) {
    const text = new TextDecoder().decode(wrk.stdout);
    const rate = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)![1]);
    const [, value, unit] = /99%\s+([\d.]+)(us|ms|s)/.exec(text)!;
    const p99 = Number(value) * (unit === "us" ? 0.001 : unit === "s" ? 1000 : 1);
    return [rate, p99];
  }
  let count = 0;
  const latencies: number[] = [];
  const until = performance.now() + 5000;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (performance.now() < until) {
      const started = performance.now();
      await (await fetch(url, { method: "HEAD" })).body?.cancel();
      latencies.push(performance.now() - started);
      count++;
    }
  }));
  latencies.sort((a, b) => a - b);
  return [count / 5, latencies[Math.floor(latencies.length * 0.99)]];
}

/** Files per second that a plain copy (see its caller) of every file under `dir` achieves. */
async function copyReference(dir: string, threads: number): Promise<number> {
  const program = `
import os, sys, threading, time
src, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = [os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs]
todo, lock = iter(enumerate(names)), threading.Lock()
def copy():
    while True:
        with lock:
            i, name = next(todo, (None, None))
        if name is None: return
        with open(name, "rb") as f: data = f.read()
        folder = os.path.join(out, str(i % 20)); os.makedirs(folder, exist_ok=True)
        part = os.path.join(folder, f"{i}.part")
        fd = os.open(part, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        os.write(fd, data); os.fsync(fd); os.close(fd)
        os.rename(part, os.path.join(folder, str(i)))
started = time.time()
workers = [threading.Thread(target=copy) for _ in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
print(len(names) / (time.time() - started))`;
  const out = await Deno.makeTempDir({ dir: work });
  const result = await new Deno.Command("python3", {
    args: ["-c", program, dir, out, String(threads)],
    stdout: "piped",
  }).output();
  await Deno.remove(out, { recursive: true });
  return Number(new TextDecoder().decode(result.stdout));
}

if (parts.has("small")) {
  console.error("1000 × 64 KiB");
  const archive = await smallSet();
  const simulator = await startArchiveSimulator({ prefix: archive.dir });
  // The archive's own requests for those files: status and body of each, 4 at a time (as
  // cartd's 4 workers).
  const ids = archive.files.map((f) => f.id);
  const [archiveSeconds] = await time(async () => {
    let next = 0;
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next < ids.length) {
        const url = `${simulator.url}${encodeURIComponent(ids[next++])}`;
        await (await fetch(url, { method: "POST" })).body?.cancel();
        await (await fetch(url, { method: "HEAD" })).body?.cancel();
        await (await fetch(url)).arrayBuffer();
      }
    }));
  });
  const node = await server(simulator.url);
  const seconds = await stage(node, "small", archive.request);
  row(
    "1000 × 64 KiB: POST → ready (HTTP archive)",
    `${seconds.toFixed(2)} s`,
    `${archiveSeconds.toFixed(2)} s of archive requests`,
    seconds / archiveSeconds,
  );
  // The same files copied by the simplest safe program, 4 at a time: read, create a partial file,
  // write, fsync, rename. On a file system where creating a file is dear, this is the ceiling.
  const copyRate = await copyReference(archive.dir, 4);
  const fileNode = await server(`file://${archive.dir}`);
  const fileSeconds = await stage(fileNode, "small", archive.request);
  row(
    "1000 × 64 KiB: POST → ready (file://)",
    `${(1000 / fileSeconds).toFixed(0)} files/s`,
    `copy+fsync ${copyRate.toFixed(0)} files/s; target 1500`,
    1000 / fileSeconds / copyRate,
  );
  await stop(fileNode);
  const tarSeconds = await shell(`cd ${archive.dir} && tar cf - s | cat > /dev/null`);
  const tarMbps = 1000 * 65536 / 1e6 / tarSeconds;
  // The first download of a fresh server, and the best of three after it (a running server's
  // code is compiled by then); the ratio is the latter's.
  const first = await download(node, "small");
  let warm = 0;
  for (let i = 0; i < 3; i++) warm = Math.max(warm, await download(node, "small"));
  row(
    "1000 × 64 KiB: GET of the tar",
    `first ${first.toFixed(0)} MB/s, then ${warm.toFixed(0)} MB/s`,
    `tar|cat ${tarMbps.toFixed(0)} MB/s`,
    warm / tarMbps,
  );
  await stop(node);
  await simulator.stop();
}

if (parts.has("large") || parts.has("memory")) {
  console.error(`4 × ${values["large-mb"]} MiB`);
  const block = bytes(1 << 20, 7);
  const dir = await Deno.makeTempDir({ dir: work });
  const specs = [];
  for (let i = 0; i < 4; i++) {
    const file = await Deno.open(join(dir, `big${i}`), { write: true, create: true });
    for (let written = 0; written < largeBytes; written += block.length) {
      block[0] = i; // each file its own bytes
      block[1] = written >> 20;
      await file.write(block.subarray(0, Math.min(block.length, largeBytes - written)));
    }
    file.close();
    specs.push({ id: `big${i}`, data: await Deno.readFile(join(dir, `big${i}`)) });
  }
  const archive = await makeArchive(specs);
  specs.length = 0;
  await Deno.remove(dir, { recursive: true });
  const total = 4 * largeBytes;
  const ddSeconds = await shell(
    `dd if=/dev/zero of=${work}/dd bs=4M count=${
      total / (4 << 20)
    } conv=fsync status=none && rm ${work}/dd`,
  );
  // One sha1 pass as OpenSSL does it (cartd's hashing is OpenSSL's too), read from the cache.
  const sha1Seconds = await shell(
    `python3 -c 'import hashlib,sys
for name in sys.argv[1:]:
    h = hashlib.sha1()
    with open(name, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""): h.update(block)' ${archive.dir}/big*`,
  );
  const simulator = await startArchiveSimulator({ prefix: archive.dir });
  const node = await server(simulator.url);
  await resetPeak(node.child.pid);
  const seconds = await stage(node, "large", archive.request);
  const stagingPeak = await peakRss(node.child.pid);
  const reference = ddSeconds + sha1Seconds;
  row(
    `4 × ${values["large-mb"]} MiB: POST → ready`,
    `${seconds.toFixed(2)} s`,
    `dd conv=fsync ${ddSeconds.toFixed(2)} s + sha1 ${sha1Seconds.toFixed(2)} s`,
    seconds / reference,
  );
  const tarSeconds = await shell(
    `cd ${archive.dir} && tar cf - big0 big1 big2 big3 | cat > /dev/null`,
  );
  const tarMbps = total / 1e6 / tarSeconds;
  await resetPeak(node.child.pid);
  const first = await download(node, "large");
  const streamingPeak = await peakRss(node.child.pid);
  let warm = 0;
  for (let i = 0; i < 3; i++) warm = Math.max(warm, await download(node, "large"));
  row(
    `4 × ${values["large-mb"]} MiB: GET of the tar`,
    `first ${first.toFixed(0)} MB/s, then ${warm.toFixed(0)} MB/s`,
    `tar|cat ${tarMbps.toFixed(0)} MB/s`,
    warm / tarMbps,
  );
  if (parts.has("memory")) {
    const idle = await server(simulator.url);
    const idleRss = await peakRss(idle.child.pid);
    await stop(idle);
    row(
      "peak RSS while staging / one client streaming",
      `${stagingPeak.toFixed(0)} / ${streamingPeak.toFixed(0)} MiB`,
      `120 MiB target; idle serve ${idleRss.toFixed(0)} MiB`,
      Math.max(stagingPeak, streamingPeak) / 120,
    );
    await resetPeak(node.child.pid);
    const many = await download(node, "large", 50);
    const manyPeak = await peakRss(node.child.pid);
    row(
      "peak RSS, 50 clients streaming",
      `${manyPeak.toFixed(0)} MiB (${many.toFixed(0)} MB/s)`,
      "200 MiB target",
      manyPeak / 200,
    );
  }
  await stop(node);
  await simulator.stop();
  await Deno.remove(archive.dir, { recursive: true });
}

if (parts.has("big") || parts.has("head")) {
  console.error("100 000-file cart, HEAD");
  const archive = await makeArchive([{ id: "one", size: 100 }]);
  const [template] = archive.request.fileids;
  const node = await server(`file://${archive.dir}`, { CARTD_WORKERS: "4" });
  await post(node, "small", { fileids: [template] });
  await waitWhileStaging(`${node.url}small`, 50);
  if (parts.has("big")) {
    const request = {
      fileids: Array.from(
        { length: 100_000 },
        (_, i) => ({ ...template, path: `d${i % 300}/f${i}` }),
      ),
    };
    const [stageSeconds] = await time(async () => {
      await post(node, "big", request);
      await waitWhileStaging(`${node.url}big`, 500, 1_800_000);
    });
    const heads: number[] = [];
    for (let i = 0; i < 20; i++) {
      const [s] = await time(async () =>
        (await fetch(`${node.url}big`, { method: "HEAD" })).body?.cancel()
      );
      heads.push(s * 1000);
    }
    heads.sort((a, b) => a - b);
    row(
      "HEAD of a 100 000-file cart",
      `median ${heads[10].toFixed(1)} ms, max ${heads[19].toFixed(1)} ms`,
      "5 ms target",
      heads[19] / 5,
    );
    await resetPeak(node.child.pid);
    const before = await rss(node.child.pid);
    const mbps = await download(node, "big");
    const peak = await peakRss(node.child.pid);
    row(
      "GET of the 100 000-file cart: peak RSS",
      `${peak.toFixed(0)} MiB, ${before.toFixed(0)} before (${mbps.toFixed(0)} MB/s; staged at ${
        (100_000 / stageSeconds).toFixed(0)
      } files/s)`,
      "120 MiB target",
      peak / 120,
    );
  }
  if (parts.has("head")) {
    const [rate, p99] = await headLoad(`${node.url}small`);
    row(
      "HEAD, 8 clients",
      `${rate.toFixed(0)} req/s, p99 ${p99.toFixed(1)} ms`,
      "10 000 req/s target",
      rate / 10_000,
    );
  }
  await stop(node);
}

if (parts.has("cli")) {
  console.error("CLI start");
  const archive = await makeArchive([{ id: "one", size: 100 }]);
  const env = cartdEnv(await Deno.makeTempDir({ dir: work }), `file://${archive.dir}`);
  await runCli(["create", "c", "-", "--wait"], { env, stdin: JSON.stringify(archive.request) });
  const main = new URL("../main.ts", import.meta.url).pathname;
  const bundle = join(work, "cartd.js");
  await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--platform", "deno", "-o", bundle, main],
    stdout: "null",
    stderr: "null",
  }).output();
  const median = async (args: string[]) => {
    const times: number[] = [];
    for (let i = 0; i < 7; i++) {
      const [s, out] = await time(() =>
        new Deno.Command(Deno.execPath(), {
          args,
          env: { ...env, NO_COLOR: "1" },
          stdout: "null",
          stderr: "null",
        }).output()
      );
      if (!out.success) throw new Error(`${args.join(" ")} failed`);
      times.push(s * 1000);
    }
    return times.sort((a, b) => a - b)[3];
  };
  const fromSource = await median(["run", "-A", "--quiet", main, "status", "c"]);
  const fromBundle = await median(["run", "-A", "--quiet", "--no-config", bundle, "status", "c"]);
  const bare = await median(["eval", "0"]);
  row(
    "cartd status <uid> (warm)",
    `${fromSource.toFixed(0)} ms; bundle ${fromBundle.toFixed(0)} ms`,
    `150 ms target; deno eval 0 ${bare.toFixed(0)} ms`,
    fromSource / 150,
  );
}

if (parts.has("follow")) {
  // A cart recalled from tape, fetched by a client whose link carries 64 MB/s: staged then
  // downloaded, against a download that follows the staging (GET /-/carts/<uid>/tar at once).
  const files = 8;
  const size = 32 * 2 ** 20;
  const rate = 64e6;
  const archive = await makeArchive(
    Array.from({ length: files * 2 }, (_, i) => ({ id: `f${i}`, data: bytes(size, i + 1) })),
  );
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    mode: "tape",
    tapeDelayMs: 3000,
    faults: [{ op: "pull", kind: "slow", bytesPerSecond: 100e6 }],
  });
  const node = await server(simulator.url, { CARTD_POLL_INTERVAL: "250ms" });
  const curl = (url: string) =>
    new Deno.Command("curl", {
      args: ["-sf", "--limit-rate", String(rate), "-o", "/dev/null", url],
    }).output();
  const half = (n: number) => ({
    fileids: archive.request.fileids.slice(n * files, (n + 1) * files),
  });
  const [staged] = await time(() => stage(node, "staged", half(0)));
  const [transfer] = await time(() => curl(`${node.url}staged?filename=b`));
  const [followed, out] = await time(async () => {
    await post(node, "followed", half(1));
    return await curl(`${node.url}-/carts/followed/tar?filename=b`);
  });
  if (!out.success) throw new Error("the follow download failed");
  const oneFile = size / rate;
  row(
    `${files} × 32 MiB from tape, client at 64 MB/s: time to last byte, following`,
    `${followed.toFixed(2)} s`,
    `staged ${staged.toFixed(2)} s, then downloaded ${transfer.toFixed(2)} s: ` +
      `${(staged + transfer).toFixed(2)} s; staging + one file ${(staged + oneFile).toFixed(2)} s`,
    followed / (staged + oneFile),
  );
  await stop(node);
  await simulator.stop();
}

await Deno.remove(work, { recursive: true }).catch(() => {});
const header = ["workload", "cartd", "reference (same run)", "ratio"];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
console.log(line(header));
console.log(line(widths.map((w) => "-".repeat(w))));
for (const r of rows) console.log(line(r));
