/**
 * `cartd serve` killed with SIGKILL at random moments under load (creates, pulls, downloads),
 * restarted each time: the database and the volume stay consistent, every cart finishes, and no
 * file is pulled again once it was verified. A longer run: bench/soak.ts.
 */
import { runCrashScenario } from "./support/crash_scenario.ts";

Deno.test("serve killed at random moments under load, several times: consistent, every cart finishes", async () => {
  const seed = Number(Deno.env.get("CARTD_CRASH_SEED") ?? Date.now() % 100_000);
  const scenario = { carts: 24, filesPerCart: 3, kills: 4, seed };
  const f = await runCrashScenario(scenario);
  console.log(
    `crash test (seed ${seed}): ${scenario.carts} carts, ${
      scenario.carts * scenario.filesPerCart
    } files, ` +
      `${scenario.kills} SIGKILLs, ${f.requests} creates/downloads (${f.failedRequests} cut by a kill), ` +
      `${f.pulls} pulls (${f.verifiedBeforeKill} files verified before a kill, none pulled again); ` +
      `all ready ${f.recoveryMs} ms after the last restart, ${
        (f.totalMs / 1000).toFixed(1)
      } s in all`,
  );
});
