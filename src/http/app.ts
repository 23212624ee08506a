/**
 * The Pacifica cartd REST contract over the cart service: `POST|HEAD|GET|DELETE /<uid>` and
 * `GET /`, plus extensions under the reserved segment `/-/`. A handler is a plain
 * `(Request) => Promise<Response>`, served by `cartd serve` and called directly by tests.
 */
import { parseCartRequest, validateUid } from "../cart/request.ts";
import type { CartService, Viewer } from "../cart/service.ts";
import type { Delivered } from "../cart/delivery.ts";
import { type AccessControl, authChallenge, type Need } from "./auth.ts";
import { healthSummary, type SiteStatus } from "../cart/site.ts";
import { renderMetrics } from "../metrics.ts";
import type { Config } from "../config.ts";
import { CartdError, describe, invalidInput, isKind } from "../errors.ts";
import { log } from "../log.ts";
import { RequestRecord, TrustedProxies } from "./access.ts";
import { downloadResponse } from "./download.ts";
import type { Downloads } from "./downloads.ts";
import { httpStatus, retryAfter } from "./errors.ts";
import { baseHeaders, errorResponse, jsonResponse } from "./responses.ts";

/**
 * What the handlers need: the cart service, the site's health, the configuration, the server's
 * live downloads.
 */
export interface AppDeps {
  service: CartService;
  site: SiteStatus;
  /** Tokens, when `[auth] tokens_file` is set; without, every route is open. */
  access?: AccessControl;
  config: Config;
  downloads: Downloads;
}

/** A request handler, as `Deno.serve` takes it. */
export type Handler = (req: Request, info?: { remoteAddr: Deno.Addr }) => Promise<Response>;

const jsonTypes = ["application/json", "text/javascript"];

/**
 * The handler for every route; no error escapes it, and none carries a stack trace. Every answer
 * carries its request's id in `X-Request-Id`, and every request gets an access log line.
 */
export function createApp(deps: AppDeps): Handler {
  let proxies = new TrustedProxies(deps.config.trustedProxies);
  let proxiesFrom = deps.config.trustedProxies;
  return async (req, info) => {
    // The configuration may be reloaded (SIGHUP) under a running handler.
    if (proxiesFrom !== deps.config.trustedProxies) {
      proxies = new TrustedProxies(deps.config.trustedProxies);
      proxiesFrom = deps.config.trustedProxies;
    }
    const peer = info?.remoteAddr.transport === "tcp" ? info.remoteAddr.hostname : undefined;
    const record = new RequestRecord(req, peer, proxies);
    let response = await answer(req, deps, record);
    if (req.method === "HEAD") response = await withPacificaHeaders(response);
    response.headers.set("x-request-id", record.id);
    if (!streamedAnswers.has(response)) record.answered(response);
    return response;
  };
}

/** Answers whose body is streamed: their access line is written when the body ends. */
const streamedAnswers = new WeakSet<Response>();

/**
 * A HEAD answer that says no more than its status (a malformed URL, a path that is no cart) still
 * carries both Pacifica headers: the downloader reads them on every answer and fails without.
 */
async function withPacificaHeaders(response: Response): Promise<Response> {
  if (response.status < 400 || response.headers.has("x-pacifica-status")) return response;
  const body = await response.json().catch(() => ({}));
  const headers = new Headers(response.headers);
  const pacifica = baseHeaders({
    "x-pacifica-status": "error",
    "x-pacifica-message": typeof body.message === "string" ? body.message : response.statusText,
  });
  for (const name of ["x-pacifica-status", "x-pacifica-message"]) {
    headers.set(name, pacifica.get(name)!);
  }
  return new Response(null, { status: response.status, headers });
}

/** The route's answer, or the error it threw as a JSON error answer. */
async function answer(req: Request, deps: AppDeps, record: RequestRecord): Promise<Response> {
  try {
    return await route(req, deps, record);
  } catch (err) {
    const where = `${req.method} ${new URL(req.url).pathname} (request ${record.id})`;
    const fields = { requestId: record.id, uid: record.uid, route: record.route };
    if (err instanceof CartdError) {
      const wait = retryAfter[err.kind];
      if (wait !== undefined) log.warn(`${where}: ${describe(err)}`, fields);
      const headers: Record<string, string> = wait ? { "retry-after": String(wait) } : {};
      return errorResponse(httpStatus[err.kind], err.message, headers);
    }
    log.error(`${where}: ${describe(err)}`, fields);
    if (err instanceof Error && err.stack) log.debug(err.stack, fields);
    return errorResponse(500, "Internal error; the server log has the details");
  }
}

async function route(req: Request, deps: AppDeps, record: RequestRecord): Promise<Response> {
  const segments = record.path.split("/").slice(1).map(decodeSegment);
  record.route = routeOf(req.method, segments);
  if (segments.length === 1 && segments[0] !== "" && segments[0] !== "-") {
    record.uid = segments[0];
  }
  if (segments.length >= 3 && segments[0] === "-" && segments[1] === "carts") {
    record.uid = segments[2];
  }
  const admission = deps.access?.admit(req, needOf(req.method, segments)) ?? { admitted: true };
  if (!admission.admitted) {
    const challenge: Record<string, string> = admission.status === 401
      ? { "www-authenticate": authChallenge }
      : {};
    return errorResponse(admission.status, admission.message, challenge);
  }
  const caller = admission.caller;
  record.user = caller?.name;
  const viewer = caller && { name: caller.name, seesAll: caller.role === "admin" };
  if (segments.length === 1 && segments[0] === "") return root(req);
  if (segments[0] === "-") {
    if (segments.length === 1 && req.method === "POST") validateUid("-");
    return await extension(req, segments.slice(1), deps, record, viewer);
  }
  if (segments.length !== 1) return errorResponse(404, "Not Found");
  const uid = segments[0];
  switch (req.method) {
    case "POST":
      return await create(req, uid, deps, viewer);
    case "HEAD":
      return await status(uid, deps, viewer);
    case "GET":
      return await download(req, uid, deps, record, viewer);
    case "DELETE":
      return await remove(uid, deps, viewer);
    default:
      return errorResponse(405, "Specified method is invalid for this resource");
  }
}

/** Methods a route label names; any other is `other`, so no client can add label values. */
const labelledMethods = new Set(["GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"]);

/** The route's pattern for logs and metrics (`GET /{uid}`), from a bounded set of values. */
function routeOf(method: string, segments: string[]): string {
  const verb = labelledMethods.has(method) ? method : "other";
  if (segments.length === 1) return segments[0] === "" ? `${verb} /` : `${verb} /{uid}`;
  if (segments[0] === "-") {
    if (segments.length === 3 && segments[1] === "carts") return `${verb} /-/carts/{uid}`;
    if (segments.length === 4 && segments[1] === "carts" && segments[3] === "files") {
      return `${verb} /-/carts/{uid}/files`;
    }
    if (segments.length === 4 && segments[1] === "carts" && segments[3] === "tar") {
      return `${verb} /-/carts/{uid}/tar`;
    }
    if (segments.length > 4 && segments[1] === "carts" && segments[3] === "files") {
      return `${verb} /-/carts/{uid}/files/{path}`;
    }
    if (segments.length === 2 && ["health", "metrics"].includes(segments[1])) {
      return `${verb} /-/${segments[1]}`;
    }
  }
  return "other";
}

/**
 * What a route needs of its caller when access control is on: `GET /` and `/-/health` are open,
 * creating and deleting carts needs a writer, the metrics an admin, the rest a reader.
 */
function needOf(method: string, segments: string[]): Need {
  const reading = method === "GET" || method === "HEAD";
  if (reading && segments.length === 1 && segments[0] === "") return "nothing";
  if (segments[0] === "-") {
    if (segments[1] === "health" && segments.length === 2 && reading) return "nothing";
    if (segments[1] === "metrics" && segments.length === 2) return "admin";
    return "read";
  }
  return method === "POST" || method === "DELETE" ? "write" : "read";
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

async function create(
  req: Request,
  uid: string,
  deps: AppDeps,
  viewer?: Viewer,
): Promise<Response> {
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
  await deps.service.create(uid, parseCartRequest(text), viewer);
  return jsonResponse(201, { message: "Cart Processing has begun" });
}

/** The request body as UTF-8 text, refusing more than `limit` bytes without reading them all. */
async function readBody(req: Request, limit: number): Promise<string> {
  const tooLarge = () =>
    new CartdError("tooLarge", `Request body is larger than the ${limit}-byte limit`);
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
async function status(uid: string, deps: AppDeps, viewer?: Viewer): Promise<Response> {
  const report = await deps.service.report(uid, viewer).catch((err) => {
    if (isKind(err, "notFound")) return undefined;
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

async function download(
  req: Request,
  uid: string,
  deps: AppDeps,
  record: RequestRecord,
  viewer?: Viewer,
): Promise<Response> {
  const params = new URL(req.url).searchParams;
  const requested = params.get("filename") ?? undefined;
  const format = params.get("format")?.toLowerCase();
  if (format !== undefined && format !== "tar" && format !== "zip") {
    throw invalidInput(`format must be tar or zip, not ${JSON.stringify(format.slice(0, 50))}`);
  }
  if (format === "tar" && /\.zip$/i.test(requested ?? "")) {
    throw invalidInput("filename names a zip, but format is tar");
  }
  try {
    const download = await deps.service.download(uid, requested, viewer, format);
    return await streamedResponse(req, download, deps, record);
  } catch (err) {
    if (isKind(err, "notFound")) {
      return errorResponse(404, "The cart does not exist or has already been deleted");
    }
    if (isKind(err, "notReady")) {
      const text = "The cart is not ready for download.";
      return new Response(text, {
        status: 202,
        headers: baseHeaders({ "content-length": String(text.length) }),
      });
    }
    throw err;
  }
}

/** The answer for something to download, its body counted as a download and logged at its end. */
async function streamedResponse(
  req: Request,
  delivered: Delivered,
  deps: AppDeps,
  record: RequestRecord,
): Promise<Response> {
  let status = 0;
  let tracked = false;
  const response = await downloadResponse(req, delivered, (body) => {
    tracked = true;
    return deps.downloads.track(body, (end) => record.streamed(status, end));
  });
  status = response.status;
  // An answer without a body (416, a HEAD) is logged as it is sent.
  if (tracked) streamedAnswers.add(response);
  return response;
}

async function remove(uid: string, deps: AppDeps, viewer?: Viewer): Promise<Response> {
  try {
    await deps.service.delete(uid, viewer);
  } catch (err) {
    if (isKind(err, "notFound")) return errorResponse(404, "Not Found");
    throw err;
  }
  return jsonResponse(200, { message: "Cart Deleted Successfully" });
}

/** `/-/health`, `/-/metrics`, `/-/carts/<uid>` and its files. */
async function extension(
  req: Request,
  rest: string[],
  deps: AppDeps,
  record: RequestRecord,
  viewer?: Viewer,
): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    return errorResponse(405, "Specified method is invalid for this resource");
  }
  if (rest.length === 1 && rest[0] === "health") {
    const health = await deps.site.health();
    const status = health.status === "unavailable" ? 503 : 200;
    // With tokens on, health is open to all: its detail (URLs, paths, errors) only to admins.
    const detailed = !deps.access?.enabled || viewer?.seesAll;
    return jsonResponse(status, detailed ? health : healthSummary(health));
  }
  if (rest.length === 1 && rest[0] === "metrics") {
    const { body, contentType } = await renderMetrics();
    const bytes = new TextEncoder().encode(body);
    return new Response(bytes, {
      status: 200,
      headers: baseHeaders({ "content-type": contentType, "content-length": String(bytes.length) }),
    });
  }
  if (rest.length === 2 && rest[0] === "carts") {
    return jsonResponse(200, await deps.service.detailedReport(rest[1], viewer));
  }
  if (rest.length === 3 && rest[0] === "carts" && rest[2] === "tar") {
    const params = new URL(req.url).searchParams;
    const requested = params.get("filename") ?? undefined;
    // A zip needs every file's CRC-32 before its first byte: only a tar can follow staging.
    if (
      (params.get("format") ?? "tar").toLowerCase() !== "tar" || /\.zip$/i.test(requested ?? "")
    ) {
      throw invalidInput("a download that follows a cart's staging is a tar (format=tar)");
    }
    const tar = await deps.service.follow(rest[1], requested, viewer);
    return await streamedResponse(req, tar, deps, record);
  }
  if (rest.length === 3 && rest[0] === "carts" && rest[2] === "files") {
    return jsonResponse(200, await deps.service.fileList(rest[1], viewer));
  }
  if (rest.length >= 4 && rest[0] === "carts" && rest[2] === "files") {
    // The path's segments, each percent-decoded: `/` may be written as is or as %2F.
    const path = rest.slice(3).join("/");
    return await streamedResponse(
      req,
      await deps.service.fileDownload(rest[1], path, viewer),
      deps,
      record,
    );
  }
  return errorResponse(404, "Not Found");
}
