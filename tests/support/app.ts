/** The HTTP app of an in-process cartd on a loopback port, with a worker staging behind it. */
import { createApp } from "../../src/http/app.ts";
import { Downloads } from "../../src/http/downloads.ts";
import type { TestCartd } from "./cartd.ts";

export function serveApp(cartd: TestCartd) {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    createApp({ ...cartd, downloads: new Downloads() }),
  );
  const stop = new AbortController();
  const working = cartd.worker().run(stop.signal);
  return {
    url: `http://127.0.0.1:${server.addr.port}/`,
    /** Stops the server and the worker, then closes the cartd. */
    async close() {
      stop.abort();
      await server.shutdown();
      await working;
      await cartd.close();
    },
  };
}
