/**
 * `GET /<uid>` for a ready cart, and `GET /-/carts/<uid>/files/<path>` for one verified file: the
 * streamed bytes with `Content-Length`, a strong `ETag`, `Last-Modified`, and a single `Range`
 * (honoured under `If-Range`), so `curl -C -` and `wget -c` can resume a broken download. A HEAD
 * gets the same headers and no body (no file is opened).
 */
import rangeParser from "range-parser";
import type { Delivered } from "../cart/delivery.ts";
import { notPrintableAscii } from "../text.ts";
import { baseHeaders, errorResponse, headerValue } from "./responses.ts";

/** `attachment; filename="NAME"`, with an RFC 5987 form when NAME is not plain ASCII. */
function contentDisposition(name: string): string {
  const ascii = name.replace(notPrintableAscii, "_").replace(/["\\]/g, "_");
  if (ascii === name) return `attachment; filename="${ascii}"`;
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

/**
 * A suffix range longer than the representation selects all of it (RFC 9110, 14.1.2), where
 * range-parser would call it unsatisfiable: such a suffix is rewritten as `0-`.
 */
function wholeForLongSuffixes(range: string, size: number): string {
  return range.replace(
    /(^\s*bytes\s*=|,)(\s*)-(\d+)/gi,
    (spec, lead: string, space: string, length: string) =>
      Number(length) > size ? `${lead}${space}0-` : spec,
  );
}

/** The answer to a GET: the whole of it, or the one range asked for. */
export async function downloadResponse(
  req: Request,
  download: Delivered,
  track: (body: ReadableStream<Uint8Array>) => ReadableStream<Uint8Array>,
): Promise<Response> {
  const { size, etag } = download;
  const lastModified = download.lastModified.toUTCString();
  const headers = baseHeaders({
    ...download.headers,
    "content-type": download.contentType,
    "content-disposition": contentDisposition(download.filename),
    "accept-ranges": "bytes",
    etag,
    "last-modified": lastModified,
  });
  const head = req.method === "HEAD";
  const body = async (start: number, end: number) =>
    head ? null : track(await download.open(start, end));

  const range = req.headers.get("range");
  const ifRange = req.headers.get("if-range");
  const rangeApplies = range !== null &&
    (ifRange === null || ifRange === etag || ifRange === lastModified);
  // A range whose last byte comes before its first makes the header invalid: it is ignored
  // (RFC 9110, 14.1.1), where range-parser would call it unsatisfiable.
  const backwards = range !== null &&
    [...range.matchAll(/(\d+)\s*-\s*(\d+)/g)].some(([, first, last]) =>
      Number(last) < Number(first)
    );
  if (rangeApplies && !backwards) {
    const ranges = rangeParser(size, wholeForLongSuffixes(range, size), { combine: true });
    if (ranges === -1) {
      const message = `Range ${headerValue(range, 200)} is outside the ${size} bytes`;
      return errorResponse(416, message, { "content-range": `bytes */${size}` });
    }
    // Several ranges or a malformed header: the whole of it, as RFC 9110 allows.
    if (ranges !== -2 && ranges.type === "bytes" && ranges.length === 1) {
      const { start, end } = ranges[0];
      headers.set("content-range", `bytes ${start}-${end}/${size}`);
      headers.set("content-length", String(end - start + 1));
      return new Response(await body(start, end + 1), { status: 206, headers });
    }
  }
  headers.set("content-length", String(size));
  return new Response(await body(0, size), { status: 200, headers });
}
