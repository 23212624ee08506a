/**
 * Access control over real HTTP: every route with no, wrong, reader, writer and admin tokens;
 * carts owned by the name that made them; URL credentials as the Pacifica downloader's Python
 * `requests` sends them; a tokens file that is unsafe refused, one that changes read again; and no
 * token ever in the log.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { cartdEnv, runCli } from "./support/cli.ts";
import { startServer, waitWhileStaging } from "./support/server.ts";

const tokens = {
  alice: "alice-writer-0123456789abcdef",
  aliceReader: "alice-reader-0123456789abcdef",
  bob: "bob-writer-0123456789abcdef0",
  eve: "eve-reader-0123456789abcdef0",
  root: "root-admin-0123456789abcdef0",
};

const tokensText = `# name token role
alice ${tokens.alice} writer
alice ${tokens.aliceReader} reader
bob   ${tokens.bob} writer
eve   ${tokens.eve} reader

root  ${tokens.root} admin
`;

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const basic = (user: string, token: string) => ({
  authorization: `Basic ${btoa(`${user}:${token}`)}`,
});

async function call(
  url: string,
  method: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<Response> {
  const response = await fetch(url, {
    method,
    headers: body ? { ...headers, "content-type": "application/json" } : headers,
    body,
  });
  await response.body?.cancel();
  return response;
}

/** A Python that has `requests` (the Pacifica downloader's HTTP library). */
async function pythonWithRequests(): Promise<string> {
  for (const python of ["/usr/bin/python3", "python3"]) {
    const probe = await new Deno.Command(python, { args: ["-c", "import requests"] }).output()
      .catch(() => undefined);
    if (probe?.success) return python;
  }
  throw new Error("no python3 with requests (Debian: python3-requests)");
}

async function withAuthServer(
  body: (
    url: string,
    dir: string,
    log: () => string,
    archive: { request: unknown },
  ) => Promise<void>,
) {
  const archive = await makeArchive([{ id: "a", size: 5000 }, { id: "b", size: 300 }]);
  const dir = await Deno.makeTempDir({ prefix: "cartd-" });
  const file = join(dir, "tokens");
  await Deno.writeTextFile(file, tokensText, { mode: 0o600 });
  const node = await startServer(cartdEnv(join(dir, "volume"), `file://${archive.dir}`, {
    CARTD_TOKENS_FILE: file,
    CARTD_LOG: "debug",
  }));
  try {
    await body(node.url, dir, node.log, archive);
  } finally {
    node.child.kill("SIGTERM");
    await node.exited;
  }
}

Deno.test("every route with no, wrong, reader, writer and admin tokens", async () => {
  await withAuthServer(async (url, _dir, log, archive) => {
    const request = JSON.stringify(archive.request);
    // Open routes; health's detail (URLs, paths, errors) is the admin's.
    assertEquals((await call(url, "GET")).status, 200);
    const open = await fetch(`${url}-/health`);
    const summary = await open.json();
    assertEquals(summary.archive, { status: "ok" });
    assertEquals(Object.keys(summary.volume), ["status"]);
    const detail = await (await fetch(`${url}-/health`, { headers: bearer(tokens.root) })).json();
    assert(detail.archive.url.startsWith("file://"));

    // No token, a wrong one, or a right token under another name: 401 with a challenge.
    const none = await call(`${url}mine`, "HEAD");
    assertEquals(none.status, 401);
    assertMatch(none.headers.get("www-authenticate")!, /Bearer realm="cartd", Basic/);
    assertEquals(none.headers.get("x-pacifica-status"), "error", "the downloader reads it");
    assertEquals((await call(`${url}mine`, "GET", bearer("x".repeat(30)))).status, 401);
    assertEquals((await call(`${url}mine`, "GET", basic("bob", tokens.alice))).status, 401);
    const junk = { authorization: `Bearer ${tokens.alice} trailing` };
    assertEquals((await call(`${url}-/carts/mine`, "GET", junk)).status, 401, "one value only");
    const latin1 = { authorization: `Basic ${btoa("\xe9:x")}` };
    assertMatch(
      (await (await fetch(`${url}mine`, { headers: latin1 })).json()).message,
      /not valid/,
    );
    assertEquals((await call(`${url}-/carts/mine`, "GET")).status, 401);
    assertEquals((await call(`${url}-/metrics`, "GET")).status, 401);
    assertEquals((await call(`${url}mine`, "POST", {}, request)).status, 401);

    // A reader cannot create or delete; a writer can.
    assertEquals((await call(`${url}mine`, "POST", bearer(tokens.eve), request)).status, 403);
    assertEquals((await call(`${url}mine`, "POST", bearer(tokens.alice), request)).status, 201);
    await waitWhileStaging(`${url}mine`, 50, 30_000, bearer(tokens.alice));
    const status = (token: string) => call(`${url}mine`, "HEAD", bearer(token));
    assertEquals((await status(tokens.alice)).status, 204);
    assertEquals((await status(tokens.aliceReader)).status, 204, "the same name's reader token");
    assertEquals((await status(tokens.root)).status, 204, "an admin sees every cart");

    // Another user cannot tell the cart from a missing one, nor take its uid.
    assertEquals((await status(tokens.bob)).status, 404);
    assertEquals((await status(tokens.eve)).status, 404);
    assertEquals((await call(`${url}mine`, "GET", bearer(tokens.bob))).status, 404);
    assertEquals((await call(`${url}-/carts/mine`, "GET", bearer(tokens.bob))).status, 404);
    assertEquals((await call(`${url}mine`, "DELETE", bearer(tokens.bob))).status, 404);
    assertEquals((await call(`${url}mine`, "POST", bearer(tokens.bob), request)).status, 409);
    assertEquals((await status(tokens.alice)).status, 204, "the refused POST left it alone");

    // The owner (any of its tokens) reads it; Basic works with the token as the password.
    const tar = await fetch(`${url}mine`, { headers: basic("alice", tokens.aliceReader) });
    assertEquals(tar.status, 200);
    await tar.body?.cancel();
    assertEquals((await call(`${url}-/carts/mine`, "GET", bearer(tokens.alice))).status, 200);

    // Metrics are the admin's.
    assertEquals((await call(`${url}-/metrics`, "GET", bearer(tokens.alice))).status, 403);
    assertEquals((await call(`${url}-/metrics`, "GET", bearer(tokens.root))).status, 200);

    assertEquals((await call(`${url}mine`, "DELETE", bearer(tokens.aliceReader))).status, 403);
    assertEquals((await call(`${url}mine`, "DELETE", bearer(tokens.alice))).status, 200);

    // The access log names the token's owner, never a token.
    for (let i = 0; i < 50 && !log().includes('"DELETE /mine" 200'); i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assertMatch(log(), /127\.0\.0\.1 alice "DELETE \/mine" 200/);
    for (const token of Object.values(tokens)) assert(!log().includes(token), "a token was logged");
  });
});

Deno.test("the Pacifica downloader's way: Python requests with the token in the URL", async () => {
  await withAuthServer(async (url, _dir, log, archive) => {
    const created = await call(
      `${url}dl`,
      "POST",
      bearer(tokens.alice),
      JSON.stringify(archive.request),
    );
    assertEquals(created.status, 201);
    const withCredentials = url.replace("http://", `http://alice:${tokens.aliceReader}@`);
    const script = `
import requests, sys, time
url = sys.argv[1] + "dl"
while True:
    head = requests.head(url)
    if head.headers["X-Pacifica-Status"] != "staging":
        break
    time.sleep(0.1)
assert head.status_code == 204, head.status_code
body = requests.get(url).content
anonymous = requests.head(sys.argv[2] + "dl")
print(len(body), anonymous.status_code)
`;
    const out = await new Deno.Command(await pythonWithRequests(), {
      args: ["-c", script, withCredentials, url],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const said = new TextDecoder().decode(out.stdout).trim();
    assert(out.success, new TextDecoder().decode(out.stderr));
    const [size, anonymous] = said.split(" ").map(Number);
    assert(size > 5300 && size % 10240 === 0, `a tar of ${size} bytes`);
    assertEquals(anonymous, 401);
    for (const token of Object.values(tokens)) assert(!log().includes(token), "a token was logged");
  });
});

Deno.test("the tokens file is read again when it changes; an unsafe one is refused", async () => {
  await withAuthServer(async (url, dir) => {
    const carol = "carol-admin-0123456789abcdef";
    assertEquals((await call(`${url}-/metrics`, "GET", bearer(carol))).status, 401);
    await Deno.writeTextFile(join(dir, "tokens"), `${tokensText}carol ${carol} admin\n`);
    let answer = 0;
    for (let i = 0; i < 40 && answer !== 200; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      answer = (await call(`${url}-/metrics`, "GET", bearer(carol))).status;
    }
    assertEquals(answer, 200, "a new token works without a restart");

    // Made readable by others, the file is not read again: the tokens in force stay.
    await Deno.chmod(join(dir, "tokens"), 0o644);
    await Deno.writeTextFile(join(dir, "tokens"), `root ${tokens.root} admin\n`);
    await new Promise((resolve) => setTimeout(resolve, 1200));
    assertEquals((await call(`${url}-/metrics`, "GET", bearer(carol))).status, 200);
  });

  const dir = await Deno.makeTempDir({ prefix: "cartd-" });
  const open = join(dir, "tokens");
  await Deno.writeTextFile(open, tokensText, { mode: 0o644 });
  await Deno.chmod(open, 0o644);
  const refused = await runCli(["serve", "--port", "0"], {
    env: cartdEnv(join(dir, "volume"), "file:///nowhere", { CARTD_TOKENS_FILE: open }),
  });
  assertEquals(refused.code, 6);
  assertMatch(refused.stderr, /readable by group or others \(mode 644\); chmod 600 it/);

  const empty = join(dir, "empty");
  await Deno.writeTextFile(empty, "# no one yet\n", { mode: 0o600 });
  const env = cartdEnv(join(dir, "volume"), "file:///nowhere", { CARTD_TOKENS_FILE: empty });
  const none = await runCli(["config", "check"], { env });
  assertEquals(none.code, 6, "config check reads the tokens file as serve would");
  assertMatch(none.stderr, /holds no tokens/);
  const unsafe = await runCli(["config", "check"], { env: { ...env, CARTD_TOKENS_FILE: open } });
  assertEquals(unsafe.code, 6);

  const short = join(dir, "short");
  await Deno.writeTextFile(short, "al shorttoken writer\n", { mode: 0o600 });
  const weak = await runCli(["serve", "--port", "0"], {
    env: cartdEnv(join(dir, "volume"), "file:///nowhere", { CARTD_TOKENS_FILE: short }),
  });
  assertEquals(weak.code, 6);
  assertMatch(weak.stderr, /line 1: the token is shorter than 16 characters/);
  assert(!weak.stderr.includes("shorttoken"), "the token itself is never shown");
});
