/** `cartd status <uid> [--json]`: the cart's status, for people or for scripts. */
import { Command } from "@commander-js/extra-typings";
import { type GlobalOptions, withContext } from "./context.ts";
import { statusLine } from "./format.ts";

export function statusCommand(globals: () => GlobalOptions) {
  return new Command("status")
    .description("show a cart's status: one line, or the cart and every file with --json")
    .argument("<uid>", "the cart's uid")
    .option("--json", "print the cart and each file's state, size, progress and errors as JSON")
    .action(async (uid, options) => {
      await withContext(globals(), async ({ service }) => {
        const report = await service.report(uid);
        if (!options.json) return console.log(statusLine(report));
        const files = await service.fileReports(await service.find(uid));
        console.log(JSON.stringify({ ...report, fileList: files }, null, 2));
      });
    });
}
