/** `cartd delete <uid>`: removes a cart and its files. */
import { Command } from "@commander-js/extra-typings";
import { type GlobalOptions, withContext } from "./context.ts";

export function deleteCommand(globals: () => GlobalOptions) {
  return new Command("delete")
    .description("delete a cart and its staged files")
    .argument("<uid>", "the cart's uid")
    .action(async (uid) => {
      await withContext(globals(), async ({ service }) => {
        await service.delete(uid);
        console.log(`${uid}: deleted`);
      });
    });
}
