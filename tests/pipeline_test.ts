/** The per-file pipeline against the archive simulator: checksums, retries, errors, edge cases. */
import { sleep } from "../src/time.ts";
import { parseCartRequest } from "../src/cart/request.ts";
import { isKind } from "../src/errors.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import {
  listFiles,
  openTestCartd,
  stageCart,
  type TestCartd,
  withSimulator,
} from "./support/cartd.ts";
import { listWithPython } from "./support/tar.ts";
import { testOnEngines } from "./support/databases.ts";

async function tarOf(cartd: TestCartd, uid: string) {
  const tar = await cartd.service.download(uid, "data");
  return new Uint8Array(await new Response(await tar.open()).arrayBuffer());
}

testOnEngines(
  "a checksum mismatch ends in error with a clear message and the bad file is never in a tar",
  async () => {
    await withSimulator(
      [{ id: "good", size: 5000 }, { id: "bad", size: 7000 }],
      {},
      {},
      async ({ archive, simulator, cartd }) => {
        archive.request.fileids[1].hashsum = "0".repeat(40);
        const { cart, done } = await stageCart(cartd, "c", archive.request);
        assertEquals(done?.status, "error");
        assertMatch(
          done!.message,
          /^Failed to pull file\(bad: File hash does not match provided hash/,
        );
        assertMatch(done!.message, /expected 0{40}, got [0-9a-f]{40}/);
        assertEquals(
          simulator.count("pull", "bad"),
          2,
          "a mismatch is pulled once more, then given up",
        );

        const err = await assertRejects(() => cartd.service.download("c", "data"));
        assert(isKind(err, "cartFailed"), String(err));
        const files = await listFiles(cartd.volume.cartDir(cart.id));
        assert(
          !files.some((f) => f.endsWith("bad") || f.endsWith(".part")),
          `no bad or partial file: ${files}`,
        );

        const bad = (await cartd.service.fileReports(cart)).find((f) => f.id === "bad")!;
        assertEquals([bad.state, bad.verified, bad.attempts], ["error", false, 2]);
      },
    );
  },
);

testOnEngines(
  "a body corrupted once is pulled again and the cart ends ready and correct",
  async () => {
    const faults = [{ op: "pull" as const, kind: "corrupt" as const, times: 1 }];
    await withSimulator(
      [{ id: "f", size: 100_000 }],
      { faults },
      {},
      async ({ archive, simulator, cartd }) => {
        assertEquals((await stageCart(cartd, "c", archive.request)).done?.status, "ready");
        assertEquals(simulator.count("pull", "f"), 2);
        const members = await listWithPython(await tarOf(cartd, "c"));
        assertEquals(members.map((m) => [m.name, m.size]), [["data", 0], ["data/f", 100_000]]);
      },
    );
  },
);

testOnEngines(
  "a body cut short and then one corrupted: the mismatch is still pulled once more",
  async () => {
    const faults = [
      { op: "pull" as const, kind: "truncate" as const, times: 1 },
      { op: "pull" as const, kind: "corrupt" as const, times: 1 },
    ];
    await withSimulator(
      [{ id: "f", size: 100_000 }],
      { faults },
      {},
      async ({ archive, simulator, cartd }) => {
        assertEquals((await stageCart(cartd, "c", archive.request)).done?.status, "ready");
        assertEquals(simulator.count("pull", "f"), 3);
      },
    );
  },
);

testOnEngines(
  "5xx, truncated and dropped bodies are retried with backoff and recover",
  async () => {
    const files = ["a", "b", "c", "d"].map((id) => ({ id, size: 50_000 }));
    const faults = [
      { op: "stage" as const, kind: "500" as const, id: "a", times: 2 },
      { op: "status" as const, kind: "500" as const, id: "b", times: 2 },
      { op: "pull" as const, kind: "truncate" as const, id: "c", times: 1 },
      { op: "pull" as const, kind: "drop" as const, id: "d", times: 2 },
    ];
    await withSimulator(files, { faults }, {}, async ({ archive, simulator, cartd }) => {
      const { done } = await stageCart(cartd, "c", archive.request);
      assertEquals(done?.status, "ready", done?.message);
      assertEquals(simulator.count("stage", "a"), 3);
      assertEquals(simulator.count("status", "b"), 3);
      assertEquals(simulator.count("pull", "c"), 2);
      assertEquals(simulator.count("pull", "d"), 3);
    });
  },
);

testOnEngines("a body that stalls is cut after the archive timeout and pulled again", async () => {
  const faults = [{ op: "pull" as const, kind: "stall" as const, times: 1 }];
  const env = { CARTD_ARCHIVE_TIMEOUT: "500ms" };
  await withSimulator(
    [{ id: "s", size: 300_000 }],
    { faults },
    env,
    async ({ archive, simulator, cartd }) => {
      const { cart, done } = await stageCart(cartd, "c", archive.request);
      assertEquals(done?.status, "ready", done?.message);
      assertEquals(simulator.count("pull", "s"), 2);
      const [file] = await cartd.service.fileReports(cart);
      assertEquals([file.attempts, file.verified], [2, true]);
    },
  );
});

testOnEngines(
  "a status with a size that is not a number is a clear error, not a stuck cart",
  async () => {
    const faults = [{
      op: "status" as const,
      kind: "bad-header" as const,
      header: "X-Content-Length",
    }];
    await withSimulator(
      [{ id: "a", size: 10 }],
      { faults },
      { CARTD_RETRY_LIMIT: "2" },
      async ({ archive, cartd }) => {
        const { done } = await stageCart(cartd, "c", archive.request);
        assertEquals(done?.status, "error");
        assertMatch(
          done!.message,
          /X-Content-Length "garbage" is not a byte count \(gave up after 2 tries\)/,
        );
      },
    );
  },
);

testOnEngines(
  "a file that keeps failing while the archive answers others ends in error after retry_limit, without the archive's traceback",
  async () => {
    const faults = [{ op: "pull" as const, kind: "500" as const, id: "a" }];
    await withSimulator(
      [{ id: "a", size: 10 }, { id: "b", size: 10 }],
      { faults },
      { CARTD_RETRY_LIMIT: "3" },
      async ({ archive, simulator, cartd }) => {
        const started = Date.now();
        const { done } = await stageCart(cartd, "c", archive.request);
        assertEquals(done?.status, "error");
        // The first failure may come before b's pull shows the archive answers: it then counts as
        // an outage, not as one of a's tries.
        const pulls = simulator.count("pull", "a");
        assert(pulls >= 3 && pulls <= 4, `bounded by retry_limit: ${pulls} pulls`);
        assert(done!.message.includes(simulator.url), done!.message);
        assertMatch(
          done!.message,
          /500 Internal Server Error to pull file a: simulated pull failure \(gave up after 3 tries\)/,
        );
        assert(!done!.message.includes("Traceback"), done!.message);
        assert(Date.now() - started < 10_000, "the short budget, not archive_outage_wait");
      },
    );
  },
);

testOnEngines(
  "a 503 for one file while the archive serves others is that file's failure, not an outage",
  async () => {
    const faults = [{ op: "pull" as const, kind: "503" as const, id: "a" }];
    await withSimulator(
      [{ id: "a", size: 10 }, { id: "b", size: 10 }, { id: "c", size: 10 }],
      { faults },
      { CARTD_RETRY_LIMIT: "3" },
      async ({ archive, simulator, cartd }) => {
        const started = Date.now();
        const { done } = await stageCart(cartd, "c", archive.request);
        assertEquals(done?.status, "error");
        assertMatch(
          done!.message,
          /503 Service Unavailable to pull file a.* \(gave up after 3 tries\)/,
        );
        assert(simulator.count("pull", "a") <= 4);
        assert(Date.now() - started < 10_000, "the short budget, not archive_outage_wait");
      },
    );
  },
);

testOnEngines(
  "a file missing from the archive (500, No such file) keeps the short budget and says why in one line",
  async () => {
    await withSimulator(
      [{ id: "present", size: 10 }],
      {},
      { CARTD_RETRY_LIMIT: "2" },
      async ({ archive, simulator, cartd }) => {
        const absent = { id: "absent", path: "absent", hashtype: "md5", hashsum: "" };
        const { done } = await stageCart(cartd, "c", { fileids: [absent] });
        assertEquals(done?.status, "error");
        assertEquals(simulator.count("stage", "absent"), 2, "retry_limit tries");
        assertMatch(
          done!.message,
          /^Failed to pull file\(absent: archive .* answered 500 Internal Server Error to stage file absent: Can't open posix file with error: \[Errno 2\] No such file or directory: '…' \(gave up after 2 tries\)\)$/,
        );
        assert(!done!.message.includes(archive.dir), "no archive host path");
      },
    );
  },
);

testOnEngines(
  "a file the archive does not have is a clear per-file error, not a checksum failure",
  async () => {
    const faults = [{ op: "stage" as const, kind: "404" as const, id: "absent" }];
    await withSimulator(
      [{ id: "present", size: 10 }],
      { faults },
      {},
      async ({ archive, simulator, cartd }) => {
        const absent = { id: "absent", path: "absent", hashtype: "md5", hashsum: "" };
        const { done } = await stageCart(cartd, "c", {
          fileids: [...archive.request.fileids, absent],
        });
        assertEquals(done?.status, "error");
        assertMatch(done!.message, /has no file absent \(404 on stage\)/);
        assertEquals(simulator.count("pull", "absent"), 0);
      },
    );
  },
);

testOnEngines(
  "status headers: HTTP-date Last-Modified and missing informational headers are accepted",
  async () => {
    const faults = [
      { op: "status" as const, kind: "http-date" as const, id: "a" },
      {
        op: "status" as const,
        kind: "missing-header" as const,
        id: "b",
        header: "X-Pacifica-Messsage",
      },
    ];
    const files = [{ id: "a", size: 10, mtime: 1_500_000_000 }, { id: "b", size: 20 }];
    await withSimulator(files, { faults }, {}, async ({ archive, cartd }) => {
      const { cart, done } = await stageCart(cartd, "c", archive.request);
      assertEquals(done?.status, "ready");
      assertEquals(Number((await cartd.store.carts.files(cart.id))[0].mtime), 1_500_000_000);
    });
  },
);

testOnEngines(
  "a status answer without the storage media header is an error after bounded retries",
  async () => {
    const faults = [{ op: "status" as const, kind: "missing-header" as const }];
    await withSimulator(
      [{ id: "a", size: 10 }],
      { faults },
      { CARTD_RETRY_LIMIT: "2" },
      async ({ archive, cartd }) => {
        const { done } = await stageCart(cartd, "c", archive.request);
        assertEquals(done?.status, "error");
        assertMatch(done!.message, /no X-Pacifica-File-Storage-Media header/);
      },
    );
  },
);

testOnEngines(
  "carts take turns: a small cart created after a big one is not stuck behind it",
  async () => {
    const archive = await makeArchive([{ id: "x", size: 1000 }]);
    const [file] = archive.request.fileids;
    const many = (n: number) => ({
      fileids: Array.from({ length: n }, (_, i) => ({ ...file, path: `f${i}` })),
    });
    const cartd = await openTestCartd(`file://${archive.dir}`, { CARTD_WORKERS: "1" });
    const stop = new AbortController();
    try {
      const { parseCartRequest } = await import("../src/cart/request.ts");
      const big = await cartd.service.create("big", parseCartRequest(JSON.stringify(many(300))));
      await cartd.service.create("small", parseCartRequest(JSON.stringify(many(3))));
      const working = cartd.worker().run(stop.signal);
      let small;
      while ((small = await cartd.store.carts.live("small"))?.status !== "ready") {
        await sleep(10);
      }
      // Counted at the moment the small cart was ready (files from the cache go quickly, and the
      // big cart goes on while this test looks).
      const readyFirst = (await cartd.store.carts.files(big.cart.id)).filter((f) =>
        f.state === "ready" && Number(f.updated_at) <= Number(small!.ready_at)
      ).length;
      assert(readyFirst < 30, `the big cart had ${readyFirst} files ready first`);
      stop.abort();
      await working;
    } finally {
      stop.abort();
      await cartd.close();
    }
  },
);

testOnEngines("an empty fileids list gives a ready, empty cart", async () => {
  const cartd = await openTestCartd("http://127.0.0.1:9/");
  try {
    const { cart } = await stageCart(cartd, "empty", { fileids: [] });
    assertEquals(cart.status, "ready");
    assertEquals((await listWithPython(await tarOf(cartd, "empty"))).map((m) => m.name), ["data"]);
  } finally {
    await cartd.close();
  }
});

testOnEngines("an empty hashsum is accepted and the file is marked unverified", async () => {
  const archive = await makeArchive([{ id: "a", size: 10 }]);
  archive.request.fileids[0].hashsum = "";
  const cartd = await openTestCartd(`file://${archive.dir}`);
  try {
    const { cart, done } = await stageCart(cartd, "c", archive.request);
    assertEquals(done?.status, "ready");
    const [file] = await cartd.service.fileReports(cart);
    assertEquals([file.state, file.verified], ["ready", false]);
  } finally {
    await cartd.close();
  }
});

testOnEngines(
  "creating a uid again: the same request changes nothing, another replaces the cart and frees its files",
  async () => {
    const archive = await makeArchive([{ id: "a", size: 10 }, { id: "b", size: 10 }]);
    const cartd = await openTestCartd(`file://${archive.dir}`);
    try {
      const first = await stageCart(cartd, "u", archive.request);
      const again = await stageCart(cartd, "u", archive.request);
      assertEquals(again.cart.id, first.cart.id);
      assertEquals(again.cart.status, "ready");

      const replaced = await stageCart(cartd, "u", {
        fileids: archive.request.fileids.slice(0, 1),
      });
      assert(replaced.cart.id !== first.cart.id);
      assertEquals(
        await Deno.stat(cartd.volume.cartDir(first.cart.id)).catch(() => "gone"),
        "gone",
      );
      assertEquals((await cartd.service.report("u")).progress.filesTotal, 1);
    } finally {
      await cartd.close();
    }
  },
);

testOnEngines(
  "the file:// archive refuses ids that lead outside its directory, symlinks included",
  async () => {
    const archive = await makeArchive([{ id: "inside", size: 10 }]);
    const secret = await Deno.makeTempFile();
    await Deno.writeTextFile(secret, "secret");
    await Deno.symlink(secret, `${archive.dir}/link`);
    const refused = [["../etc/passwd", /is not a path inside/], ["link", /leads outside/]] as const;
    const cartd = await openTestCartd(`file://${archive.dir}`);
    try {
      // A cart each: the first failed file ends its cart, which may leave others untried.
      for (const [id, reason] of refused) {
        const request = { fileids: [{ id, path: "p", hashtype: "md5", hashsum: "" }] };
        const { cart, done } = await stageCart(cartd, `c-${id.length}`, request);
        assertEquals(done?.status, "error");
        const [file] = await cartd.service.fileReports(cart);
        assertEquals(file.state, "error");
        assertMatch(file.error, reason);
      }
    } finally {
      await cartd.close();
    }
  },
);

testOnEngines(
  "files still under way when their cart fails are given back, not left pulling",
  async () => {
    const faults = [
      { op: "pull" as const, kind: "404" as const, id: "bad" },
      { op: "pull" as const, kind: "slow" as const, bytesPerSecond: 200_000 },
    ];
    const files = [{ id: "bad", size: 10 }, { id: "s1", size: 400_000 }, {
      id: "s2",
      size: 400_000,
    }];
    await withSimulator(files, { faults }, {}, async ({ archive, simulator, cartd }) => {
      const { cart } = await cartd.service.create(
        "c",
        parseCartRequest(JSON.stringify(archive.request)),
      );
      const stop = new AbortController();
      const working = cartd.worker().run(stop.signal);
      try {
        while ((await cartd.service.report("c")).status === "staging") await sleep(50);
        // The workers on s1 and s2 learn at their next renewal (within a third of the 2 s lease).
        await sleep(1500);
        const states = (await cartd.service.fileReports(cart)).map((f) => f.state);
        assertEquals(states.filter((s) => s === "pulling"), [], states.join());
        assert(simulator.activePulls === 0, "their pulls were cut");
      } finally {
        stop.abort();
        await working;
      }
    });
  },
);
