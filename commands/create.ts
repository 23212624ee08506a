/** `cartd create <uid> <request.json|->`: registers a cart from a Pacifica cart request. */
import { Command } from "@commander-js/extra-typings";
import { parseCartRequest, validateUid } from "../src/cart/request.ts";
import { invalidInput } from "../src/errors.ts";
import { bundleInForeground } from "./bundle.ts";
import { type GlobalOptions, withCartd } from "./context.ts";
import { statusLine } from "./format.ts";

/** The `create` subcommand: flags and output only, the service does the work. */
export function createCommand(globals: () => GlobalOptions) {
  return new Command("create")
    .description(
      'register a cart from a request {"fileids": [{"id", "path", "hashtype", "hashsum"}]}; ' +
        "the same request again changes nothing, a different one replaces the cart",
    )
    .argument("<uid>", "the cart's uid")
    .argument("<request>", "the request's JSON file, or - for standard input")
    .option("--wait", "also stage the cart in the foreground, as `cartd bundle` does")
    .action(async (uid, requestFile, options) => {
      // Refused input never opens the database: nothing at all is written for it.
      validateUid(uid);
      const request = parseCartRequest(await readRequest(requestFile));
      await withCartd(globals(), async (cartd) => {
        const outcome = await cartd.service.create(uid, request);
        if (outcome.retried !== undefined) {
          console.error(
            `cartd: cart ${uid} had failed; its ${outcome.retried} failed file(s) start again`,
          );
        } else if (!outcome.created) {
          console.error(`cartd: cart ${uid} already exists with this request`);
        } else if (outcome.replaced) console.error(`cartd: cart ${uid} replaced`);
        if (options.wait) return await bundleInForeground(cartd, uid);
        console.log(statusLine(await cartd.service.report(uid)));
      }, { create: true });
    });
}

async function readRequest(file: string): Promise<string> {
  try {
    if (file === "-") return await new Response(Deno.stdin.readable).text();
    return await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw invalidInput(`no such request file: ${file}`);
    throw invalidInput(`cannot read request ${file}: ${(err as Error).message}`);
  }
}
