/**
 * Response helpers that keep the original's wire conventions: JSON by default, the error body
 * `{"status", "message", "traceback", "version"}` (with an empty traceback: no stack trace is ever
 * sent), and `Allow: DELETE, GET, HEAD, POST` on every answer.
 */
import { version } from "../version.ts";

export const allowedMethods = "DELETE, GET, HEAD, POST";

const reasons: Record<number, string> = {
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  206: "Partial Content",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  411: "Length Required",
  413: "Request Entity Too Large",
  415: "Unsupported Media Type",
  416: "Requested Range Not Satisfiable",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

export function statusText(status: number): string {
  return `${status} ${reasons[status] ?? ""}`.trim();
}

/** Headers every answer carries. */
export function baseHeaders(extra: HeadersInit = {}): Headers {
  const headers = new Headers({ "content-type": "application/json", allow: allowedMethods });
  for (const [name, value] of new Headers(extra)) headers.set(name, value);
  return headers;
}

export function jsonResponse(status: number, body: unknown, headers: HeadersInit = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: baseHeaders(headers) });
}

/** The original's error body, minus the traceback. */
export function errorResponse(
  status: number,
  message: string,
  headers: HeadersInit = {},
): Response {
  return jsonResponse(status, {
    status: statusText(status),
    message,
    traceback: "",
    version: `cartd ${version}`,
  }, headers);
}

/** A value safe for a response header: no control characters, bounded length. */
export function headerValue(text: string, max = 2048): string {
  // deno-lint-ignore no-control-regex
  const clean = text.replace(/[\u0000-\u001f\u007f]/g, " ");
  return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean;
}
