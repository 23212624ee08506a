/**
 * `/-/metrics` as Prometheus scrapes it (checked by `promtool check metrics`, from Debian's
 * `prometheus`), moving as carts stage, are served and fail; `/-/health` reporting the database,
 * the archive and the volume apart.
 */
import { join } from "node:path";
import { startArchiveSimulator } from "../fixtures/archive_server.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { cartdEnv } from "./support/cli.ts";
import { startServer, waitWhileStaging } from "./support/server.ts";

const json = { "content-type": "application/json" };

/** The metrics text, after `promtool check metrics` has accepted it. */
async function scrape(url: string): Promise<string> {
  const response = await fetch(`${url}-/metrics`);
  assertEquals(response.status, 200);
  assert(response.headers.get("content-type")!.startsWith("text/plain; version=0.0.4"));
  const text = await response.text();
  const promtool = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = promtool.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await promtool.output();
  const said = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
  assert(out.success, `promtool check metrics: ${said}`);
  return text;
}

/** The value of one series (`name{labels}` exactly as written), or undefined. */
function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("metrics move as carts stage, are served and fail, and promtool accepts them", async () => {
  const archive = await makeArchive([
    { id: "a", size: 50_000 },
    { id: "b", size: 7_000 },
    { id: "bad", size: 10 },
  ]);
  // A wrong checksum: the file (and its cart) fails once pulled.
  archive.request.fileids[2].hashsum = "0".repeat(archive.request.fileids[2].hashsum.length);
  const simulator = await startArchiveSimulator({ prefix: archive.dir });
  const volume = await Deno.makeTempDir({ prefix: "cartd-" });
  const node = await startServer(cartdEnv(volume, simulator.url, {
    CARTD_LOG: "warn",
    CARTD_RETRY_LIMIT: "1",
  }));
  try {
    const before = await scrape(node.url);
    assertEquals(value(before, 'cartd_carts{status="ready"}'), 0);
    assertEquals(value(before, "cartd_pulled_bytes_total"), 0);
    assert(before.includes('cartd_build_info{version="'));

    const [good, bad] = [archive.request.fileids.slice(0, 2), archive.request.fileids.slice(2)];
    for (const [uid, fileids] of [["good", good], ["bad", bad]] as const) {
      const response = await fetch(`${node.url}${uid}`, {
        method: "POST",
        headers: json,
        body: JSON.stringify({ fileids }),
      });
      await response.body?.cancel();
    }
    await waitWhileStaging(`${node.url}good`, 50);
    await waitWhileStaging(`${node.url}bad`, 50);
    const tar = await (await fetch(`${node.url}good`)).arrayBuffer();

    const after = await scrape(node.url);
    assertEquals(value(after, 'cartd_carts{status="ready"}'), 1);
    assertEquals(value(after, 'cartd_carts{status="error"}'), 1);
    assertEquals(value(after, 'cartd_files{state="ready"}'), 2);
    assertEquals(value(after, 'cartd_files{state="error"}'), 1);
    assert(value(after, "cartd_pulled_bytes_total")! >= 57_000);
    assertEquals(value(after, "cartd_served_bytes_total"), tar.byteLength);
    assertEquals(value(after, "cartd_volume_used_bytes"), 57_000);
    assertEquals(value(after, "cartd_downloads_in_flight"), 0);
    assert(value(after, 'cartd_archive_requests_total{kind="pull",outcome="ok"}')! >= 3);
    assert(value(after, 'cartd_archive_request_duration_seconds_count{kind="status"}')! >= 3);
    assertEquals(value(after, 'cartd_http_requests_total{route="GET /{uid}",status="200"}'), 1);
    assertEquals(value(after, 'cartd_http_requests_total{route="POST /{uid}",status="201"}'), 2);
    assert(value(after, "cartd_volume_free_bytes")! > 0);

    // Methods a client makes up do not make new series.
    await (await fetch(`${node.url}good`, { method: "FROBNICATE" })).body?.cancel();
    await (await fetch(`${node.url}good`, { method: "DELETE" })).body?.cancel();
    const deleted = await scrape(node.url);
    assertEquals(value(deleted, 'cartd_carts_deleted{reason="deleted"}'), 1);
    assertEquals(value(deleted, 'cartd_carts_deleted{reason="evicted"}'), 0);
    assert(!deleted.includes("FROBNICATE"));
    assertEquals(value(deleted, 'cartd_http_requests_total{route="other /{uid}",status="405"}'), 1);
    assertEquals(value(deleted, 'cartd_carts{status="ready"}'), 0);
    assert(
      value(deleted, "cartd_served_bytes_total")! >= value(after, "cartd_served_bytes_total")!,
      "counters never go backwards",
    );
  } finally {
    node.child.kill("SIGTERM");
    await node.exited;
    await simulator.stop();
  }
});

Deno.test("health reports the database, the archive and the volume apart", async () => {
  const volume = await Deno.makeTempDir({ prefix: "cartd-" });
  // Nothing listens on port 1: the archive is unreachable; a 100 % reserve leaves no room.
  const node = await startServer(cartdEnv(volume, "http://arch:S3cretPW@127.0.0.1:1/", {
    CARTD_LOG: "warn",
    CARTD_VOLUME_RESERVE: "100%",
  }));
  try {
    const response = await fetch(`${node.url}-/health`);
    const health = await response.json();
    assertEquals(response.status, 200, "degraded, not down: ready carts can still be fetched");
    assertEquals(health.status, "degraded");
    assertEquals(health.database, { status: "ok" });
    assertEquals(health.archive.status, "unreachable");
    assertEquals(health.archive.url, "http://127.0.0.1:1/", "never its credentials");
    assert(health.archive.lastError.message.includes("cannot reach archive"));
    assert(!JSON.stringify(health).includes("S3cretPW"));
    assertEquals(health.volume.status, "low");
    assert(health.volume.freeBytes <= health.volume.reserveBytes);
    assert(!node.log().includes("S3cretPW"), "nor in the log");
  } finally {
    node.child.kill("SIGTERM");
    await node.exited;
  }
});

Deno.test("a volume lost under a running server is reported, never made again empty", async () => {
  const archive = await makeArchive([{ id: "a", size: 1000 }]);
  const dir = await Deno.makeTempDir({ prefix: "cartd-" });
  const volume = join(dir, "volume");
  const node = await startServer(cartdEnv(volume, `file://${archive.dir}`, {
    CARTD_LOG: "warn",
    PEEWEE_URL: join(dir, "cartd.sqlite3"),
  }));
  try {
    const created = await fetch(`${node.url}kept`, {
      method: "POST",
      headers: json,
      body: JSON.stringify(archive.request),
    });
    await created.body?.cancel();
    await waitWhileStaging(`${node.url}kept`, 50);
    await Deno.remove(volume, { recursive: true });

    const health = await fetch(`${node.url}-/health`);
    assertEquals(health.status, 503);
    assertEquals((await health.json()).volume.status, "unavailable");
    assertEquals(value(await scrape(node.url), "cartd_site_up"), 0);
    const download = await fetch(`${node.url}kept`);
    assertEquals(download.status, 500, "said before a byte, not a 200 that breaks off");
    assert((await download.json()).message.includes("missing from the volume"));
    assert(!(await Deno.stat(volume).then(() => true, () => false)), "not made again");
  } finally {
    node.child.kill("SIGTERM");
    await node.exited;
  }
});
