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
          stores[i % 4].space.reserve(file!.id, `w${i}`, 100, () => 1000, 0, 2000)
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
          stores[0].carts.evict(cart.id, 2000),
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
