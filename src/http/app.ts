/**
 * The Pacifica cartd REST contract over the cart service: `POST|HEAD|GET|DELETE /<uid>` and
 * `GET /`, plus extensions under the reserved segment `/-/`. A handler is a plain
 * `(Request) => Promise<Response>`, served by `cartd serve` and called directly by tests.
 */
import { validateCartRequest, validateUid } from "../cart/request.ts";
import type { CartService } from "../cart/service.ts";
import type { Config } from "../config.ts";
import { backendFailure, CartdError, describe, invalidInput } from "../errors.ts";
import { log } from "../log.ts";
import type { Store } from "../store/store.ts";
import { downloadResponse } from "./download.ts";
import type { Downloads } from "./downloads.ts";
import { baseHeaders, errorResponse, jsonResponse } from "./responses.ts";

export interface AppDeps {
  service: CartService;
  store: Store;
  config: Config;
  downloads: Downloads;
}

export type Handler = (req: Request) => Promise<Response>;

const jsonTypes = ["application/json", "text/javascript"];

export function createApp(deps: AppDeps): Handler {
  return async (req) => {
    try {
      return await route(req, deps);
    } catch (err) {
      if (err instanceof CartdError) return errorResponse(err.status, err.message);
      const known = backendFailure(err);
      if (known) {
        log.warn(`${req.method} ${new URL(req.url).pathname}: ${describe(err)}`);
        return errorResponse(known.status, known.message, { "retry-after": "5" });
      }
      log.error(`${req.method} ${new URL(req.url).pathname}: ${describe(err)}`);
      if (err instanceof Error && err.stack) log.debug(err.stack);
      return errorResponse(500, "Internal error; the server log has the details");
    }
  };
}

async function route(req: Request, deps: AppDeps): Promise<Response> {
  const segments = new URL(req.url).pathname.split("/").slice(1).map(decodeSegment);
  if (segments.length === 1 && segments[0] === "") return root(req);
  if (segments[0] === "-") {
    if (segments.length === 1 && req.method === "POST") validateUid("-");
    return await extension(req, segments.slice(1), deps);
  }
  if (segments.length !== 1) return errorResponse(404, "Not Found");
  const uid = segments[0];
  switch (req.method) {
    case "POST":
      return await create(req, uid, deps);
    case "HEAD":
      return await status(uid, deps);
    case "GET":
      return await download(req, uid, deps);
    case "DELETE":
      return await remove(uid, deps);
    default:
      return errorResponse(405, "Specified method is invalid for this resource");
  }
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw invalidInput("malformed percent-encoding in the URL");
  }
}

function root(req: Request): Response {
  if (req.method === "GET") {
    return jsonResponse(200, { message: "Pacifica Cartd Interface Up and Running" });
  }
  if (req.method === "HEAD") return new Response(null, { status: 200, headers: baseHeaders() });
  if (req.method === "POST") return errorResponse(404, "Missing parameters: uid");
  return errorResponse(405, "Specified method is invalid for this resource");
}

async function create(req: Request, uid: string, deps: AppDeps): Promise<Response> {
  validateUid(uid);
  if (req.body === null) return errorResponse(411, "Client must specify Content-Length");
  const type = (req.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  if (!jsonTypes.includes(type)) {
    await req.body.cancel();
    return errorResponse(
      415,
      "Expected an entity of content type application/json, text/javascript",
    );
  }
  const text = await readBody(req, deps.config.maxRequestSize);
  if (text === "") return errorResponse(411, "Client must specify Content-Length");
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw invalidInput("Invalid JSON document");
  }
  await deps.service.create(uid, validateCartRequest(body));
  return jsonResponse(201, { message: "Cart Processing has begun" });
}

/** The request body as UTF-8 text, refusing more than `limit` bytes without reading them all. */
async function readBody(req: Request, limit: number): Promise<string> {
  const tooLarge = () => new CartdError(`Request body is larger than the ${limit}-byte limit`, 413);
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) {
    await req.body?.cancel();
    throw tooLarge();
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of req.body!) {
    total += chunk.length;
    if (total > limit) throw tooLarge();
    chunks.push(chunk);
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw invalidInput("Invalid JSON document (the body is not UTF-8)");
  }
}

/** HEAD: the Pacifica status headers, plus cartd's finer detail. Never opens a file. */
async function status(uid: string, deps: AppDeps): Promise<Response> {
  const report = await deps.service.report(uid).catch((err) => {
    if (err instanceof CartdError && err.status === 404) return undefined;
    throw err;
  });
  if (!report) {
    return new Response(null, {
      status: 404,
      headers: baseHeaders({
        "x-pacifica-status": "error",
        "x-pacifica-message": `No cart with uid ${uid} found`,
      }),
    });
  }
  const failed = report.status === "error";
  return new Response(null, {
    status: failed ? 500 : 204,
    headers: baseHeaders({
      // Pacifica clients wait while this says `staging`; anything else ends their wait.
      "x-pacifica-status": report.status === "ready" || failed ? report.status : "staging",
      "x-pacifica-message": report.message,
      "x-cartd-phase": report.phase,
      "x-cartd-files": `${report.progress.filesReady}/${report.progress.filesTotal}`,
      "x-cartd-bytes": `${report.progress.bytesDone}/${report.progress.bytesTotal}`,
    }),
  });
}

async function download(req: Request, uid: string, deps: AppDeps): Promise<Response> {
  const requested = new URL(req.url).searchParams.get("filename") ?? undefined;
  let tar;
  try {
    tar = await deps.service.tarOf(uid, requested);
  } catch (err) {
    if (!(err instanceof CartdError)) throw err;
    if (err.status === 404) {
      return errorResponse(404, "The cart does not exist or has already been deleted");
    }
    if (err.status === 202) {
      return new Response("The cart is not ready for download.", {
        status: 202,
        headers: baseHeaders(),
      });
    }
    throw err;
  }
  const { cart, layout, filename } = tar;
  return await downloadResponse(req, {
    cart,
    layout,
    filename,
    body: async (start, end) =>
      deps.downloads.track(await deps.service.tarBytes(cart, layout, start, end)),
  });
}

async function remove(uid: string, deps: AppDeps): Promise<Response> {
  try {
    await deps.service.delete(uid);
  } catch (err) {
    if (err instanceof CartdError && err.status === 404) return errorResponse(404, "Not Found");
    throw err;
  }
  return jsonResponse(200, { message: "Cart Deleted Successfully" });
}

/** `/-/health` and `/-/carts/<uid>`. */
async function extension(req: Request, rest: string[], deps: AppDeps): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    return errorResponse(405, "Specified method is invalid for this resource");
  }
  if (rest.length === 1 && rest[0] === "health") {
    try {
      await deps.store.ping();
      return jsonResponse(200, { status: "ok" });
    } catch (err) {
      log.warn(`health check: database unreachable: ${describe(err)}`);
      return jsonResponse(503, { status: "unavailable", message: "database unreachable" });
    }
  }
  if (rest.length === 2 && rest[0] === "carts") {
    return jsonResponse(200, await deps.service.detailedReport(rest[1]));
  }
  return errorResponse(404, "Not Found");
}
