/**
 * Progress of a foreground bundle: a bar of files and bytes on a terminal, plain log lines
 * otherwise (so CI logs and cron mail stay readable).
 */
import cliProgress from "cli-progress";
import type { CartFile } from "../src/store/store.ts";
import type { Store } from "../src/store/store.ts";
import { formatBytes } from "../src/units.ts";

export interface ProgressDisplay {
  onEvent(file: CartFile, event: "state" | "progress"): void;
  stop(): void;
}

export async function progressDisplay(store: Store, cartId: number): Promise<ProgressDisplay> {
  const p = await store.progress(cartId);
  let ready = p.filesReady;
  if (!Deno.stderr.isTerminal()) {
    return {
      onEvent(file, event) {
        if (event !== "state" || file.state === "staged") return;
        if (file.state === "ready") ready++;
        const detail = file.state === "error" ? `: ${file.error}` : "";
        console.error(`${file.path}: ${file.state}${detail} [${ready}/${p.files} files ready]`);
      },
      stop() {},
    };
  }
  const bar = new cliProgress.SingleBar({
    format: "{bar} {percentage}% | {ready}/{files} files | {bytes} | {phase}",
    hideCursor: true,
    stream: process.stderr,
  }, cliProgress.Presets.shades_classic);
  const pulled = new Map<number, number>();
  let doneBytes = p.bytesDone;
  bar.start(p.files || 1, ready, {
    ready,
    files: p.files,
    bytes: formatBytes(doneBytes),
    phase: "",
  });
  return {
    onEvent(file, event) {
      if (event === "progress") pulled.set(file.id, Number(file.bytes_pulled));
      if (event === "state" && file.state === "ready") {
        ready++;
        pulled.delete(file.id);
        doneBytes += Number(file.size ?? 0);
      }
      const inFlight = [...pulled.values()].reduce((a, b) => a + b, 0);
      bar.update(ready, {
        ready,
        files: p.files,
        bytes: formatBytes(doneBytes + inFlight),
        phase: `${file.path}: ${file.state}`,
      });
    },
    stop: () => bar.stop(),
  };
}
