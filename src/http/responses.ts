/**
 * Response helpers that keep the original's wire conventions: JSON by default, the error body
 * `{"status", "message", "traceback", "version"}` (with an empty traceback: no stack trace is ever
 * sent), and `Allow: DELETE, GET, HEAD, POST` on every answer.
 */
import { controlCharacter } from "../text.ts";
import { version } from "../version.ts";

const allowedMethods = "DELETE, GET, HEAD, POST";

const reasons: Record<number, string> = {
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  206: "Partial Content",
  400: "Bad Request",
  404: "Not Found",
  401: "Unauthorized",
  403: "Forbidden",
  405: "Method Not Allowed",
  409: "Conflict",
  411: "Length Required",
  413: "Request Entity Too Large",
  415: "Unsupported Media Type",
  416: "Requested Range Not Satisfiable",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/** `404 Not Found`: the status line text the original's error bodies carry. */
export function statusText(status: number): string {
  return `${status} ${reasons[status] ?? ""}`.trim();
}

/**
 * Headers every answer carries, with `extra` on top. Every value goes through `headerValue`, so no
 * uid, path, file name or archive message can make an invalid header.
 */
export function baseHeaders(extra: Record<string, string> = {}): Headers {
  const headers = new Headers({ "content-type": "application/json", allow: allowedMethods });
  for (const [name, value] of Object.entries(extra)) headers.set(name, headerValue(value));
  return headers;
}

const encoder = new TextEncoder();

/** A JSON answer with the headers every answer carries (its length too, for the access log). */
export function jsonResponse(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): Response {
  const bytes = encoder.encode(JSON.stringify(body));
  const all = baseHeaders(headers);
  all.set("content-length", String(bytes.length));
  return new Response(bytes, { status, headers: all });
}

/** The original's error body, minus the traceback. */
export function errorResponse(
  status: number,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return jsonResponse(status, {
    status: statusText(status),
    message,
    traceback: "",
    version: `cartd ${version}`,
  }, headers);
}

/** Typographic characters outside Latin-1 that have a plain look-alike. */
const plainForms: Record<string, string> = {
  "\u2026": "...",
  "\u2018": "'",
  "\u2019": "'",
  "\u201a": "'",
  "\u201c": '"',
  "\u201d": '"',
  "\u201e": '"',
  "\u2010": "-",
  "\u2011": "-",
  "\u2012": "-",
  "\u2013": "-",
  "\u2014": "-",
  "\u2212": "-",
  "\u2022": "*",
  "\u2192": "->",
  "\u2190": "<-",
  "\u2264": "<=",
  "\u2265": ">=",
  "\u2260": "!=",
  "\u2248": "~",
  "\u20ac": "EUR",
};

/**
 * The one way to turn text into a response header value. A header carries bytes (Latin-1, as
 * clients decode them), never line breaks: Latin-1 text passes unchanged, control characters become
 * spaces, typographic characters become their plain forms (`…` → `...`), and anything else is
 * written as a `\uXXXX` escape, so a person can still read it. At most `max` characters are kept.
 * The exact text stays in the JSON answers.
 */
export function headerValue(text: string, max = 2048): string {
  let out = "";
  for (const char of text) {
    const code = char.codePointAt(0)!;
    let piece: string;
    if (controlCharacter.test(char)) piece = " ";
    else if (code <= 0xff) piece = char;
    else piece = plainForms[char] ?? escapeCodePoint(code);
    if (out.length + piece.length > max) return `${out.slice(0, max - 3)}...`;
    out += piece;
  }
  return out;
}

function escapeCodePoint(code: number): string {
  const unit = (n: number) => `\\u${n.toString(16).padStart(4, "0")}`;
  if (code <= 0xffff) return unit(code);
  const offset = code - 0x10000;
  return unit(0xd800 + (offset >> 10)) + unit(0xdc00 + (offset & 0x3ff));
}
