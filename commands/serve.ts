/**
 * `cartd serve`: the Pacifica cartd REST contract with `Deno.serve`, and staging workers in the same
 * process. SIGTERM or SIGINT stops new connections, lets running downloads finish (up to
 * `shutdown_timeout`), hands back the workers' claims and exits 0.
 */
import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { describe } from "../src/errors.ts";
import { createApp } from "../src/http/app.ts";
import { Downloads } from "../src/http/downloads.ts";
import { log } from "../src/log.ts";
import { staleDraftAge } from "../src/volume/gc.ts";
import { removeDeletedCarts } from "../src/volume/space.ts";
import { type GlobalOptions, openContext } from "./context.ts";

const sleep = <T>(ms: number, value: T) =>
  new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));

function count(what: string) {
  return (value: string) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n > 65535 || (what === "workers" && n === 0)) {
      throw new InvalidArgumentError(`not a valid ${what} number`);
    }
    return n;
  };
}

export function serveCommand(globals: () => GlobalOptions) {
  return new Command("serve")
    .description("serve the Pacifica cartd REST API and stage carts in the background")
    .option("-p, --port <port>", "port to listen on (0 picks a free one)", count("port"), 8081)
    .option("-a, --address <address>", "address to listen on", "127.0.0.1")
    .option("--workers <n>", "files staged and pulled at once ([cartd] workers)", count("workers"))
    .action(async (options) => {
      const context = await openContext(globals());
      if (options.workers !== undefined) context.config.workers = options.workers;
      const downloads = new Downloads();
      const handler = createApp({ ...context, downloads });
      const server = Deno.serve({
        hostname: options.address,
        port: options.port,
        onListen: ({ hostname, port }) => {
          // The first line on stdout, for scripts that pick port 0.
          console.log(`cartd listening on http://${hostname}:${port}/`);
        },
        onError: (err) => {
          log.error(`request failed: ${describe(err)}`);
          return new Response("Internal error", { status: 500 });
        },
      }, handler);

      const stopWorkers = new AbortController();
      const worker = context.worker();
      const working = worker.run(stopWorkers.signal).catch((err) => {
        log.error(`workers stopped: ${describe(err)}`);
      });

      // Every minute, what crashed processes leave: files of deleted carts whose downloads never
      // said they ended, drafts of carts whose creation was cut short, claims of dead processes.
      const sweeper = setInterval(async () => {
        try {
          await removeDeletedCarts(context.store, context.volume);
          await context.store.deleteStaleDrafts(Date.now() - staleDraftAge);
          await worker.reclaimCrashedWork();
        } catch (err) {
          log.warn(`housekeeping failed: ${describe(err)}`);
        }
      }, 60_000);

      await new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          log.info(`${signal}: shutting down; ${downloads.size} download(s) in progress`);
          Deno.removeSignalListener("SIGTERM", onTerm);
          Deno.removeSignalListener("SIGINT", onInt);
          resolve();
        };
        const onTerm = () => stop("SIGTERM");
        const onInt = () => stop("SIGINT");
        Deno.addSignalListener("SIGTERM", onTerm);
        Deno.addSignalListener("SIGINT", onInt);
      });

      stopWorkers.abort();
      clearInterval(sweeper);
      const finished = server.shutdown().then(() => true);
      const inTime = await Promise.race([finished, sleep(context.config.shutdownTimeout, false)]);
      if (!inTime) {
        log.warn(`ending ${downloads.size} unfinished download(s)`);
        downloads.abortAll("server shutting down");
        // A client that stopped reading can hold its connection open past that; cartd exits
        // all the same once its own work is put away (the process exit closes the socket).
        if (!(await Promise.race([finished, sleep(2000, false)]))) {
          log.warn("some connections are still open; exiting anyway");
        }
      }
      await working;
      await worker.releaseLeases();
      await context.close();
      log.info("stopped");
    });
}
