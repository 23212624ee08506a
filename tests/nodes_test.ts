/**
 * Several `cartd serve` nodes on one PostgreSQL database and one volume, with no broker and no
 * leader: any node answers for any cart, a node that dies holds nothing past its lease, and the
 * nodes ride out a restart of PostgreSQL itself.
 */
import { join } from "node:path";
import { startArchiveSimulator } from "../fixtures/archive_server.ts";
import { sleep } from "../src/time.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { openTestCartd } from "./support/cartd.ts";
import { cartdEnv } from "./support/cli.ts";
import { testPostgres } from "./support/postgres.ts";
import { type RunningServer, startServer, waitWhileStaging } from "./support/server.ts";
import { extractWithPython } from "./support/tar.ts";

const json = { "content-type": "application/json" };

/** Bytes under the volume's cart folders (verified files and pulls in progress). */
async function volumeBytes(volume: string): Promise<number> {
  let total = 0;
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      if (entry.isDirectory) await walk(path);
      else if (entry.isFile) total += (await Deno.stat(path).catch(() => ({ size: 0 }))).size;
    }
  };
  await walk(join(volume, "carts")).catch(() => {});
  return total;
}

Deno.test("three nodes on one PostgreSQL and one volume: any node answers for any cart, one dies, nothing is lost", async () => {
  const carts = 60;
  const perCart = 10;
  const specs = Array.from({ length: carts * perCart }, (_, i) => ({
    id: `c${Math.floor(i / perCart)}-f${i % perCart}`,
    path: `part${i % perCart}/data.bin`,
    size: 10_000 + ((i * 7919) % 40_000),
  }));
  const total = specs.reduce((n, s) => n + s.size, 0);
  const archive = await makeArchive(specs);
  const requestOf = (c: number) => ({
    fileids: archive.request.fileids.slice(c * perCart, (c + 1) * perCart),
  });
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    mode: "tape",
    tapeDelayMs: 500,
    faults: [{ op: "pull", kind: "slow", bytesPerSecond: 400_000 }],
  });
  const volume = await Deno.makeTempDir();
  // Room for every cart and about twenty pulls at once, no more: the nodes' reservations must
  // add up across nodes, or pulls would pass the limit. Carts are protected from eviction (they
  // are all asked for), so a pull that does not fit waits for space instead.
  const limit = total + 1_000_000;
  const env = cartdEnv(volume, simulator.url, {
    PEEWEE_URL: await (await testPostgres()).createDatabase(),
    CARTD_LEASE_TIME: "3s",
    CARTD_VOLUME_SIZE_LIMIT: String(limit),
    CARTD_VOLUME_RESERVE: "0",
    LRU_BUFFER_TIME: "3600",
    CARTD_WORKERS: "3",
  });
  const nodes: RunningServer[] = [];
  for (let n = 0; n < 3; n++) nodes.push(await startServer(env));
  let peak = 0;
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      peak = Math.max(peak, await volumeBytes(volume));
      await sleep(100);
    }
  })();
  const alive = [true, true, true];
  try {
    // POSTs round-robin; the dead node (2) stops taking them once killed.
    let killedAt = 0;
    for (let c = 0; c < carts; c++) {
      const node = alive[c % 3] ? c % 3 : 0;
      const created = await fetch(`${nodes[node].url}cart-${c}`, {
        method: "POST",
        body: JSON.stringify(requestOf(c)),
        headers: json,
      });
      assertEquals(created.status, 201);
      await created.body?.cancel();
      if (c === 30) {
        // Mid-way, while pulls are under way on every node.
        while (simulator.activePulls === 0) await sleep(10);
        nodes[2].child.kill("SIGKILL");
        await nodes[2].exited;
        alive[2] = false;
        killedAt = Date.now();
      }
    }
    // Each cart asked of a node other than the one that took its POST (and a live one).
    for (let c = 0; c < carts; c++) {
      const other = [(c + 1) % 3, (c + 2) % 3].find((n) => alive[n])!;
      const head = await waitWhileStaging(`${nodes[other].url}cart-${c}`, 100, 120_000);
      assertEquals(
        [head.status, head.headers.get("x-pacifica-status")],
        [204, "ready"],
        `cart-${c}`,
      );
    }
    // Byte-identical tars from every live node, with the archive's bytes; ranges from another.
    for (let c = 0; c < carts; c++) {
      const [a, b] = await Promise.all(
        [0, 1].map(async (n) =>
          new Uint8Array(await (await fetch(`${nodes[n].url}cart-${c}?filename=t`)).arrayBuffer())
        ),
      );
      assertEquals(a, b, `cart-${c} differs between nodes`);
      const range = await fetch(`${nodes[(c + 1) % 2].url}cart-${c}?filename=t`, {
        headers: { range: "bytes=1000-" },
      });
      assertEquals(range.status, 206);
      assertEquals(new Uint8Array(await range.arrayBuffer()), a.subarray(1000));
      if (c % 10 === 0) {
        const dir = await extractWithPython(a);
        for (const f of archive.files.slice(c * perCart, (c + 1) * perCart)) {
          assertEquals(await Deno.readFile(join(dir, "t", f.path)), f.data, `cart-${c} ${f.path}`);
        }
      }
    }
    // Every verified file was pulled once; only what the dead node was pulling, twice.
    const twice = [...simulator.pullStarts.entries()].filter(([, starts]) => starts.length > 1);
    for (const [id, starts] of twice) {
      assertEquals(starts.length, 2, `${id} pulled ${starts.length} times`);
      assert(starts[0] < killedAt, `${id}'s first pull was the dead node's`);
    }
    assert(twice.length <= 3, `the dead node held at most its 3 workers' files: ${twice.length}`);
    assertEquals(simulator.pullStarts.size, carts * perCart, "every file pulled");
    console.log(
      `3 nodes, ${carts} carts × ${perCart} files (${(total / 1e6).toFixed(1)} MB): ` +
        `${twice.length} file(s) pulled twice after the kill; peak volume ${
          (peak / 1e6).toFixed(1)
        } MB ` +
        `of a ${(limit / 1e6).toFixed(1)} MB limit`,
    );
  } finally {
    watching = false;
    await watcher;
    for (const [n, node] of nodes.entries()) {
      if (!alive[n]) continue;
      node.child.kill("SIGTERM");
      assertEquals((await node.exited).code, 0, node.log());
    }
    await simulator.stop();
  }
  assert(peak <= limit, `the volume held ${peak} bytes, over its ${limit}-byte limit`);
  const audit = await openTestCartd("file:///nowhere", {
    VOLUME_PATH: volume,
    PEEWEE_URL: env.PEEWEE_URL,
  });
  try {
    const files = await audit.store.work.all();
    assert(files.every((f) => f.state === "ready"), "every file ready");
    assertEquals(
      files.filter((f) => f.owner !== null || Number(f.reserved) > 0),
      [],
      "no lease or reservation left",
    );
  } finally {
    await audit.close();
  }
});

Deno.test("PostgreSQL restarted under load: nodes answer 503 meanwhile, recover on their own, lose nothing", async () => {
  const postgres = await testPostgres();
  const archive = await makeArchive(
    Array.from({ length: 40 }, (_, i) => ({ id: `f${i}`, size: 20_000 })),
  );
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    faults: [{ op: "pull", kind: "slow", bytesPerSecond: 100_000 }],
  });
  const env = cartdEnv(await Deno.makeTempDir(), simulator.url, {
    PEEWEE_URL: await postgres.createDatabase(),
    CARTD_DB_BUSY_TIMEOUT: "2s",
  });
  const nodes = [await startServer(env), await startServer(env)];
  const accepted = new Set<string>();
  const answers = new Map<number, number>();
  let polling = true;
  try {
    const post = async (uid: string, node: RunningServer) => {
      const files = archive.request.fileids.slice(accepted.size % 36, accepted.size % 36 + 4);
      const response = await fetch(`${node.url}${uid}`, {
        method: "POST",
        body: JSON.stringify({ fileids: files }),
        headers: json,
      }).catch(() => undefined);
      if (response) {
        await response.body?.cancel();
        answers.set(response.status, (answers.get(response.status) ?? 0) + 1);
        if (response.status === 201) accepted.add(uid);
        else assertEquals(response.status, 503, `POST ${uid}: only 201 or 503`);
      }
    };
    const poller = (async () => {
      while (polling) {
        for (const uid of [...accepted].slice(-5)) {
          const head = await fetch(`${nodes[accepted.size % 2].url}${uid}`, { method: "HEAD" });
          answers.set(head.status, (answers.get(head.status) ?? 0) + 1);
          assert([204, 500, 503].includes(head.status), `HEAD ${uid}: ${head.status}`);
          assert(
            head.headers.get("x-pacifica-status") !== null,
            "Pacifica headers on every answer",
          );
        }
        await sleep(50);
      }
    })();
    for (let i = 0; i < 10; i++) await post(`before-${i}`, nodes[i % 2]);
    const restarting = postgres.restart({ downMs: 2000 });
    for (let i = 0; i < 20; i++) {
      await post(`during-${i}`, nodes[i % 2]);
      await sleep(100);
    }
    await restarting;
    for (let i = 0; i < 10; i++) await post(`after-${i}`, nodes[i % 2]);
    polling = false;
    await poller;
    assert((answers.get(503) ?? 0) > 0, "the outage was noticed (503s)");
    for (const uid of accepted) {
      const head = await waitWhileStaging(`${nodes[0].url}${uid}`, 100, 120_000);
      assertEquals(
        head.headers.get("x-pacifica-status"),
        "ready",
        `${uid}: ${head.headers.get("x-pacifica-message")}`,
      );
    }
    console.log(
      `PostgreSQL down 2 s under load: answers ${JSON.stringify(Object.fromEntries(answers))}; ` +
        `${accepted.size} carts accepted, all ready`,
    );
  } finally {
    polling = false;
    for (const node of nodes) {
      node.child.kill("SIGTERM");
      assertEquals((await node.exited).code, 0, node.log());
    }
    await simulator.stop();
  }
});

Deno.test("two nodes share one cache: carts of the same files POSTed to both are pulled once, and a later cart on either takes them with no archive request", async () => {
  const specs = Array.from({ length: 30 }, (_, i) => ({ id: `shared/f${i}`, size: 20_000 + i }));
  const total = specs.reduce((n, s) => n + s.size, 0);
  const archive = await makeArchive(specs);
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    mode: "tape",
    tapeDelayMs: 300,
  });
  const volume = await Deno.makeTempDir();
  // Room for the thirty files once and a little more: six carts holding them fit only if every
  // node counts a shared file once.
  const limit = Math.round(total * 1.5);
  const env = cartdEnv(volume, simulator.url, {
    PEEWEE_URL: await (await testPostgres()).createDatabase(),
    CARTD_VOLUME_SIZE_LIMIT: String(limit),
    CARTD_VOLUME_RESERVE: "0",
    LRU_BUFFER_TIME: "3600",
  });
  const nodes = [await startServer(env), await startServer(env)];
  const body = JSON.stringify(archive.request);
  try {
    const created = await Promise.all(
      Array.from(
        { length: 6 },
        (_, c) => fetch(`${nodes[c % 2].url}same-${c}`, { method: "POST", body, headers: json }),
      ),
    );
    for (const response of created) {
      assertEquals(response.status, 201);
      await response.body?.cancel();
    }
    for (let c = 0; c < 6; c++) {
      const head = await waitWhileStaging(`${nodes[(c + 1) % 2].url}same-${c}`, 100, 60_000);
      assertEquals(head.headers.get("x-pacifica-status"), "ready", `same-${c}`);
    }
    for (const spec of specs) {
      assertEquals(simulator.count("stage", spec.id), 1, `${spec.id} staged once`);
      assertEquals(simulator.count("pull", spec.id), 1, `${spec.id} pulled once`);
    }
    const tars = await Promise.all(
      [0, 5].map(async (c) =>
        new Uint8Array(await (await fetch(`${nodes[c % 2].url}same-${c}?filename=t`)).arrayBuffer())
      ),
    );
    assertEquals(tars[0], tars[1], "the same tar from each node");
    // Every cart deleted on one node: the files stay as cache, and a new cart on the other takes
    // them without asking the archive anything.
    for (let c = 0; c < 6; c++) {
      const deleted = await fetch(`${nodes[0].url}same-${c}`, { method: "DELETE" });
      await deleted.body?.cancel();
    }
    const requests = () =>
      Object.values(simulator.counts).reduce(
        (n, m) => n + [...m.values()].reduce((a, b) => a + b, 0),
        0,
      );
    const before = requests();
    const again = await fetch(`${nodes[1].url}again`, { method: "POST", body, headers: json });
    assertEquals(again.status, 201);
    await again.body?.cancel();
    const head = await waitWhileStaging(`${nodes[0].url}again`, 20, 10_000);
    assertEquals(head.headers.get("x-pacifica-status"), "ready");
    assertEquals(requests(), before, "no archive request for a cart of cached files");
    const tar = new Uint8Array(
      await (await fetch(`${nodes[1].url}again?filename=t`)).arrayBuffer(),
    );
    assertEquals(tar, tars[0], "byte-identical to the carts that pulled the files");
  } finally {
    for (const node of nodes) {
      node.child.kill("SIGTERM");
      assertEquals((await node.exited).code, 0, node.log());
    }
    await simulator.stop();
  }
});
