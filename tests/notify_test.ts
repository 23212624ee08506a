/**
 * Notifications over real HTTP: a receiver that is down, then failing, then slow, then up gets
 * every cart event at least once, in order per cart, across a SIGKILL of the server; a slow
 * receiver slows neither staging nor HTTP; a receiver that never answers is given up on with a
 * log line.
 */
import { join } from "node:path";
import { assert, assertEquals } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { cartdEnv } from "./support/cli.ts";
import { startServer, waitWhileStaging } from "./support/server.ts";

const json = { "content-type": "application/json" };

interface Received {
  contentType: string;
  event: {
    specversion: string;
    id: string;
    type: string;
    source: string;
    subject: string;
    time: string;
    data: {
      uid: string;
      status: string;
      message: string;
      files: number;
      bytes: number;
      url?: string;
    };
  };
}

/**
 * A free loopback port for a receiver that starts later: outside the range the system hands out
 * for port 0, so no other test's server can take it meanwhile.
 */
function freePort(): number {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 10000);
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // Taken: try another.
    }
  }
}

/** A receiver on `port` that fails its first `failures` posts, then answers after `delayMs`. */
function receiver(port: number, failures: number, delayMs: number) {
  const received: Received[] = [];
  let posts = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, async (req) => {
    posts++;
    const body = await req.text();
    if (posts <= failures) return new Response("not now", { status: 503 });
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    received.push({ contentType: req.headers.get("content-type") ?? "", event: JSON.parse(body) });
    return new Response(null, { status: 204 });
  });
  return { received, posts: () => posts, stop: () => server.shutdown() };
}

async function post(url: string, uid: string, request: unknown) {
  const response = await fetch(`${url}${uid}`, {
    method: "POST",
    headers: json,
    body: JSON.stringify(request),
  });
  await response.body?.cancel();
  assertEquals(response.status, 201);
}

Deno.test("a receiver down, failing, slow, then up gets every event, in order, across a SIGKILL", async () => {
  const archive = await makeArchive([{ id: "a", size: 4000 }, { id: "b", size: 1000 }, {
    id: "c",
    size: 10,
  }]);
  const good = { fileids: archive.request.fileids.slice(0, 2) };
  const bad = { fileids: [{ ...archive.request.fileids[2], hashsum: "0".repeat(40) }] };
  const dir = await Deno.makeTempDir({ prefix: "cartd-" });
  const port = freePort();
  const env = cartdEnv(join(dir, "volume"), `file://${archive.dir}`, {
    CARTD_LOG: "debug",
    CARTD_RETRY_LIMIT: "1",
    CARTD_NOTIFY_URL: `http://127.0.0.1:${port}/hook`,
    CARTD_PUBLIC_URL: "https://cartd.example.org/base/",
  });

  // The receiver is down while the carts finish.
  let node = await startServer(env);
  await post(node.url, "good", good);
  await post(node.url, "bad", bad);
  await post(node.url, "empty", { fileids: [] });
  await waitWhileStaging(`${node.url}good`, 50);
  await waitWhileStaging(`${node.url}bad`, 50);
  // The failed cart again, failing again: a second event for the same cart, after the first.
  await post(node.url, "bad", bad);
  await waitWhileStaging(`${node.url}bad`, 50);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const pending = await (await fetch(`${node.url}-/metrics`)).text();
  assert(/cartd_notifications_pending [45]\b/.test(pending), "four events wait in the outbox");
  node.child.kill("SIGKILL");
  await node.exited;

  // Up again, but failing twice, then slow: the events come through after a restart.
  const hook = receiver(port, 2, 1500);
  node = await startServer(env);
  try {
    // While a delivery takes 1.5 s, staging and HTTP go at their own pace.
    await new Promise((resolve) => setTimeout(resolve, 1200));
    const started = performance.now();
    await post(node.url, "meanwhile", good);
    await waitWhileStaging(`${node.url}meanwhile`, 20);
    assert(performance.now() - started < 1000, "a slow receiver held up staging");

    const deadline = Date.now() + 40_000;
    const uids = () => new Set(hook.received.map((r) => r.event.data.uid));
    while (
      (uids().size < 4 || hook.received.filter((r) => r.event.subject === "bad").length < 2) &&
      Date.now() < deadline
    ) {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert(hook.posts() > hook.received.length, "the failed posts were tried again");
    const byId = new Map(hook.received.map((r) => [r.event.id, r]));
    const events = [...byId.values()].map((r) => r.event);
    assertEquals(events.length, 5, JSON.stringify(events.map((e) => [e.subject, e.type])));
    for (const r of hook.received) {
      assertEquals(r.contentType, "application/cloudevents+json; charset=utf-8");
    }

    const ready = events.find((e) => e.subject === "good")!;
    assertEquals(ready.specversion, "1.0");
    assertEquals(ready.type, "org.pacifica.cartd.cart.ready");
    assertEquals(ready.source, "https://cartd.example.org/base");
    assertEquals(ready.data, {
      uid: "good",
      status: "ready",
      message: "",
      files: 2,
      bytes: 5000,
      url: "https://cartd.example.org/base/good",
    });
    const failed = events.filter((e) => e.subject === "bad");
    assertEquals(failed.map((e) => e.type), [
      "org.pacifica.cartd.cart.error",
      "org.pacifica.cartd.cart.error",
    ]);
    assert(failed[0].data.message.includes("hash"), failed[0].data.message);
    // In order per cart: the first event arrived first.
    const arrivals = hook.received.filter((r) => r.event.subject === "bad").map((r) => r.event.id);
    assertEquals(arrivals[0], failed.sort((x, y) => x.time.localeCompare(y.time))[0].id);
    assertEquals(events.find((e) => e.subject === "empty")?.data.files, 0);
    assertEquals(
      events.find((e) => e.subject === "meanwhile")?.type,
      "org.pacifica.cartd.cart.ready",
    );
  } finally {
    node.child.kill("SIGTERM");
    await node.exited;
    await hook.stop();
  }
});

Deno.test("a receiver that never answers is given up on after notify_give_up, with a log line", async () => {
  const archive = await makeArchive([{ id: "a", size: 100 }]);
  const dir = await Deno.makeTempDir({ prefix: "cartd-" });
  const port = freePort();
  const node = await startServer(cartdEnv(join(dir, "volume"), `file://${archive.dir}`, {
    CARTD_LOG: "warn",
    CARTD_NOTIFY_URL: `http://127.0.0.1:${port}/dead`,
    CARTD_NOTIFY_GIVE_UP: "2s",
  }));
  try {
    await post(node.url, "x", archive.request);
    await waitWhileStaging(`${node.url}x`, 50);
    const deadline = Date.now() + 15_000;
    while (!node.log().includes("given up") && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const line = node.log().split("\n").find((l) => l.includes("given up"))!;
    assert(line.includes("org.pacifica.cartd.cart.ready of cart x"), line);
    // The receiver by its origin only: a webhook's path may hold its secret.
    assert(line.includes(`http://127.0.0.1:${port}/…`), line);
    assert(line.includes("connection refused"), line);
    // Said once, when the receiver began to fail, long before it is given up on.
    assert(
      node.log().includes(`notifications to http://127.0.0.1:${port}/… fail (connection refused)`),
    );
    const metrics = await (await fetch(`${node.url}-/metrics`)).text();
    assert(metrics.includes("cartd_notifications_pending 0"), "dropped from the outbox");
    assert(metrics.includes('cartd_notifications_total{outcome="given_up"} 1'));
  } finally {
    node.child.kill("SIGTERM");
    await node.exited;
  }
});
