/** A failed cart can be tried again: by re-POSTing its request, or with `cartd retry`. */
import { sleep } from "../src/time.ts";
import { startArchiveSimulator } from "../fixtures/archive_server.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { withSimulator } from "./support/cartd.ts";
import { serveApp } from "./support/app.ts";
import { cartdEnv, runCli } from "./support/cli.ts";

const post = (url: string, body: unknown) =>
  fetch(url, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "content-type": "application/json" },
  });

async function headUntilSettled(url: string): Promise<Response> {
  for (let i = 0; i < 400; i++) {
    const head = await fetch(url, { method: "HEAD" });
    if (head.headers.get("x-pacifica-status") !== "staging") return head;
    await sleep(50);
  }
  throw new Error("still staging");
}

Deno.test("re-POSTing the request of a failed cart starts its failed files again and keeps the verified ones", async () => {
  const files = [{ id: "good", size: 20_000 }, { id: "flaky", size: 20_000 }];
  const faults = [{ op: "pull" as const, kind: "500" as const, id: "flaky" }];
  await withSimulator(files, { faults }, { CARTD_RETRY_LIMIT: "2" }, async (setup) => {
    const { archive, simulator, cartd } = setup;
    const { url, close } = serveApp(cartd);
    try {
      const created = await post(`${url}r`, archive.request);
      assertEquals(created.status, 201);
      await created.body?.cancel();
      const failed = await headUntilSettled(`${url}r`);
      assertEquals([failed.status, failed.headers.get("x-pacifica-status")], [500, "error"]);
      const pulls = simulator.count("pull", "flaky");

      // The archive is mended; the same request again starts the cart again.
      simulator.faults = [];
      const again = await post(`${url}r`, archive.request);
      assertEquals(again.status, 201);
      assertEquals(await again.json(), { message: "Cart Processing has begun" });
      const head = await fetch(`${url}r`, { method: "HEAD" });
      assertEquals(head.headers.get("x-pacifica-status"), "staging");
      assertEquals(head.headers.get("x-pacifica-message"), "");

      const ready = await headUntilSettled(`${url}r`);
      assertEquals([ready.status, ready.headers.get("x-pacifica-status")], [204, "ready"]);
      assertEquals(simulator.count("pull", "good"), 1, "the verified file is not pulled again");
      assertEquals(simulator.count("pull", "flaky"), pulls + 1);
      const detail = await (await fetch(`${url}-/carts/r`)).json();
      assertEquals(detail.files.map((f: { error: string }) => f.error), ["", ""]);
      const tar = await fetch(`${url}r?filename=r.tar`);
      assertEquals(tar.status, 200);
      await tar.body?.cancel();
    } finally {
      await close();
    }
  });
});

Deno.test("cartd retry restarts a failed cart; bundle points to it; a cart that has not failed is left alone", async () => {
  const archive = await makeArchive([{ id: "a", size: 1000 }, { id: "b", size: 2000 }]);
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    faults: [{ op: "stage", kind: "500", id: "b" }],
  });
  const env = cartdEnv(await Deno.makeTempDir(), simulator.url, { CARTD_RETRY_LIMIT: "2" });
  try {
    const created = await runCli(["create", "x", "-", "--wait"], {
      env,
      stdin: JSON.stringify(archive.request),
    });
    assertEquals(created.code, 5, created.stderr);
    const bundle = await runCli(["bundle", "x"], { env });
    assertEquals(bundle.code, 5);
    assertMatch(bundle.stderr, /simulated stage failure/);
    assertMatch(bundle.stderr, /run "cartd retry x" to try its failed files again/);

    simulator.faults = [];
    const retried = await runCli(["retry", "x", "--wait"], { env });
    assertEquals(retried.code, 0, retried.stderr);
    assertMatch(retried.stderr, /1 failed file\(s\) of cart x start again/);
    assertMatch(retried.stdout, /^x: ready, 2\/2 files ready/);
    assertEquals(simulator.count("stage", "a"), 1, "the verified file was not staged again");

    const nothing = await runCli(["retry", "x"], { env });
    assertEquals(nothing.code, 0);
    assertMatch(nothing.stderr, /cart x has not failed; nothing to retry/);
    const unknown = await runCli(["retry", "nope"], { env });
    assertEquals(unknown.code, 3);
  } finally {
    await simulator.stop();
  }
});

Deno.test("a retry that fails again says so; a different request still replaces the cart", async () => {
  await withSimulator(
    [{ id: "a", size: 10 }],
    { faults: [{ op: "pull", kind: "404" }] },
    {},
    async ({ archive, cartd }) => {
      const { parseCartRequest } = await import("../src/cart/request.ts");
      const request = parseCartRequest(JSON.stringify(archive.request));
      const first = await cartd.service.create("c", request);
      assertEquals((await cartd.worker().drainCart(first.cart.id))?.status, "error");
      const again = await cartd.service.create("c", request);
      assertEquals([again.created, again.retried, again.cart.status], [false, 1, "staging"]);
      assertEquals(again.cart.id, first.cart.id, "the same cart, not a new one");
      const done = await cartd.worker().drainCart(again.cart.id);
      assertEquals(done?.status, "error");
      assertMatch(done!.message, /404 on pull/);

      const other = { ...request, files: request.files.map((f) => ({ ...f, path: "other" })) };
      const replaced = await cartd.service.create("c", other);
      assert(replaced.created && replaced.replaced);
    },
  );
});
