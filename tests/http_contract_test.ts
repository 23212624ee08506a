/** The Pacifica REST contract over real HTTP: what clients of the original see, code by code. */
import { sleep } from "../src/time.ts";
import { createApp } from "../src/http/app.ts";
import { Downloads } from "../src/http/downloads.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { openTestCartd, withSimulator } from "./support/cartd.ts";
import { cartdEnv, runCli } from "./support/cli.ts";
import { serveApp } from "./support/app.ts";
import { listWithPython } from "./support/tar.ts";

async function setup() {
  const archive = await makeArchive([{ id: "a", path: "dir/a.txt", size: 3000 }, {
    id: "b",
    size: 10,
  }]);
  const cartd = await openTestCartd(`file://${archive.dir}`);
  return { archive, cartd, ...serveApp(cartd) };
}

const post = (url: string, body: BodyInit | null, type: string | null = "application/json") =>
  fetch(url, { method: "POST", body, headers: type ? { "content-type": type } : {} });

async function waitReady(url: string) {
  for (let i = 0; i < 200; i++) {
    const head = await fetch(url, { method: "HEAD" });
    if (head.headers.get("x-pacifica-status") !== "staging") return head;
    await sleep(50);
  }
  throw new Error("never left staging");
}

async function errorBody(response: Response) {
  const body = await response.json();
  assertEquals(typeof body.status, "string");
  assertEquals(typeof body.message, "string");
  assertEquals(body.traceback ?? "", "", "no traceback");
  assertEquals(response.headers.get("content-type"), "application/json");
  return body;
}

Deno.test("GET / and the method rules", async () => {
  const { url, close } = await setup();
  try {
    const health = await fetch(url);
    assertEquals(health.status, 200);
    assertEquals(await health.json(), { message: "Pacifica Cartd Interface Up and Running" });
    for (const method of ["PUT", "PATCH", "OPTIONS"]) {
      const response = await fetch(`${url}x`, { method });
      assertEquals(response.status, 405, method);
      assertEquals(response.headers.get("allow"), "DELETE, GET, HEAD, POST");
      assertEquals(
        (await errorBody(response)).message,
        "Specified method is invalid for this resource",
      );
    }
    const noUid = await post(url, "{}");
    assertEquals(noUid.status, 404);
    await noUid.body?.cancel();
    const deep = await fetch(`${url}a/b`);
    assertEquals(deep.status, 404);
    await errorBody(deep);
  } finally {
    await close();
  }
});

Deno.test("POST: 201 on success; 415, 411, 400 and 413 with JSON errors that name the problem", async () => {
  const { url, archive, close } = await setup();
  try {
    const created = await post(`${url}c1`, JSON.stringify(archive.request));
    assertEquals(created.status, 201);
    assertEquals(await created.json(), { message: "Cart Processing has begun" });

    const noType = await post(`${url}c2`, JSON.stringify(archive.request), null);
    assertEquals(noType.status, 415);
    assertEquals(
      (await errorBody(noType)).message,
      "Expected an entity of content type application/json, text/javascript",
    );
    const textType = await post(`${url}c2`, "{}", "text/plain");
    assertEquals(textType.status, 415);
    await textType.body?.cancel();
    const js = await post(
      `${url}c2`,
      JSON.stringify(archive.request),
      "text/javascript; charset=utf-8",
    );
    assertEquals(js.status, 201);
    await js.body?.cancel();

    const noBody = await post(`${url}c3`, null);
    assertEquals(noBody.status, 411);
    assertEquals((await errorBody(noBody)).message, "Client must specify Content-Length");

    const cases: [string, string, RegExp][] = [
      ["c4", "{not json", /^Invalid JSON document$/],
      ["c4", '{"fileids": "x"}', /"fileids" must be an array/],
      [
        "c4",
        JSON.stringify({ fileids: [{ id: 1, path: "../x", hashtype: "md5", hashsum: "" }] }),
        /fileids\[0\]\.path "\.\.\/x" has a "\.\." segment/,
      ],
      [
        "c4",
        JSON.stringify({ fileids: [{ id: 1, path: "x", hashtype: "crc", hashsum: "" }] }),
        /unknown hash type/,
      ],
      ["-", "{}", /reserved/],
      ["a%0Ab", JSON.stringify(archive.request), /control character/],
      ["a%2Fb", JSON.stringify(archive.request), /contains "\/"/],
    ];
    for (const [uid, body, message] of cases) {
      const response = await post(`${url}${uid}`, body);
      assertEquals(response.status, 400, `${uid} ${body}`);
      const error = await errorBody(response);
      assertEquals(error.status, "400 Bad Request");
      assertMatch(error.message, message);
    }

    const huge = await post(
      `${url}c5`,
      `{"fileids": [], "pad": "${"x".repeat(65 * 1024 * 1024)}"}`,
    );
    assertEquals(huge.status, 413);
    await errorBody(huge);
    assertEquals((await fetch(`${url}c5`, { method: "HEAD" })).status, 404, "nothing was created");
  } finally {
    await close();
  }
});

Deno.test("HEAD: 204 with both Pacifica headers, 500 for a cart in error, 404 for unknown or deleted", async () => {
  const { url, archive, close } = await setup();
  try {
    await (await post(`${url}good`, JSON.stringify(archive.request))).body?.cancel();
    const ready = await waitReady(`${url}good`);
    assertEquals(ready.status, 204);
    assertEquals(ready.headers.get("x-pacifica-status"), "ready");
    assertEquals(ready.headers.get("x-pacifica-message"), "");
    assertEquals(ready.headers.get("x-cartd-phase"), "ready");
    assertEquals(ready.headers.get("x-cartd-files"), "2/2");
    assertEquals(ready.headers.get("x-cartd-bytes"), "3010/3010");

    const bad = structuredClone(archive.request);
    bad.fileids[1].hashsum = "0".repeat(40);
    await (await post(`${url}bad`, JSON.stringify(bad))).body?.cancel();
    const failed = await waitReady(`${url}bad`);
    assertEquals(failed.status, 500);
    assertEquals(failed.headers.get("x-pacifica-status"), "error");
    assertMatch(
      failed.headers.get("x-pacifica-message")!,
      /^Failed to pull file\(b: File hash does not match/,
    );

    const unknown = await fetch(`${url}nope`, { method: "HEAD" });
    assertEquals(unknown.status, 404);
    assertEquals(unknown.headers.get("x-pacifica-status"), "error");
    assertEquals(unknown.headers.get("x-pacifica-message"), "No cart with uid nope found");

    const hostile = await fetch(`${url}x%0D%0AX-Injected:%201`, { method: "HEAD" });
    assertEquals(hostile.status, 404);
    assertEquals(hostile.headers.get("x-injected"), null);
    assertEquals(
      hostile.headers.get("x-pacifica-message"),
      "No cart with uid x  X-Injected: 1 found",
    );

    // Whatever the URL, a HEAD answer carries both headers the downloader reads.
    for (const path of ["a%zz", "%C3%28", "a/b", "-", "-/carts/x"]) {
      const odd = await fetch(`${url}${path}`, { method: "HEAD" });
      assert(odd.status >= 400, `${path}: ${odd.status}`);
      assertEquals(odd.headers.get("x-pacifica-status"), "error", path);
      assert((odd.headers.get("x-pacifica-message") ?? "") !== "", path);
    }

    const deleted = await fetch(`${url}good`, { method: "DELETE" });
    assertEquals(deleted.status, 200);
    assertEquals(await deleted.json(), { message: "Cart Deleted Successfully" });
    const gone = await fetch(`${url}good`, { method: "HEAD" });
    assertEquals([gone.status, gone.headers.get("x-pacifica-status")], [404, "error"]);
    const again = await fetch(`${url}good`, { method: "DELETE" });
    assertEquals(again.status, 404);
    assertEquals((await errorBody(again)).message, "Not Found");
  } finally {
    await close();
  }
});

Deno.test("HEAD reports staging (never another Pacifica status) while a cart is being staged", async () => {
  const archive = await makeArchive([{ id: "a", size: 10 }]);
  // An archive that refuses connections: the cart stays in its retries for a while.
  const cartd = await openTestCartd("http://127.0.0.1:9/", { CARTD_RETRY_INTERVAL: "10s" });
  const { url, close } = serveApp(cartd);
  try {
    await (await post(`${url}s`, JSON.stringify(archive.request))).body?.cancel();
    const head = await fetch(`${url}s`, { method: "HEAD" });
    assertEquals(head.status, 204);
    assertEquals(head.headers.get("x-pacifica-status"), "staging");
    assertMatch(head.headers.get("x-pacifica-message")!, /^(|Waiting for the archive since .*)$/);
    assert(["waiting", "staging"].includes(head.headers.get("x-cartd-phase")!));
    assertEquals(head.headers.get("x-cartd-files"), "0/1");

    const get = await fetch(`${url}s`);
    assertEquals(get.status, 202);
    assertEquals(await get.text(), "The cart is not ready for download.");
  } finally {
    await close();
  }
});

Deno.test("GET: the tar with its headers, 404 JSON for unknown carts, 500 with the message for failed ones", async () => {
  const { url, archive, close } = await setup();
  try {
    await (await post(`${url}g`, JSON.stringify(archive.request))).body?.cancel();
    await waitReady(`${url}g`);
    const got = await fetch(`${url}g?filename=results.tar`);
    assertEquals(got.status, 200);
    assertEquals(got.headers.get("content-type"), "application/octet-stream");
    assertEquals(got.headers.get("content-disposition"), 'attachment; filename="results.tar"');
    assertEquals(got.headers.get("accept-ranges"), "bytes");
    assertMatch(got.headers.get("etag")!, /^"[0-9a-f]{32}"$/);
    assert(got.headers.get("last-modified"));
    const tar = new Uint8Array(await got.arrayBuffer());
    assertEquals(Number(got.headers.get("content-length")), tar.length);
    assertEquals((await listWithPython(tar)).map((m) => m.name), [
      "results",
      "results/b",
      "results/dir",
      "results/dir/a.txt",
    ]);

    const defaultName = await fetch(`${url}g`);
    assertMatch(
      defaultName.headers.get("content-disposition")!,
      /^attachment; filename="data_\d{4}(_\d{2}){5}\.tar"$/,
    );
    await defaultName.body?.cancel();

    const ellipsis = await fetch(`${url}g?filename=${encodeURIComponent("….tar")}`);
    assertEquals(
      ellipsis.headers.get("content-disposition"),
      `attachment; filename="_.tar"; filename*=UTF-8''%E2%80%A6.tar`,
    );
    await ellipsis.body?.cancel();

    const hostile = await fetch(
      `${url}g?filename=${encodeURIComponent("../../etc/x\r\nSet-Cookie: a=b.tar")}`,
    );
    assertEquals(hostile.status, 200);
    assertEquals(hostile.headers.get("set-cookie"), null);
    const disposition = hostile.headers.get("content-disposition")!;
    assert(!disposition.includes("/") && !disposition.includes("\n"), disposition);
    const names = (await listWithPython(new Uint8Array(await hostile.arrayBuffer()))).map((m) =>
      m.name
    );
    assert(
      names.every((n) => !n.startsWith("..") && !n.startsWith("/") && n.split("/")[0] === names[0]),
      names.join(),
    );

    const unknown = await fetch(`${url}nope`);
    assertEquals(unknown.status, 404);
    assertEquals(
      (await errorBody(unknown)).message,
      "The cart does not exist or has already been deleted",
    );

    const bad = structuredClone(archive.request);
    bad.fileids[0].hashsum = "0".repeat(40);
    await (await post(`${url}bad`, JSON.stringify(bad))).body?.cancel();
    await waitReady(`${url}bad`);
    const failed = await fetch(`${url}bad`);
    assertEquals(failed.status, 500);
    assertMatch(
      (await errorBody(failed)).message,
      /^Failed to pull file\(dir\/a\.txt: File hash does not match/,
    );
  } finally {
    await close();
  }
});

Deno.test("extensions: /-/carts/<uid> gives the status JSON, /-/health answers for the database", async () => {
  const { url, archive, cartd, close } = await setup();
  let closed = false;
  try {
    await (await post(`${url}e`, JSON.stringify(archive.request))).body?.cancel();
    await waitReady(`${url}e`);
    const detail = await fetch(`${url}-/carts/e`);
    assertEquals(detail.status, 200);
    const body = await detail.json();
    assertEquals([body.uid, body.status, body.files.length], ["e", "ready", 2]);
    assertEquals(Object.keys(body.files[0]).sort(), [
      "attempts",
      "bytesPulled",
      "error",
      "fromCache",
      "hashtype",
      "id",
      "path",
      "polls",
      "size",
      "state",
      "verified",
    ]);
    assertEquals((await fetch(`${url}-/carts/nope`)).status, 404);

    const health = await fetch(`${url}-/health`);
    const report = await health.json();
    assertEquals(health.status, 200);
    assertEquals(
      [report.status, report.database.status, report.archive.status, report.volume.status],
      ["ok", "ok", "ok", "ok"],
    );

    await close();
    closed = true;
    // Reopened handler over a closed database: health must say so.
    const downloads = new Downloads();
    const handler = createApp({ ...cartd, downloads });
    const down = await handler(new Request(`${url}-/health`));
    assertEquals(down.status, 503);
    const downReport = await down.json();
    assertEquals([downReport.status, downReport.database.status], ["unavailable", "unavailable"]);
    assertEquals(downReport.archive.status, "ok", "the parts are reported apart");
  } finally {
    if (!closed) await close();
  }
});

Deno.test("headers carry any message: Latin-1 as is, other characters readable, the exact text in the JSON", async () => {
  const files = [{ id: "données…数据", path: "données/数据.bin", size: 10 }];
  await withSimulator(
    files,
    {},
    { CARTD_RETRY_LIMIT: "2" },
    async ({ archive, simulator, cartd }) => {
      const { url, close } = serveApp(cartd);
      try {
        const missing = { fileids: [{ id: "absent", path: "x", hashtype: "md5", hashsum: "" }] };
        const wrong = structuredClone(archive.request);
        wrong.fileids[0].hashsum = "0".repeat(40);
        for (const [uid, request] of [["missing", missing], ["données", wrong]] as const) {
          await (await post(`${url}${encodeURIComponent(uid)}`, JSON.stringify(request))).body
            ?.cancel();
          await waitReady(`${url}${encodeURIComponent(uid)}`);
        }

        const exact = {
          missing: /^Failed to pull file\(x: archive .* No such file or directory: '…' \(gave up/,
          données: /^Failed to pull file\(données\/数据\.bin: File hash does not match/,
        };
        const inHeader = {
          missing:
            /^Failed to pull file\(x: archive .* No such file or directory: '\.\.\.' \(gave up/,
          données: /^Failed to pull file\(données\/\\u6570\\u636e\.bin: File hash does not match/,
        };
        for (const uid of ["missing", "données"] as const) {
          const cartUrl = `${url}${encodeURIComponent(uid)}`;
          const head = await fetch(cartUrl, { method: "HEAD" });
          assertEquals(head.status, 500);
          assertEquals(head.headers.get("x-pacifica-status"), "error");
          assertMatch(head.headers.get("x-pacifica-message")!, inHeader[uid]);

          // What the Pacifica downloader reads: both headers on the 500, decoded as Latin-1.
          const python = await new Deno.Command("python3", {
            args: ["-c", pythonHead, cartUrl.replace(/^http:\/\//, "")],
          }).output();
          assert(python.success, new TextDecoder().decode(python.stderr));
          const [status, pacificaStatus, message] = new TextDecoder().decode(python.stdout)
            .trimEnd().split("\n");
          assertEquals([status, pacificaStatus], ["500", "error"]);
          assertMatch(message, inHeader[uid]);

          const got = await fetch(cartUrl);
          assertEquals(got.status, 500);
          assertMatch((await errorBody(got)).message, exact[uid]);
          const detail = await (await fetch(`${url}-/carts/${encodeURIComponent(uid)}`)).json();
          assertMatch(detail.message, exact[uid]);
          const cli = await runCli(["status", uid, "--json"], {
            env: cartdEnv(cartd.dir, simulator.url),
          });
          assertMatch(JSON.parse(cli.stdout).message, exact[uid]);
        }

        const unknown = await fetch(`${url}${encodeURIComponent("数据…")}`, { method: "HEAD" });
        assertEquals(unknown.status, 404);
        assertEquals(
          unknown.headers.get("x-pacifica-message"),
          "No cart with uid \\u6570\\u636e... found",
        );
      } finally {
        await close();
      }
    },
  );
});

/** HEAD with Python's http.client (what requests uses), printing status and both headers. */
const pythonHead = `import http.client, sys
host, _, path = sys.argv[1].partition("/")
c = http.client.HTTPConnection(host)
c.request("HEAD", "/" + path)
r = c.getresponse()
print(r.status)
print(r.headers["X-Pacifica-Status"])
print(r.headers["X-Pacifica-Message"])`;
