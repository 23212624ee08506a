/** `cartd bundle <uid>`: stages, pulls and verifies a cart's files in the foreground. */
import { Command } from "@commander-js/extra-typings";
import { CartdError, cartFailed, ExitCode } from "../src/errors.ts";
import { type Context, type GlobalOptions, withContext } from "./context.ts";
import { statusLine } from "./format.ts";
import { progressDisplay } from "./progress.ts";

/**
 * Works on the cart until it is ready or failed; resumes whatever an earlier run left. Returns the
 * exit code: 0 when ready, the cart-error code (with the cart's message) when it failed.
 */
export async function bundleInForeground(context: Context, uid: string): Promise<number> {
  const cart = await context.service.find(uid);
  if (cart.status === "staging") {
    const display = await progressDisplay(context.store, cart.id);
    const stop = new AbortController();
    const interrupt = () => stop.abort();
    Deno.addSignalListener("SIGINT", interrupt);
    Deno.addSignalListener("SIGTERM", interrupt);
    const worker = context.worker((file, event) => display.onEvent(file, event));
    let finished;
    try {
      finished = await worker.drainCart(cart.id, stop.signal);
    } finally {
      display.stop();
      Deno.removeSignalListener("SIGINT", interrupt);
      Deno.removeSignalListener("SIGTERM", interrupt);
      await worker.releaseLeases();
    }
    if (stop.signal.aborted) {
      console.error(`cartd: interrupted; run "cartd bundle ${uid}" again to carry on`);
      return 130;
    }
    if (!finished) {
      throw new CartdError(
        `cart ${uid} was deleted, replaced or evicted while it was being staged`,
        404,
        ExitCode.notFound,
      );
    }
  }
  const report = await context.service.report(uid);
  console.log(statusLine(report));
  if (report.status === "error") {
    throw cartFailed(report.message).withHint(
      `run "cartd retry ${uid}" to try its failed files again`,
    );
  }
  return ExitCode.ok;
}

export function bundleCommand(globals: () => GlobalOptions) {
  return new Command("bundle")
    .description(
      "stage, pull and verify every file of a cart in the foreground; resumes an earlier run",
    )
    .argument("<uid>", "the cart's uid")
    .action(async (uid) => {
      const code = await withContext(globals(), (context) => bundleInForeground(context, uid));
      if (code !== 0) Deno.exitCode = code;
    });
}
