/** `cartd delete <uid>`: removes a cart and its files. */
import { Command } from "@commander-js/extra-typings";
import { type GlobalOptions, withCartd } from "./context.ts";

/** The `delete` subcommand: flags and output only, the service does the work. */
export function deleteCommand(globals: () => GlobalOptions) {
  return new Command("delete")
    .description("delete a cart and its staged files")
    .argument("<uid>", "the cart's uid")
    .action(async (uid) => {
      await withCartd(globals(), async ({ service }) => {
        await service.delete(uid);
        console.log(`${uid}: deleted`);
      });
    });
}
