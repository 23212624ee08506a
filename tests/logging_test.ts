/**
 * Logs as an operator reads them: an access line per request with the id sent back in
 * `X-Request-Id`, lifecycle lines naming the cart, JSON lines for shippers, a level that SIGHUP
 * changes, and a bad `CARTD_LOG` refused rather than ignored.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { cartdEnv, runCli } from "./support/cli.ts";
import { startServer, waitWhileStaging } from "./support/server.ts";

const json = { "content-type": "application/json" };

/** The JSON log lines written so far. */
function jsonLines(log: string): Record<string, unknown>[] {
  return log.split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line));
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

Deno.test("log_format=json: access lines carry the request id sent back, lifecycle lines the uid", async () => {
  const archive = await makeArchive([{ id: "a", size: 3000 }, { id: "b", size: 10 }]);
  const volume = await Deno.makeTempDir({ prefix: "cartd-" });
  const node = await startServer(cartdEnv(volume, `file://${archive.dir}`, {
    CARTD_LOG: "info",
    CARTD_LOG_FORMAT: "json",
    CARTD_TRUSTED_PROXIES: "127.0.0.0/8",
  }));
  try {
    const created = await fetch(`${node.url}run-7`, {
      method: "POST",
      headers: json,
      body: JSON.stringify(archive.request),
    });
    await created.body?.cancel();
    const createdId = created.headers.get("x-request-id")!;
    assertMatch(createdId, /^[0-9a-f-]{36}$/);
    await waitWhileStaging(`${node.url}run-7`, 50);
    const got = await fetch(`${node.url}run-7`);
    const size = (await got.arrayBuffer()).byteLength;
    // Behind a trusted proxy: its request id and the client it names are believed.
    const proxied = await fetch(`${node.url}run-7`, {
      method: "HEAD",
      headers: { "x-request-id": "proxy-1", "x-forwarded-for": "203.0.113.9, 10.1.2.3" },
    });
    assertEquals(proxied.headers.get("x-request-id"), "proxy-1");
    await (await fetch(`${node.url}run-7`, { method: "DELETE" })).body?.cancel();

    await until("the delete's lines", () => node.log().includes("DELETE /run-7"));
    const lines = jsonLines(node.log());
    for (const line of lines) {
      assertEquals(typeof line.time, "string");
      assert(["error", "warn", "info", "debug"].includes(line.level as string));
    }
    const post = lines.find((l) => l.request_id === createdId)!;
    assertEquals(post.route, "POST /{uid}");
    assertEquals(post.uid, "run-7");
    assertEquals(post.status, 201);
    assertEquals(typeof post.duration, "number");
    assertEquals(post.client, "127.0.0.1");
    const download = lines.find((l) => l.request_id === got.headers.get("x-request-id"))!;
    assertEquals([download.route, download.status, download.bytes], ["GET /{uid}", 200, size]);
    const head = lines.find((l) => l.request_id === "proxy-1")!;
    assertEquals(head.client, "10.1.2.3", "the address the proxy was reached from");

    const about = (word: string) =>
      lines.find((l) => String(l.message).startsWith(`cart run-7 ${word}`));
    assertEquals(about("created")?.uid, "run-7");
    assertEquals(about("ready")?.uid, "run-7");
    assertEquals(about("ready")?.bytes, 3010);
    assertEquals(about("deleted")?.uid, "run-7");
  } finally {
    node.child.kill("SIGTERM");
    await node.exited;
  }
});

Deno.test("text logs: one readable access line per request; SIGHUP changes the level, and a download goes on", async () => {
  const archive = await makeArchive([{ id: "a", size: 40_000_000 }]);
  const volume = await Deno.makeTempDir({ prefix: "cartd-" });
  const ini = join(volume, "cartd.ini");
  await Deno.writeTextFile(ini, "[cartd]\nlog_level = warn\n");
  const node = await startServer({
    ...cartdEnv(volume, `file://${archive.dir}`),
    CARTD_CONFIG: ini,
    // The file says the level: none from the environment (CI sets one), which would win.
    CARTD_LOG: "",
  });
  try {
    await (await fetch(`${node.url}quiet`, { method: "HEAD" })).body?.cancel();
    const created = await fetch(`${node.url}big`, {
      method: "POST",
      headers: json,
      body: JSON.stringify(archive.request),
    });
    await created.body?.cancel();
    await waitWhileStaging(`${node.url}big`, 50);
    // A download under way when SIGHUP comes goes on to its last byte.
    const download = await fetch(`${node.url}big`);
    const reader = download.body!.getReader();
    let received = (await reader.read()).value!.length;
    await Deno.writeTextFile(ini, "[cartd]\nlog_level = info\n");
    node.child.kill("SIGHUP");
    await until("the reload", () => node.log().includes("SIGHUP"));
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
      received += chunk.value.length;
    }
    assertEquals(received, Number(download.headers.get("content-length")));
    const answer = await fetch(`${node.url}loud`, { method: "HEAD" });
    await until("the access line", () => node.log().includes("loud"));
    assert(!node.log().includes("quiet"), "no access line at level warn");
    const line = node.log().split("\n").find((l) => l.includes('"HEAD /loud"'))!;
    assertMatch(
      line,
      /^\S+Z info {2}127\.0\.0\.1 - "HEAD \/loud" 404 0 B \d+ ms request [0-9a-f-]{36}$/,
    );
    assert(line.endsWith(answer.headers.get("x-request-id")!));
  } finally {
    node.child.kill("SIGTERM");
    await node.exited;
  }
});

Deno.test("an unknown CARTD_LOG or log_format is a configuration error, not silence", async () => {
  const volume = await Deno.makeTempDir({ prefix: "cartd-" });
  const env = cartdEnv(volume, "file:///nowhere");
  const level = await runCli(["list"], { env: { ...env, CARTD_LOG: "verbose" } });
  assertEquals(level.code, 6);
  assertMatch(level.stderr, /\[cartd\] log_level \(from CARTD_LOG\).*"verbose".*error, warn/);
  const format = await runCli(["list"], { env: { ...env, CARTD_LOG_FORMAT: "xml" } });
  assertEquals(format.code, 6);
  assertMatch(format.stderr, /log_format.*"xml" is not one of text, json/);
});
