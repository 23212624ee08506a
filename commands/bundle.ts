/** `cartd bundle <uid>`: stages, pulls and verifies a cart's files in the foreground. */
import { Command } from "@commander-js/extra-typings";
import type { Cartd } from "../src/cartd.ts";
import { CartdError, cartFailed, isKind } from "../src/errors.ts";
import { type GlobalOptions, withCartd } from "./context.ts";
import { statusLine } from "./format.ts";
import { progressDisplay } from "./progress.ts";

/**
 * Works on the cart until it is ready or failed, resuming whatever an earlier run left, and prints
 * its status line. Throws `cartFailed` (with the cart's message) when it failed, `interrupted` on
 * SIGINT or SIGTERM.
 */
export async function bundleInForeground(cartd: Cartd, uid: string): Promise<void> {
  let report = await cartd.service.report(uid);
  if (report.status === "staging") {
    const display = await progressDisplay(report.progress);
    const stop = new AbortController();
    // The first signal asks for a clean stop; the listeners go with it, so a second one ends the
    // process at once while claims are handed back.
    const release = () => {
      Deno.removeSignalListener("SIGINT", interrupt);
      Deno.removeSignalListener("SIGTERM", interrupt);
    };
    const interrupt = () => {
      release();
      stop.abort();
    };
    Deno.addSignalListener("SIGINT", interrupt);
    Deno.addSignalListener("SIGTERM", interrupt);
    try {
      report = await cartd.stage(uid, { signal: stop.signal, onEvent: display.onEvent });
    } catch (err) {
      if (!isKind(err, "interrupted")) throw err;
      throw new CartdError(
        "interrupted",
        `interrupted; run "cartd bundle ${uid}" again to carry on`,
      );
    } finally {
      display.stop();
      if (!stop.signal.aborted) release();
    }
  }
  console.log(statusLine(report));
  if (report.status === "error") {
    throw cartFailed(report.message).withHint(
      `run "cartd retry ${uid}" to try its failed files again`,
    );
  }
}

/** The `bundle` subcommand: flags and output only, the service does the work. */
export function bundleCommand(globals: () => GlobalOptions) {
  return new Command("bundle")
    .description(
      "stage, pull and verify every file of a cart in the foreground; resumes an earlier run",
    )
    .argument("<uid>", "the cart's uid")
    .action(async (uid) => {
      await withCartd(globals(), (cartd) => bundleInForeground(cartd, uid));
    });
}
