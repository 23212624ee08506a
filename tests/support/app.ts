/** The HTTP app of an in-process cartd on a loopback port, with workers and housekeeping behind it. */
import { createApp } from "../../src/http/app.ts";
import { Downloads } from "../../src/http/downloads.ts";
import type { TestCartd } from "./cartd.ts";

/** Serves `cartd` as `cartd serve` does; `housekeepingMs` sets how often it sweeps. */
export function serveApp(cartd: TestCartd, housekeepingMs?: number) {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    createApp({
      service: cartd.service,
      site: cartd.site,
      config: cartd.config,
      downloads: new Downloads(),
    }),
  );
  const stop = new AbortController();
  const worker = cartd.worker();
  const working = worker.run(stop.signal);
  cartd.housekeeping.start(housekeepingMs);
  return {
    url: `http://127.0.0.1:${server.addr.port}/`,
    /** Stops the server, the worker and the housekeeping, then closes the cartd. */
    async close() {
      stop.abort();
      await cartd.housekeeping.stop();
      await server.shutdown();
      await working;
      await worker.releaseLeases();
      await cartd.close();
    },
  };
}
