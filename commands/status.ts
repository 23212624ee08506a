/** `cartd status <uid> [--json]`: the cart's status, for people or for scripts. */
import { Command } from "@commander-js/extra-typings";
import { type GlobalOptions, withCartd } from "./context.ts";
import { statusLine } from "./format.ts";

/** The `status` subcommand: flags and output only, the service does the work. */
export function statusCommand(globals: () => GlobalOptions) {
  return new Command("status")
    .description("show a cart's status: one line, or the cart and every file with --json")
    .argument("<uid>", "the cart's uid")
    .option("--json", "print the cart and each file's state, size, progress and errors as JSON")
    .action(async (uid, options) => {
      await withCartd(globals(), async ({ service }) => {
        if (!options.json) return console.log(statusLine(await service.report(uid)));
        console.log(JSON.stringify(await service.detailedReport(uid), null, 2));
      });
    });
}
