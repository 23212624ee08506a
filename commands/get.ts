/** `cartd get <uid> [-o FILE|-] [--filename NAME]`: writes a ready cart's tar. */
import { Command } from "@commander-js/extra-typings";
import { type GlobalOptions, withCartd } from "./context.ts";

/** The `get` subcommand: flags and output only, the service does the work. */
export function getCommand(globals: () => GlobalOptions) {
  return new Command("get")
    .description("write a ready cart as a tar (members rooted at NAME without its .tar)")
    .argument("<uid>", "the cart's uid")
    .option("-o, --output <file>", "where to write the tar; - for standard output (default: NAME)")
    .option("--filename <name>", "the download name, as the ?filename= of the HTTP API")
    .action(async (uid, options) => {
      await withCartd(globals(), async ({ service }) => {
        const tar = await service.download(uid, options.filename);
        const body = await tar.open();
        const output = options.output ?? `${tar.root}.tar`;
        if (output === "-") {
          try {
            await body.pipeTo(Deno.stdout.writable, { preventClose: true });
          } catch (err) {
            // The reader went away (`cartd get x -o - | head`): not cartd's failure.
            if (!(err instanceof Deno.errors.BrokenPipe)) throw err;
          }
          return;
        }
        // Written under a temporary name, so a failed download never looks like a finished one.
        const partial = `${output}.part`;
        const file = await Deno.open(partial, { write: true, create: true, truncate: true });
        try {
          await body.pipeTo(file.writable);
        } catch (err) {
          await Deno.remove(partial).catch(() => {});
          throw err;
        }
        await Deno.rename(partial, output);
        console.error(`${output}: ${tar.size} bytes, ${tar.files} files`);
      });
    });
}
