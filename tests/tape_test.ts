/** A cart of files on tape, through the CLI and the archive simulator, to a tar users can read. */
import { sleep } from "../src/time.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { join } from "node:path";
import { startArchiveSimulator } from "../fixtures/archive_server.ts";
import { makeArchive } from "./support/archive.ts";
import { stageCart, withSimulator } from "./support/cartd.ts";
import { cartdEnv, runCli } from "./support/cli.ts";
import { extractWithGnuTar, listWithPython } from "./support/tar.ts";

Deno.test("a cart on tape is staged, pulled, verified and bundled into a faithful tar", async () => {
  const archive = await makeArchive([
    { id: "run1/a.dat", path: "/a.dat", size: 200_000, hashtype: "sha1" },
    { id: "run1/deep/b.dat", path: "x/y/b.dat", size: 3_000_000, hashtype: "sha256" },
    { id: "c.txt", path: "x/c.txt", size: 17, hashtype: "md5" },
    { id: "empty", path: "empty.bin", size: 0, hashtype: "sha1" },
  ]);
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    mode: "tape",
    tapeDelayMs: 400,
  });
  const volume = await Deno.makeTempDir();
  const work = await Deno.makeTempDir();
  const env = cartdEnv(volume, simulator.url);
  try {
    const requestFile = join(work, "request.json");
    await Deno.writeTextFile(requestFile, JSON.stringify(archive.request));
    const created = await runCli(["create", "tape-cart", requestFile], { env });
    assertEquals(created.code, 0, created.stderr);
    assert(created.stdout.startsWith("tape-cart: staging"), created.stdout);

    const early = await runCli(["get", "tape-cart", "-o", join(work, "early.tar")], { env });
    assertEquals(early.code, 4, "get refuses while the cart is not ready");
    assert(early.stderr.includes("not ready"), early.stderr);

    const bundled = await runCli(["bundle", "tape-cart"], { env });
    assertEquals(bundled.code, 0, bundled.stderr);
    assert(bundled.stdout.includes("tape-cart: ready, 4/4 files ready"), bundled.stdout);

    for (const f of archive.files) {
      assertEquals(simulator.count("stage", f.id), 1, `one stage request for ${f.id}`);
      assertEquals(simulator.count("pull", f.id), 1, `one pull for ${f.id}`);
    }

    const status = JSON.parse((await runCli(["status", "tape-cart", "--json"], { env })).stdout);
    assertEquals(status.status, "ready");
    assertEquals(
      [status.progress.filesReady, status.progress.filesTotal, status.progress.filesFailed],
      [4, 4, 0],
    );
    assertEquals(status.progress.bytesDone, status.progress.bytesTotal);
    assertEquals(status.files.length, 4);
    assert(status.files.every((f: { verified: boolean }) => f.verified));

    const tar = join(work, "cart.tar");
    const got = await runCli(["get", "tape-cart", "-o", tar, "--filename", "results.tar"], { env });
    assertEquals(got.code, 0, got.stderr);

    const out = await extractWithGnuTar(tar);
    for (const f of archive.files) {
      const path = join(out, "results", f.path.replace(/^\//, ""));
      assertEquals(await Deno.readFile(path), f.data, `${f.path} is byte-identical`);
      const info = await Deno.stat(path);
      assertEquals(
        Math.floor(info.mtime!.getTime() / 1000),
        f.mtime,
        `${f.path} keeps the archive's mtime`,
      );
    }

    const members = await listWithPython(await Deno.readFile(tar));
    assertEquals(
      members.map((m) => m.name),
      [
        "results",
        "results/a.dat",
        "results/empty.bin",
        "results/x",
        "results/x/c.txt",
        "results/x/y",
        "results/x/y/b.dat",
      ],
    );
  } finally {
    await simulator.stop();
  }
});

Deno.test("the default download name is data_YYYY_MM_DD_HH_MM_SS.tar of when the cart became ready", async () => {
  const archive = await makeArchive([{ id: "one", size: 10 }]);
  const volume = await Deno.makeTempDir();
  const env = cartdEnv(volume, `file://${archive.dir}`);
  const created = await runCli(["create", "c1", "-", "--wait"], {
    env,
    stdin: JSON.stringify(archive.request),
  });
  assertEquals(created.code, 0, created.stderr);
  const work = await Deno.makeTempDir();
  const got = await runCli(["get", "c1"], { env, cwd: work });
  assertEquals(got.code, 0, got.stderr);
  const names = [...Deno.readDirSync(work)].map((e) => e.name);
  assertEquals(names.length, 1);
  assert(/^data_\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.tar$/.test(names[0]), names[0]);
  // Taken from when the cart became ready: a second later, the same name.
  await sleep(1100);
  const later = await Deno.makeTempDir();
  assertEquals((await runCli(["get", "c1"], { env, cwd: later })).code, 0);
  assertEquals([...Deno.readDirSync(later)].map((e) => e.name), names);
  const members = await listWithPython(await Deno.readFile(join(work, names[0])));
  assertEquals(members.map((m) => m.name), [
    names[0].replace(/\.tar$/, ""),
    `${names[0].replace(/\.tar$/, "")}/one`,
  ]);
});

Deno.test("a file on tape for 5 s is polled a handful of times, not hundreds", async () => {
  const options = { mode: "tape" as const, tapeDelayMs: 5000 };
  const env = { CARTD_POLL_INTERVAL: "1s", CARTD_POLL_MAX_INTERVAL: "60s" };
  await withSimulator(
    [{ id: "t", size: 1000 }],
    options,
    env,
    async ({ archive, simulator, cartd }) => {
      const started = Date.now();
      const { cart, done } = await stageCart(cartd, "tape", archive.request);
      assertEquals(done?.status, "ready");
      const polls = simulator.count("status", "t");
      assert(polls >= 2 && polls <= 8, `polled ${polls} times`);
      // Polls land at about 0, 1, 2, 5 and 11 s: the backoff may overshoot, but boundedly.
      assert(Date.now() - started < 20_000, "and still noticed soon after it reached disk");
      assertEquals(simulator.count("stage", "t"), 1);
      const [file] = await cartd.service.fileReports(cart);
      assertEquals(file.polls, polls);
    },
  );
});

Deno.test("a stage request the archive lost (its recall queue restarted) is sent again while the file stays on tape", async () => {
  const options = { mode: "tape" as const, tapeDelayMs: 200 };
  const env = { CARTD_POLL_INTERVAL: "20ms", CARTD_POLL_MAX_INTERVAL: "50ms" };
  await withSimulator(
    [{ id: "lost", size: 1000 }],
    options,
    env,
    async ({ archive, simulator, cartd }) => {
      const { parseCartRequest } = await import("../src/cart/request.ts");
      await cartd.service.create("lost", parseCartRequest(JSON.stringify(archive.request)));
      const stop = new AbortController();
      const working = cartd.worker().run(stop.signal);
      try {
        while (simulator.count("stage", "lost") === 0) await sleep(5);
        simulator.forgetStages(); // the archive restarts: its queue of recalls is gone
        const deadline = Date.now() + 15_000;
        while ((await cartd.service.report("lost")).status === "staging") {
          if (Date.now() > deadline) throw new Error("never staged again");
          await sleep(20);
        }
      } finally {
        stop.abort();
        await working;
      }
      assertEquals((await cartd.service.report("lost")).status, "ready");
      assert(simulator.count("stage", "lost") >= 2, "the stage request went again");
      assertEquals(simulator.count("pull", "lost"), 1);
    },
  );
});
