/**
 * Progress of a foreground bundle: a bar of files and bytes on a terminal, plain log lines
 * otherwise (so CI logs and cron mail stay readable).
 */
import type { CartReport } from "../src/cart/service.ts";
import type { FileEvent } from "../src/cart/worker.ts";
import { formatBytes } from "../src/units.ts";

/** What the foreground bundle shows while it works. */
export interface ProgressDisplay {
  onEvent(file: FileEvent, event: "state" | "progress"): void;
  stop(): void;
}

/**
 * A display that starts from the cart's progress so far. The bar's library is loaded only for a
 * terminal, so scripts do not pay for it at start.
 */
export async function progressDisplay(start: CartReport["progress"]): Promise<ProgressDisplay> {
  let ready = start.filesReady;
  const files = start.filesTotal;
  if (!Deno.stderr.isTerminal()) {
    return {
      onEvent(file, event) {
        if (event !== "state" || file.state === "staged") return;
        if (file.state === "ready") ready++;
        const detail = file.state === "error" ? `: ${file.error}` : "";
        console.error(`${file.path}: ${file.state}${detail} [${ready}/${files} files ready]`);
      },
      stop() {},
    };
  }
  const { default: cliProgress } = await import("cli-progress");
  const bar = new cliProgress.SingleBar({
    format: "{bar} {percentage}% | {ready}/{files} files | {bytes} | {phase}",
    hideCursor: true,
    stream: process.stderr,
  }, cliProgress.Presets.shades_classic);
  const pulled = new Map<number, number>();
  let doneBytes = start.bytesDone;
  bar.start(files || 1, ready, { ready, files, bytes: formatBytes(doneBytes), phase: "" });
  return {
    onEvent(file, event) {
      if (event === "progress") pulled.set(file.id, file.bytesPulled);
      if (event === "state" && file.state === "ready") {
        ready++;
        pulled.delete(file.id);
        doneBytes += file.size ?? 0;
      }
      const inFlight = [...pulled.values()].reduce((a, b) => a + b, 0);
      bar.update(ready, {
        ready,
        files,
        bytes: formatBytes(doneBytes + inFlight),
        phase: `${file.path}: ${file.state}`,
      });
    },
    stop: () => bar.stop(),
  };
}
