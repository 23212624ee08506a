/**
 * A longer crash soak than the test suite's: more carts, more files, more SIGKILLs of
 * `cartd serve` under load. Same checks as tests/crash_test.ts (every cart ready with exact bytes,
 * no verified file pulled again, database and volume consistent).
 *
 *   deno run -A bench/soak.ts [--carts 200] [--files 5] [--kills 20] [--seed N]
 */
import { parseArgs } from "node:util";
import { runCrashScenario } from "../tests/support/crash_scenario.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    carts: { type: "string", default: "200" },
    files: { type: "string", default: "5" },
    kills: { type: "string", default: "20" },
    seed: { type: "string", default: String(Date.now() % 100_000) },
  },
});
const scenario = {
  carts: Number(values.carts),
  filesPerCart: Number(values.files),
  kills: Number(values.kills),
  seed: Number(values.seed),
};
const f = await runCrashScenario(scenario);
console.log(JSON.stringify({ ...scenario, ...f }, null, 2));
