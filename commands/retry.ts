/** `cartd retry <uid>`: starts a failed cart's failed files again, keeping its verified ones. */
import { Command } from "@commander-js/extra-typings";
import { bundleInForeground } from "./bundle.ts";
import { type GlobalOptions, withCartd } from "./context.ts";
import { statusLine } from "./format.ts";

/** The `retry` subcommand: flags and output only, the service does the work. */
export function retryCommand(globals: () => GlobalOptions) {
  return new Command("retry")
    .description(
      "start a failed cart's failed files again (verified files are kept); " +
        "cartd serve or cartd bundle then stages them",
    )
    .argument("<uid>", "the cart's uid")
    .option("--wait", "also stage the cart in the foreground, as `cartd bundle` does")
    .action(async (uid, options) => {
      await withCartd(globals(), async (cartd) => {
        const restarted = await cartd.service.retry(uid);
        if (restarted === 0) {
          const report = await cartd.service.report(uid);
          console.error(`cartd: cart ${uid} has not failed; nothing to retry`);
          console.log(statusLine(report));
          return;
        }
        console.error(`cartd: ${restarted} failed file(s) of cart ${uid} start again`);
        if (options.wait) return await bundleInForeground(cartd, uid);
        console.log(statusLine(await cartd.service.report(uid)));
      });
    });
}
