/**
 * The work protocol, at the store: leases and claims (fair across carts, never two owners at
 * once), reaping dead owners, reservations that must not fit, retries and settling. Real SQLite
 * files, no worker: each step is driven by hand.
 */
import { assert, assertEquals } from "../../tests/support/assert.ts";
import { engines, type TestEngine } from "../../tests/support/databases.ts";
import type { NewFile } from "./schema.ts";
import { Store } from "./store.ts";

async function openStore(engine: TestEngine): Promise<Store> {
  const store = Store.open(await engine.freshDatabase());
  await store.migrate();
  return store;
}

const files = (n: number, prefix = "f"): NewFile[] =>
  Array.from({ length: n }, (_, seq) => ({
    seq,
    archive_id: `${prefix}${seq}`,
    path: `f${seq}`,
    hash_type: "sha1",
    hash_sum: "",
  }));

async function cart(store: Store, uid: string, n: number, now = 1000, prefix = "f") {
  const { cart } = await store.carts.create(
    { uid, fingerprint: uid, bundle: false, files: files(n, prefix) },
    now,
  );
  return cart;
}

/** Every file of the carts claimed by `w`, with its size (as its status gives it) saved. */
async function claimSized(store: Store, carts: { id: number; file_count: number }[], size: number) {
  const held = [];
  for (const c of carts) {
    for (let i = 0; i < c.file_count; i++) {
      const file = await store.work.claim("w", 2000, 60_000, c.id);
      assert(await store.work.save(file!.id, "w", { size }, false, 2000));
      held.push(file!);
    }
  }
  return held;
}

for (const engine of engines) {
  Deno.test(`${engine.name}: a claimed file is leased to one owner until its lease runs out or is handed back`, async () => {
    const store = await openStore(engine);
    try {
      const c = await cart(store, "c", 1);
      const claimed = await store.work.claim("a", 2000, 1000, c.id);
      assertEquals([claimed?.owner, claimed?.lease_until], ["a", 3000]);
      assertEquals(await store.work.claim("b", 2500, 1000, c.id), undefined, "leased to a");
      assert(await store.work.renew(claimed!.id, "a", 4000));
      assertEquals(await store.work.claim("b", 3500, 1000, c.id), undefined, "renewed");
      // a stops renewing; once the lease has run out, b takes the file and a's writes are refused.
      const taken = await store.work.claim("b", 4001, 1000, c.id);
      assertEquals(taken?.owner, "b");
      assertEquals(await store.work.save(claimed!.id, "a", { polls: 9 }, false, 4002), false);
      assertEquals(await store.work.renew(claimed!.id, "a", 9000), false);
      await store.work.release("b");
      assertEquals((await store.work.claim("c", 4003, 1000, c.id))?.owner, "c", "handed back");
    } finally {
      await store.close();
    }
  });

  Deno.test(`${engine.name}: carts take turns: claims alternate between a big cart and a small one`, async () => {
    const store = await openStore(engine);
    try {
      const big = await cart(store, "big", 50);
      const small = await cart(store, "small", 2);
      const order: number[] = [];
      for (let i = 0; i < 4; i++) {
        order.push((await store.work.claim("w", 2000 + i, 60_000))!.cart_id);
      }
      assertEquals(order, [big.id, small.id, big.id, small.id]);
      assertEquals(
        await store.work.claim("w", 2010, 60_000, small.id),
        undefined,
        "small is all out",
      );
    } finally {
      await store.close();
    }
  });

  Deno.test(`${engine.name}: leases and downloads of dead owners are reaped; live owners keep theirs`, async () => {
    const store = await openStore(engine);
    try {
      const c = await cart(store, "c", 3);
      await store.work.claim("dead:1", 2000, 60_000, c.id);
      await store.work.claim("dead:1", 2000, 60_000, c.id);
      await store.work.claim("alive:2", 2000, 60_000, c.id);
      await store.space.startDownload(c.id, "dead:1", 60_000);
      const freed = await store.work.reap((owner) => owner.startsWith("dead"));
      assertEquals(freed, 2);
      const owners = (await store.work.all()).map((f) => f.owner).sort();
      assertEquals(owners, ["alive:2", null, null]);
      await store.carts.markDeleted(c.id, 3000, "deleted");
      assertEquals(
        (await store.space.removable(3000)).map((r) => r.id),
        [c.id],
        "no download holds it",
      );
    } finally {
      await store.close();
    }
  });

  Deno.test(`${engine.name}: reservations: what fits, what must not, and what a cart's promise holds`, async () => {
    const store = await openStore(engine);
    try {
      const c = await cart(store, "c", 3);
      const [a, b, d] = [
        await store.work.claim("w", 2000, 1000, c.id),
        await store.work.claim("w", 2000, 1000, c.id),
        await store.work.claim("w", 2000, 60_000, c.id),
      ];
      const free = () => 1000;
      assert((await store.space.reserve(a!, "w", 600, free, 0, 2000)).fits);
      const second = await store.space.reserve(b!, "w", 600, free, 0, 2000);
      assertEquals([second.fits, second.reserved], [false, 600], "600 + 600 exceeds 1000 free");
      assertEquals((await store.space.reserve(b!, "w", 400, free, 0, 2000)).fits, true);
      // Under a limit, what carts already hold counts too.
      const limited = await store.space.reserve(d!, "w", 1, () => 1e9, 1000, 2000);
      assertEquals([limited.fits, limited.used], [false, 1000]);
      // a's and b's leases run out, but their cart still stages: what it was promised stays
      // promised (another worker carries on with them).
      const later = await store.space.reserve(d!, "w", 900, free, 0, 3001);
      assertEquals([later.fits, later.reserved], [false, 1000]);
      // Once a is on the volume its share of the promise is counted as stored instead.
      const a2 = await store.work.claim("w", 3001, 60_000, c.id);
      assertEquals(a2?.id, a!.id);
      assert(await store.work.complete(a2!, "w", { size: 600 }, 3002));
      const [row] = await store.carts.all();
      assertEquals(row.promised_bytes, 400);
    } finally {
      await store.close();
    }
  });

  Deno.test(`${engine.name}: a cart is admitted whole: a second cart that does not fit beside it waits, then fits`, async () => {
    const store = await openStore(engine);
    try {
      const x = await cart(store, "x", 3, 1000, "x");
      const y = await cart(store, "y", 3, 1000, "y");
      const held = await claimSized(store, [x, y], 300);
      const free = () => 1000;
      const first = await store.space.reserve(held[0], "w", 300, free, 0, 2000);
      assertEquals([first.fits, first.need], [true, 900], "x's first pull admits all of x");
      const other = await store.space.reserve(held[3], "w", 300, free, 0, 2000);
      assertEquals([other.fits, other.need, other.reserved], [false, 900, 900], "y must wait");
      // x's other files were promised their room: they need only the disk.
      const promised = await store.space.reserve(held[1], "w", 300, () => 400, 0, 2000);
      assertEquals([promised.fits, promised.need], [true, 300]);
      // Under a limit the same: y fits once x's files are on the volume.
      const limited = await store.space.reserve(held[3], "w", 300, () => 1e9, 1000, 2000);
      assertEquals([limited.fits, limited.used], [false, 900]);
      for (const file of held.slice(0, 3)) {
        assert(
          await store.work.complete(file, "w", { size: 300 }, 2001, {
            key: null,
            archive_id: file.archive_id,
            hash_type: "sha1",
            hash_sum: "",
            verified: 0,
            size: 300,
            mtime: null,
            crc32: null,
          }),
        );
      }
      const after = await store.space.reserve(held[3], "w", 300, () => 1e9, 1800, 2002);
      assertEquals([after.fits, after.need, after.used], [true, 900, 900]);
    } finally {
      await store.close();
    }
  });

  Deno.test(`${engine.name}: a file two carts need is promised once: the cart that pulls it takes the other's share`, async () => {
    const store = await openStore(engine);
    try {
      const x = await cart(store, "x", 3);
      const y = await cart(store, "y", 3); // the same three files
      const held = await claimSized(store, [x, y], 300);
      const free = () => 1000;
      assertEquals((await store.space.reserve(held[0], "w", 300, free, 0, 2000)).need, 900);
      // y's files were promised to x: y is admitted needing nothing more, and its pull of f1
      // takes x's share of it.
      const pull = held.find((f) => f.cart_id === y.id && f.archive_id === "f1")!;
      const check = await store.space.reserve(pull, "w", 300, free, 0, 2000);
      assertEquals([check.fits, check.need], [true, 0]);
      const carts = await store.carts.all();
      assertEquals(carts.map((c) => Number(c.promised_bytes)), [600, 300]);
      const promised = (await store.work.all()).filter((f) => f.promised > 0);
      assertEquals(promised.length, 3, "each file promised once");
    } finally {
      await store.close();
    }
  });

  Deno.test(`${engine.name}: settling: one failed file fails the cart; a retry restarts only the failed files`, async () => {
    const store = await openStore(engine);
    try {
      const c = await cart(store, "c", 2);
      const [one, two] = [
        await store.work.claim("w", 2000, 1000, c.id),
        await store.work.claim("w", 2000, 1000, c.id),
      ];
      assert(await store.work.complete(one!, "w", { size: 10 }, 2100));
      await store.work.save(two!.id, "w", { state: "error", error: "gone" }, true, 2100);
      const failed = await store.carts.settle(c.id, 2200);
      assertEquals([failed?.status, failed?.message], ["error", "Failed to pull file(f1: gone)"]);
      assertEquals(await store.carts.retry(c.id, 2300), 1);
      assertEquals(await store.carts.retry(c.id, 2300), undefined, "no longer failed");
      const after = await store.work.all();
      assertEquals(after.map((f) => [f.state, f.error]), [["ready", ""], ["waiting", ""]]);
      const progress = await store.carts.progress(c.id);
      assertEquals([progress.filesReady, progress.filesUnverified], [1, 1]);
      const retried = await store.work.claim("w", 2400, 1000, c.id);
      assert(await store.work.complete(retried!, "w", { size: 5, verified: 1 }, 2500));
      assertEquals((await store.carts.settle(c.id, 2600))?.status, "ready");
      assertEquals((await store.carts.byId(c.id))?.bytes, 15);
    } finally {
      await store.close();
    }
  });
}

for (const engine of engines) {
  Deno.test(`${engine.name}: cart events go to the outbox with the status change, once, never for a replaced cart`, async () => {
    const store = Store.open(await engine.freshDatabase(), {
      receivers: () => ["http://a/", "http://b/"],
    });
    await store.migrate();
    try {
      const ready = await cart(store, "r", 1);
      const file = await store.work.claim("w", 2000, 60_000, ready.id);
      assert(await store.work.complete(file!, "w", { size: 10 }, 2100));
      const empty = await cart(store, "e", 0, 2200);
      assertEquals(empty.status, "ready");

      // A file of a cart replaced under its uid completes: the old cart stays as it was.
      const old = await cart(store, "x", 1, 2300);
      const held = await store.work.claim("w", 2400, 60_000, old.id);
      await store.carts.create(
        { uid: "x", fingerprint: "x2", bundle: false, files: files(2) },
        2500,
      );
      assert(await store.work.complete(held!, "w", { size: 5 }, 2600));
      assertEquals((await store.carts.byId(old.id))?.status, "staging");

      const due = await store.outbox.claim("n", 3000, 60_000, 10);
      assertEquals(
        due.map((d) => [d.data.uid, d.type, d.url]).sort(),
        [
          ["e", "org.pacifica.cartd.cart.ready", "http://a/"],
          ["e", "org.pacifica.cartd.cart.ready", "http://b/"],
          ["r", "org.pacifica.cartd.cart.ready", "http://a/"],
          ["r", "org.pacifica.cartd.cart.ready", "http://b/"],
        ],
      );
      assertEquals(due.find((d) => d.data.uid === "r")?.data.bytes, 10);
      assertEquals((await store.outbox.claim("m", 3000, 60_000, 10)).length, 0, "leased");
      for (const d of due) await store.outbox.delivered(d.id, "n");
      assertEquals(await store.outbox.pending(), 0);
    } finally {
      await store.close();
    }
  });
}
