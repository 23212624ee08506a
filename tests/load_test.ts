/**
 * Load against `cartd serve`: 200 carts created at once, 20 clients racing create and delete of
 * one uid, 100 HEAD pollers, and a cart of 100 000 files. Every answer must be one of the
 * contract's, and the end state consistent. The figures are printed for the record.
 */
import { sleep } from "../src/time.ts";
import { join } from "node:path";
import { startArchiveSimulator } from "../fixtures/archive_server.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { openTestCartd } from "./support/cartd.ts";
import { cartdEnv } from "./support/cli.ts";
import { startServer, waitWhileStaging } from "./support/server.ts";

const json = { "content-type": "application/json" };

Deno.test("200 concurrent creates, 20 racing create/delete clients and 100 pollers: contract answers only, consistent end", async () => {
  const archive = await makeArchive(
    Array.from({ length: 6 }, (_, i) => ({ id: `f${i}`, size: 2000 + i })),
  );
  const volume = await Deno.makeTempDir();
  const server = await startServer(cartdEnv(volume, `file://${archive.dir}`));
  const answers = new Map<string, number>();
  const unexpected: string[] = [];
  const record = async (what: string, response: Response, allowed: number[]) => {
    await response.body?.cancel();
    const key = `${what} ${response.status}`;
    answers.set(key, (answers.get(key) ?? 0) + 1);
    if (!allowed.includes(response.status)) unexpected.push(key);
  };
  const requestOf = (n: number) => ({ fileids: archive.request.fileids.slice(0, 1 + (n % 6)) });
  const started = Date.now();
  try {
    let polling = true;
    const uids = Array.from({ length: 200 }, (_, i) => `load-${i}`);
    const pollers = Array.from({ length: 100 }, async (_, p) => {
      for (let i = 0; polling; i++) {
        const uid = i % 5 === 0 ? "race" : uids[(p * 7 + i) % uids.length];
        const head = await fetch(`${server.url}${uid}`, { method: "HEAD" }).catch((err) => {
          unexpected.push(`HEAD failed: ${err.cause ?? err}`);
          return undefined;
        });
        if (!head) continue;
        const ok = head.headers.has("x-pacifica-status") && head.headers.has("x-pacifica-message");
        if (!ok) unexpected.push(`HEAD without both Pacifica headers`);
        await record("HEAD", head, [204, 404]);
        await sleep(50);
      }
    });
    const creates = uids.map(async (uid, i) =>
      record(
        "POST",
        await fetch(`${server.url}${uid}`, {
          method: "POST",
          headers: json,
          body: JSON.stringify(requestOf(i)),
        }),
        [201],
      )
    );
    const racers = Array.from({ length: 20 }, async (_, c) => {
      for (let i = 0; i < 10; i++) {
        if ((c + i) % 2 === 0) {
          const body = JSON.stringify(requestOf(c + i));
          await record(
            "race POST",
            await fetch(`${server.url}race`, { method: "POST", headers: json, body }),
            [201],
          );
        } else {
          await record("race DELETE", await fetch(`${server.url}race`, { method: "DELETE" }), [
            200,
            404,
          ]);
        }
      }
    });
    await Promise.all([...creates, ...racers]);
    for (const uid of uids) {
      const head = await waitWhileStaging(`${server.url}${uid}`, 100, 120_000);
      assertEquals(head.headers.get("x-pacifica-status"), "ready", uid);
    }
    polling = false;
    await Promise.all(pollers);
    await waitWhileStaging(`${server.url}race`, 100, 60_000).catch(() => undefined);
    assertEquals(
      unexpected,
      [],
      `every answer is one the contract allows; server log: ${server.log().slice(-3000)}`,
    );

    // A few carts downloaded whole.
    for (const uid of ["load-0", "load-5", "load-199"]) {
      const got = await fetch(`${server.url}${uid}?filename=x`);
      assertEquals(got.status, 200);
      assertEquals((await got.arrayBuffer()).byteLength, Number(got.headers.get("content-length")));
    }

    // The end state, read from the database beside the server.
    const audit = await openTestCartd("file:///nowhere", { VOLUME_PATH: volume });
    const store = audit.store;
    try {
      const carts = await store.carts.all();
      const live = carts.filter((c) => c.deleted_at === null && c.status !== "creating");
      const perUid = new Map<string, number>();
      for (const c of live) perUid.set(c.uid, (perUid.get(c.uid) ?? 0) + 1);
      assert([...perUid.values()].every((n) => n === 1), "at most one live cart per uid");
      assert(live.length === 200 || live.length === 201, `${live.length} live carts`);
      // No orphaned files: every cart folder belongs to a cart whose files are still wanted.
      await sleep(500);
      const after = await store.carts.all();
      const kept = new Set(after.filter((c) => c.removed_at === null).map((c) => Number(c.id)));
      const folders = [...Deno.readDirSync(join(volume, "carts"))].map((e) => Number(e.name));
      const orphans = folders.filter((id) => !kept.has(id));
      assertEquals(orphans, [], "no cart folder without its cart");
      const deletedWithFiles = after.filter((c) => c.deleted_at !== null && c.removed_at === null);
      assertEquals(deletedWithFiles, [], "every deleted cart's files are gone");
    } finally {
      await audit.close();
    }
    const total = [...answers.values()].reduce((a, b) => a + b, 0);
    console.log(
      `load: ${total} requests in ${((Date.now() - started) / 1000).toFixed(1)} s: ${
        JSON.stringify(Object.fromEntries(answers))
      }`,
    );
  } finally {
    server.child.kill("SIGTERM");
    assertEquals((await server.exited).code, 0, server.log().slice(-3000));
  }
});

Deno.test("a cart of 100 000 files is accepted without flooding the archive or stalling other requests", async () => {
  const archive = await makeArchive([{ id: "small", size: 100 }]);
  // Tape mode with a long recall: the big cart's files stay on tape for the whole test.
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    mode: "tape",
    tapeDelayMs: 600_000,
  });
  const volume = await Deno.makeTempDir();
  const server = await startServer(cartdEnv(volume, simulator.url, { CARTD_POLL_INTERVAL: "10s" }));
  try {
    await (await fetch(`${server.url}other`, {
      method: "POST",
      headers: json,
      body: JSON.stringify(archive.request),
    })).body?.cancel();
    const fileids = Array.from(
      { length: 100_000 },
      (_, i) => ({
        id: "small",
        path: `run/${i % 100}/file-${i}.dat`,
        hashtype: "sha1",
        hashsum: "",
      }),
    );
    const body = JSON.stringify({ fileids });

    // Poll another cart's status while the big one is created.
    let creating = true;
    const latencies: number[] = [];
    const poller = (async () => {
      while (creating) {
        const t = performance.now();
        const head = await fetch(`${server.url}other`, { method: "HEAD" });
        await head.body?.cancel();
        latencies.push(performance.now() - t);
        await sleep(20);
      }
    })();
    const t0 = performance.now();
    const created = await fetch(`${server.url}big`, { method: "POST", headers: json, body });
    const createMs = performance.now() - t0;
    creating = false;
    await poller;
    assertEquals(created.status, 201, await created.text());

    const t1 = performance.now();
    const head = await fetch(`${server.url}big`, { method: "HEAD" });
    const headMs = performance.now() - t1;
    assertEquals(head.status, 204);
    assertEquals(head.headers.get("x-cartd-files"), "0/100000");
    const t2 = performance.now();
    const detail = await (await fetch(`${server.url}-/carts/big`)).json();
    const detailMs = performance.now() - t2;
    assertEquals(detail.files.length, 100_000);

    await sleep(1000);
    const worst = Math.max(...latencies);
    console.log(
      `100 000-file cart: ${(body.length / 1e6).toFixed(1)} MB request accepted in ${
        createMs.toFixed(0)
      } ms; ` +
        `other HEADs meanwhile: ${latencies.length}, worst ${worst.toFixed(0)} ms; HEAD ${
          headMs.toFixed(0)
        } ms; ` +
        `full status ${
          detailMs.toFixed(0)
        } ms; archive requests at most ${simulator.maxConcurrentRequests} at once`,
    );
    assert(headMs < 1000, `HEAD took ${headMs} ms`);
    assert(worst < 2000, `another cart's HEAD waited ${worst} ms`);
    assert(
      simulator.maxConcurrentRequests <= 4,
      "the archive sees at most `workers` requests at once",
    );
    const deleted = await fetch(`${server.url}big`, { method: "DELETE" });
    assertEquals(deleted.status, 200);
  } finally {
    server.child.kill("SIGTERM");
    await server.exited;
    await simulator.stop();
  }
});
