/**
 * `cartd serve`: the Pacifica cartd REST contract with `Deno.serve`, and staging workers in the same
 * process. SIGTERM or SIGINT stops new connections, lets running downloads finish (up to
 * `shutdown_timeout`), hands back the workers' claims and exits 0. SIGHUP reads the configuration
 * again and applies what a running server can change.
 */
import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { openCartd } from "../src/cartd.ts";
import { type Config, reloadConfig } from "../src/config.ts";
import { CartdError, describe } from "../src/errors.ts";
import { createApp, type Handler } from "../src/http/app.ts";
import { AccessControl } from "../src/http/auth.ts";
import { shownUrl } from "../src/cart/notifier.ts";
import { Downloads } from "../src/http/downloads.ts";
import { batchLogLines, configureLog, log } from "../src/log.ts";
import { observeSite } from "../src/metrics.ts";
import { sleep } from "../src/time.ts";
import { configSources, type GlobalOptions, resolveConfig } from "./context.ts";

/** Resolves with `value` after `ms`. */
const after = <T>(ms: number, value: T) => sleep(ms).then(() => value);

const hostLabel = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
const hostName = new RegExp(`^(?=.{1,253}$)${hostLabel}(\\.${hostLabel})*\\.?$`);

/** An IPv4 or IPv6 address, or a host name; anything else is a usage error. */
function address(value: string): string {
  const ipv4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(value);
  if (ipv4) {
    if (ipv4.slice(1).every((octet) => Number(octet) <= 255)) return value;
  } else if (value.includes(":")) {
    if (URL.canParse(`http://[${value}]/`)) return value;
  } else if (hostName.test(value)) return value;
  throw new InvalidArgumentError("not an IP address or host name (e.g. 127.0.0.1, ::1, myhost)");
}

function port(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) throw new InvalidArgumentError("not a valid port number");
  return n;
}

/** `http://host:port/`, with an IPv6 address in brackets. */
function listenUrl(hostname: string, port: number): string {
  return `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}/`;
}

/** A one-line error for an address cartd cannot listen on, naming it. */
function listenError(err: unknown, address: string, port: number): CartdError {
  const where = listenUrl(address, port).replace(/^http:\/\/|\/$/g, "");
  const why = err instanceof Deno.errors.AddrInUse
    ? "the address is already in use (is another cartd serve running?)"
    : err instanceof Deno.errors.AddrNotAvailable
    ? "this machine has no such address"
    : err instanceof Deno.errors.PermissionDenied
    ? "permission denied (ports below 1024 need privileges)"
    : describe(err);
  return new CartdError("failure", `cannot listen on ${where}: ${why}`);
}

/** Applies a new configuration on SIGHUP, logging what changed and what needs a restart. */
function reload(config: Config, globals: GlobalOptions, flags: Record<string, string | undefined>) {
  try {
    const changes = reloadConfig(config, configSources(globals, flags));
    configureLog({ level: config.logLevel, format: config.logFormat });
    if (changes.applied.length) log.info(`SIGHUP: now in effect: ${changes.applied.join(", ")}`);
    if (changes.needRestart.length) {
      log.warn(`SIGHUP: restart cartd serve to apply ${changes.needRestart.join(", ")}`);
    }
    if (!changes.applied.length && !changes.needRestart.length) {
      log.info("SIGHUP: configuration read again; nothing changed");
    }
  } catch (err) {
    log.error(`SIGHUP: configuration not reloaded, the running one stays: ${describe(err)}`);
  }
}

/** The `serve` subcommand: flags and output only, the service does the work. */
export function serveCommand(globals: () => GlobalOptions) {
  return new Command("serve")
    .description("serve the Pacifica cartd REST API and stage carts in the background")
    .option("-p, --port <port>", "port to listen on (0 picks a free one)", port, 8081)
    .option("-a, --address <address>", "address to listen on", address, "127.0.0.1")
    .option("--workers <n>", "files staged and pulled at once ([cartd] workers)")
    .action(async (options) => {
      batchLogLines();
      const flags = { "cartd.workers": options.workers };
      const config = resolveConfig(globals(), flags);
      // A tokens file that is unsafe or malformed stops start-up; later, the tokens in force stay.
      let lastTokenError = "";
      const access = new AccessControl(config, (err) => {
        const message = describe(err);
        if (message === lastTokenError) return;
        lastTokenError = message;
        log.error(`tokens file not reloaded, the tokens in force stay: ${message}`);
      });
      // Listen first, so a taken address is reported before anything is written; requests that
      // arrive before the database is open are told to come back.
      let handler: Handler = () =>
        Promise.resolve(new Response("Starting", { status: 503, headers: { "retry-after": "1" } }));
      let listening: Deno.NetAddr | undefined;
      let server: Deno.HttpServer<Deno.NetAddr>;
      try {
        server = Deno.serve({
          hostname: options.address,
          port: options.port,
          onListen: (addr) => listening = addr,
          onError: (err) => {
            log.error(`request failed: ${describe(err)}`);
            return new Response("Internal error", { status: 500 });
          },
        }, (req, info) => handler(req, info));
      } catch (err) {
        throw listenError(err, options.address, options.port);
      }
      let cartd;
      try {
        cartd = await openCartd(config, { create: true });
      } catch (err) {
        await server.shutdown();
        throw err;
      }
      const worker = cartd.worker();
      const downloads = new Downloads();
      handler = createApp({
        service: cartd.service,
        site: cartd.site,
        config: cartd.config,
        downloads,
        access,
      });
      observeSite(() => cartd.site.figures());
      log.info(
        `access control: ${access.enabled ? `on (${config.tokensFile})` : "off"}; notifications: ${
          config.notifyUrls.length ? config.notifyUrls.map(shownUrl).join(", ") : "none"
        }; archive: ${cartd.site.archiveName}; database: ${cartd.site.databaseName}`,
      );
      // The first line on stdout, for scripts that pick port 0.
      const addr = listening ?? server.addr;
      console.log(`cartd listening on ${listenUrl(addr.hostname, addr.port)}`);

      const stopWorkers = new AbortController();
      const working = worker.run(stopWorkers.signal).catch((err) => {
        log.error(`workers stopped: ${describe(err)}`);
      });
      cartd.housekeeping.start();
      const notifier = cartd.notifier();
      notifier.start();

      const onHup = () => {
        reload(cartd.config, globals(), flags);
        try {
          access.reload();
          lastTokenError = "";
          if (access.enabled) log.info("SIGHUP: tokens file read again");
        } catch (err) {
          log.error(`SIGHUP: tokens file not reloaded, the tokens in force stay: ${describe(err)}`);
        }
      };
      Deno.addSignalListener("SIGHUP", onHup);
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
      Deno.removeSignalListener("SIGHUP", onHup);

      stopWorkers.abort();
      const sweptUp = cartd.housekeeping.stop();
      const notified = notifier.stop();
      const finished = server.shutdown().then(() => true);
      const inTime = await Promise.race([finished, after(cartd.config.shutdownTimeout, false)]);
      if (!inTime) {
        log.warn(`ending ${downloads.size} unfinished download(s)`);
        downloads.abortAll("server shutting down");
        // A client that stopped reading can hold its connection open past that; cartd exits
        // all the same once its own work is put away (the process exit closes the socket).
        if (!(await Promise.race([finished, after(2000, false)]))) {
          log.warn("some connections are still open; exiting anyway");
        }
      }
      await working;
      await sweptUp;
      await notified;
      await worker.releaseLeases();
      await cartd.close();
      log.info("stopped");
    });
}
