/**
 * `cartd get <uid> [-o FILE|-] [--filename NAME] [--format tar|zip]`: writes a ready cart's tar
 * (or zip); with `--file PATH`, one verified file of the cart (which may still be staging).
 */
import { join } from "node:path";
import { Command, Option } from "@commander-js/extra-typings";
import type { Delivered } from "../src/cart/delivery.ts";
import { CartdError, describe } from "../src/errors.ts";
import { type GlobalOptions, withCartd } from "./context.ts";

/** The `get` subcommand: flags and output only, the service does the work. */
export function getCommand(globals: () => GlobalOptions) {
  return new Command("get")
    .description(
      "write a ready cart as a tar or zip (members rooted at NAME without its .tar or .zip), " +
        "or one of its files",
    )
    .argument("<uid>", "the cart's uid")
    .option(
      "-o, --output <file>",
      "where to write it; - for standard output (default: NAME, or the file's own name)",
    )
    .option("--filename <name>", "the download name, as the ?filename= of the HTTP API")
    .addOption(
      new Option("--format <format>", "tar, or zip (stored, ZIP64 where needed)")
        .choices(["tar", "zip"] as const),
    )
    .option("--file <path>", "only this file of the cart (its path in the cart request)")
    .option(
      "--follow",
      "start at once on a cart still staging (staging it here too): each file is written as " +
        "soon as it is verified; the same tar as once the cart is ready",
    )
    .action(async (uid, options) => {
      await withCartd(globals(), async (cartd) => {
        const { service } = cartd;
        if (options.follow) {
          if (options.format === "zip" || options.file !== undefined) {
            throw new CartdError("invalid", "--follow writes the whole cart as a tar");
          }
          // Staged here too (with any server that also works on it), while the tar is written.
          const stop = new AbortController();
          const staging = cartd.stage(uid, { signal: stop.signal }).catch(() => {});
          try {
            const tar = await service.follow(uid, options.filename);
            const output = options.output ?? `${tar.root}.tar`;
            const written = await write(tar, output);
            if (written !== "-") console.error(`${written}: ${tar.size} bytes, ${tar.files} files`);
          } finally {
            stop.abort();
            await staging;
          }
          return;
        }
        if (options.file !== undefined) {
          const file = await service.fileDownload(uid, options.file);
          const output = options.output ?? file.filename;
          const written = await write(file, output);
          if (written !== "-") console.error(`${written}: ${file.size} bytes`);
          return;
        }
        const cart = await service.download(uid, options.filename, undefined, options.format);
        const output = options.output ??
          (cart.contentType === "application/zip" ? cart.filename : `${cart.root}.tar`);
        const written = await write(cart, output);
        if (written !== "-") console.error(`${written}: ${cart.size} bytes, ${cart.files} files`);
      });
    });
}

/**
 * Writes the whole of `delivered` to `output` (`-`: standard output; a folder: its own name in
 * there).
 */
async function write(delivered: Delivered, output: string): Promise<string> {
  if (output !== "-" && (await Deno.stat(output).catch(() => undefined))?.isDirectory) {
    output = join(output, delivered.filename);
  }
  if (output === "-") {
    const body = await delivered.open();
    try {
      await body.pipeTo(Deno.stdout.writable, { preventClose: true });
    } catch (err) {
      // The reader went away (`cartd get x -o - | head`): not cartd's failure.
      if (!(err instanceof Deno.errors.BrokenPipe)) throw err;
    }
    return output;
  }
  // Written under a temporary name, so a failed download never looks like a finished one; opened
  // first, so a path that cannot be written holds no download open.
  const partial = `${output}.part`;
  const file = await Deno.open(partial, { write: true, create: true, truncate: true })
    .catch((err) => {
      throw new CartdError("invalid", `cannot write ${output}: ${describe(err)}`);
    });
  try {
    await (await delivered.open()).pipeTo(file.writable);
  } catch (err) {
    await Deno.remove(partial).catch(() => {});
    throw err;
  }
  await Deno.rename(partial, output).catch(async (err) => {
    await Deno.remove(partial).catch(() => {});
    throw new CartdError("invalid", `cannot write ${output}: ${describe(err)}`);
  });
  return output;
}
