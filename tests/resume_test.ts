/** A foreground bundle killed mid-pull and run again pulls only what is missing. */
import { sleep } from "../src/time.ts";
import { join } from "node:path";
import { startArchiveSimulator } from "../fixtures/archive_server.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { makeArchive } from "./support/archive.ts";
import { cartdEnv, cliCommand, runCli } from "./support/cli.ts";
import { extractWithGnuTar } from "./support/tar.ts";

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

Deno.test("a bundle killed with SIGKILL mid-pull resumes without pulling verified files again", async () => {
  const archive = await makeArchive([
    { id: "a", size: 40_000 },
    { id: "b", size: 60_000 },
    { id: "slow", size: 2_000_000 },
  ]);
  const simulator = await startArchiveSimulator({
    prefix: archive.dir,
    faults: [{ op: "pull", kind: "slow", id: "slow", bytesPerSecond: 400_000 }],
  });
  const volume = await Deno.makeTempDir();
  const env = cartdEnv(volume, simulator.url);
  try {
    const created = await runCli(["create", "k", "-"], {
      env,
      stdin: JSON.stringify(archive.request),
    });
    assertEquals(created.code, 0, created.stderr);

    const child = cliCommand(["bundle", "k"], { env }).spawn();
    const partial = join(volume, "carts", "1", "partial");
    await waitFor("a and b verified, slow part-pulled", async () => {
      const status = await runCli(["status", "k", "--json"], { env });
      if (status.code !== 0) return false;
      const [a, b, slow] = JSON.parse(status.stdout).files;
      return a.state === "ready" && b.state === "ready" && slow.bytesPulled > 0;
    });
    child.kill("SIGKILL");
    await child.output();

    const mid = JSON.parse((await runCli(["status", "k", "--json"], { env })).stdout);
    assertEquals(mid.status, "staging");
    assertEquals(mid.files.map((f: { state: string }) => f.state), [
      "ready",
      "ready",
      "pulling",
    ]);

    simulator.faults = [];
    const resumed = await runCli(["bundle", "k"], { env });
    assertEquals(resumed.code, 0, resumed.stderr);
    assertEquals(simulator.count("pull", "a"), 1, "verified files are not pulled again");
    assertEquals(simulator.count("pull", "b"), 1, "verified files are not pulled again");
    assertEquals(simulator.count("pull", "slow"), 2, "the interrupted file is pulled again");

    const tar = join(await Deno.makeTempDir(), "k.tar");
    assertEquals((await runCli(["get", "k", "-o", tar, "--filename", "k"], { env })).code, 0);
    const out = await extractWithGnuTar(tar);
    for (const f of archive.files) {
      assertEquals(await Deno.readFile(join(out, "k", f.path)), f.data);
    }
    assert(!existsSync(partial), "no partial file left, nor their folder");
  } finally {
    await simulator.stop();
  }
});

function existsSync(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
