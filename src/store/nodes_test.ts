/**
 * Several nodes on one database: each "node" here is its own Store (its own connections), racing
 * the others the way several `cartd serve` processes do. On PostgreSQL the row locks and
 * `SKIP LOCKED` do the work; on SQLite, `BEGIN IMMEDIATE` does. Both must hold.
 */
import { assert, assertEquals } from "../../tests/support/assert.ts";
import { engines } from "../../tests/support/databases.ts";
import type { NewFile } from "./schema.ts";
import { Store } from "./store.ts";

const files = (n: number, prefix = "f"): NewFile[] =>
  Array.from({ length: n }, (_, seq) => ({
    seq,
    archive_id: `${prefix}${seq}`,
    path: `${prefix}${seq}`,
    hash_type: "sha1",
    hash_sum: "",
  }));

async function nodes(url: string, count: number): Promise<Store[]> {
  const stores = Array.from({ length: count }, () => Store.open(url, { poolSize: 4 }));
  await Promise.all(stores.map((s) => s.migrate()));
  return stores;
}

const closeAll = (stores: Store[]) => Promise.all(stores.map((s) => s.close()));

for (const engine of engines) {
  Deno.test(`${engine.name}: nodes migrating a new database at once migrate it exactly once`, async () => {
    const url = await engine.freshDatabase();
    const stores = Array.from({ length: 4 }, () => Store.open(url));
    try {
      const applied = await Promise.all(stores.map((s) => s.migrate()));
      const total = applied.reduce((n, names) => n + names.length, 0);
      assertEquals(total, (await stores[0].schemaState()).applied.length, "each migration once");
      assertEquals((await stores[0].schemaState()).pending, []);
    } finally {
      await closeAll(stores);
    }
  });

  Deno.test(`${engine.name}: four nodes claiming at once never claim one file twice`, async () => {
    const stores = await nodes(await engine.freshDatabase(), 4);
    try {
      for (let c = 0; c < 5; c++) {
        await stores[0].carts.create({
          uid: `c${c}`,
          fingerprint: `c${c}`,
          bundle: false,
          files: files(20),
        }, 1000);
      }
      const claimed: number[] = [];
      await Promise.all(stores.flatMap((store, n) =>
        Array.from({ length: 3 }, async (_, loop) => {
          while (true) {
            const file = await store.work.claim(`node${n}:${loop}`, 2000, 60_000);
            if (!file) return;
            claimed.push(file.id);
          }
        })
      ));
      assertEquals(claimed.length, 100);
      assertEquals(new Set(claimed).size, 100, "every file claimed by exactly one worker");
    } finally {
      await closeAll(stores);
    }
  });

  Deno.test(`${engine.name}: nodes reserving at once never count the same free bytes`, async () => {
    const stores = await nodes(await engine.freshDatabase(), 4);
    try {
      await stores[0].carts.create(
        { uid: "c", fingerprint: "c", bundle: false, files: files(16) },
        1000,
      );
      const held = await Promise.all(
        Array.from({ length: 16 }, (_, i) => stores[i % 4].work.claim(`w${i}`, 2000, 60_000)),
      );
      // 16 pulls of 100 bytes each into 1 000 free bytes: exactly 10 fit, whoever asks first.
      const checks = await Promise.all(
        held.map((file, i) =>
          stores[i % 4].space.reserve(file!, `w${i}`, 100, () => 1000, 0, 2000)
        ),
      );
      assertEquals(checks.filter((c) => c.fits).length, 10);
      const reserved = (await stores[0].work.all()).reduce((n, f) => n + Number(f.reserved), 0);
      assertEquals(reserved, 1000);
    } finally {
      await closeAll(stores);
    }
  });

  Deno.test(`${engine.name}: an eviction and a download racing on one cart: its files stay while the download runs`, async () => {
    const stores = await nodes(await engine.freshDatabase(), 2);
    try {
      for (let round = 0; round < 20; round++) {
        const { cart } = await stores[0].carts.create(
          { uid: `r${round}`, fingerprint: "x", bundle: false, files: [] },
          1000,
        );
        const [evicted, download] = await Promise.all([
          stores[0].carts.evict(cart.id, 2000, 2000),
          stores[1].space.startDownload(cart.id, "reader", Date.now() + 60_000),
        ]);
        // A download that started first stops the eviction; one that starts after it is still
        // safe, because the cart's files stay until it ends.
        const removed = await stores[0].space.claimRemoval(cart.id, Date.now());
        assert(download !== undefined, "the files were there when it started");
        if (evicted) assertEquals(removed, false, "files stay while the download runs");
        else assertEquals((await stores[0].carts.byId(cart.id))?.deleted_at, null);
        await stores[1].space.endDownload(download!);
        if (evicted) assert(await stores[0].space.claimRemoval(cart.id, Date.now()));
      }
    } finally {
      await closeAll(stores);
    }
  });

  Deno.test(`${engine.name}: a removal claimed first keeps any download from starting on the cart`, async () => {
    const stores = await nodes(await engine.freshDatabase(), 2);
    try {
      const { cart } = await stores[0].carts.create(
        { uid: "gone", fingerprint: "x", bundle: false, files: [] },
        1000,
      );
      await stores[0].carts.markDeleted(cart.id, 2000, "deleted");
      assert(await stores[0].space.claimRemoval(cart.id, Date.now()));
      assertEquals(
        await stores[1].space.startDownload(cart.id, "late", Date.now() + 60_000),
        undefined,
      );
      assertEquals(await stores[1].space.claimRemoval(cart.id, Date.now()), false, "claimed once");
    } finally {
      await closeAll(stores);
    }
  });

  Deno.test(`${engine.name}: nodes creating one uid at once leave one live cart`, async () => {
    const stores = await nodes(await engine.freshDatabase(), 4);
    try {
      const results = await Promise.all(stores.map((store, n) =>
        store.carts.create({
          uid: "same",
          fingerprint: n % 2 ? "a" : "b",
          bundle: false,
          files: files(3, `n${n}`),
        }, 1000 + n)
      ));
      assert(results.every((r) => r.cart.uid === "same"));
      const live = (await stores[0].carts.all()).filter((c) =>
        c.uid === "same" && c.deleted_at === null && c.status !== "creating"
      );
      assertEquals(live.length, 1);
      assertEquals(
        (await stores[0].carts.all()).filter((c) => c.status === "creating").length,
        0,
        "no draft left behind",
      );
    } finally {
      await closeAll(stores);
    }
  });
}

for (const engine of engines) {
  Deno.test(`${engine.name}: a download registered first keeps eviction away; so do staging and recent use`, async () => {
    const stores = await nodes(await engine.freshDatabase(), 2);
    try {
      const make = async (uid: string, n = 0) =>
        (await stores[0].carts.create(
          { uid, fingerprint: uid, bundle: false, files: files(n) },
          1000,
        ))
          .cart;
      const held = await make("held");
      const download = await stores[1].space.startDownload(held.id, "reader", Date.now() + 60_000);
      assert(download !== undefined);
      assertEquals(await stores[0].carts.evict(held.id, 2000, 2000), false, "being downloaded");
      const staging = await make("staging", 1);
      assertEquals(await stores[0].carts.evict(staging.id, 2000, 2000), false, "still staging");
      const used = await make("used");
      await stores[0].carts.touch(used.id, 1500);
      assertEquals(await stores[0].carts.evict(used.id, 2000, 1200), false, "used since");
      const idle = await make("idle");
      assertEquals(await stores[0].carts.evict(idle.id, 2000, 1200), true);
    } finally {
      await closeAll(stores);
    }
  });

  Deno.test(`${engine.name}: a removal and a download racing on a deleted cart: never both`, async () => {
    const stores = await nodes(await engine.freshDatabase(), 2);
    try {
      let both = 0;
      for (let round = 0; round < 30; round++) {
        const { cart } = await stores[0].carts.create(
          { uid: `d${round}`, fingerprint: "x", bundle: false, files: [] },
          1000,
        );
        await stores[0].carts.markDeleted(cart.id, 2000, "deleted");
        const [removed, download] = await Promise.all([
          stores[0].space.claimRemoval(cart.id, Date.now()),
          stores[1].space.startDownload(cart.id, "reader", Date.now() + 60_000),
        ]);
        if (removed && download !== undefined) both++;
        assert(removed || download !== undefined, "one of the two goes through");
      }
      assertEquals(both, 0, "files never removed under a registered download");
    } finally {
      await closeAll(stores);
    }
  });

  Deno.test(`${engine.name}: a claim that ran out can write nothing, even for a loop of its own process`, async () => {
    const stores = await nodes(await engine.freshDatabase(), 1);
    const [store] = stores;
    try {
      const { cart } = await store.carts.create(
        { uid: "c", fingerprint: "c", bundle: false, files: files(1) },
        1000,
      );
      const first = await store.work.claim("node:1:x:y#1", 2000, 1000, cart.id);
      const second = await store.work.claim("node:1:x:y#2", 3001, 1000, cart.id);
      assertEquals(second?.id, first?.id, "taken over once the first lease ran out");
      assertEquals(
        await store.work.save(first!.id, "node:1:x:y#1", { polls: 5 }, false, 3002),
        false,
      );
      assertEquals(await store.work.complete(first!, "node:1:x:y#1", { size: 1 }, 3003), false);
      assertEquals(await store.work.fail(first!, "node:1:x:y#1", "stale", 3004), false);
      assert(await store.work.complete(second!, "node:1:x:y#2", { size: 1 }, 3005));
      assertEquals(
        (await store.carts.byId(cart.id))?.status,
        "ready",
        "settled with its last file",
      );
      // A process handing back its claims hands back every one of them.
      const { cart: more } = await store.carts.create(
        { uid: "m", fingerprint: "m", bundle: false, files: files(2, "m") },
        1000,
      );
      await store.work.claim("node:1:x:y#3", 4000, 60_000, more.id);
      await store.work.claim("node:1:x:y#4", 4000, 60_000, more.id);
      await store.work.release("node:1:x:y");
      assertEquals((await store.work.all()).filter((f) => f.owner !== null), []);
    } finally {
      await closeAll(stores);
    }
  });

  Deno.test(`${engine.name}: a cart whose work ended unannounced is settled by the sweep`, async () => {
    const stores = await nodes(await engine.freshDatabase(), 1);
    const [store] = stores;
    try {
      const { cart } = await store.carts.create(
        { uid: "c", fingerprint: "c", bundle: false, files: files(2) },
        1000,
      );
      // The last step was written, then its worker died before settling the cart.
      for (let i = 0; i < 2; i++) {
        const file = await store.work.claim("w", 2000, 60_000, cart.id);
        await store.work.save(file!.id, "w", { state: "ready", size: 1 }, true, 2000);
      }
      assertEquals((await store.carts.byId(cart.id))?.status, "staging");
      assertEquals(await store.carts.settleStuck(3000), 1);
      assertEquals((await store.carts.byId(cart.id))?.status, "ready");
      assertEquals(await store.carts.settleStuck(3000), 0);
    } finally {
      await closeAll(stores);
    }
  });
}
