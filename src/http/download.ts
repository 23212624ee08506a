/**
 * `GET /<uid>` for a ready cart: the streamed tar with `Content-Length`, a strong `ETag` derived
 * from the tar layout, `Last-Modified`, and a single `Range` (honoured under `If-Range`), so
 * `curl -C -` and `wget -c` can resume a broken download.
 */
import { createHash } from "node:crypto";
import rangeParser from "range-parser";
import type { TarLayout } from "../bundle/tar.ts";
import type { Cart } from "../store/store.ts";
import { baseHeaders, errorResponse, headerValue } from "./responses.ts";

/** A strong validator: equal only for byte-identical tars. */
export function tarEtag(cart: Cart, layout: TarLayout): string {
  const hash = createHash("sha256");
  hash.update(`${cart.id}\n${cart.ready_at}\n${layout.size}\n`);
  for (const e of layout.entries) {
    const h = e.header;
    hash.update(`${h.name}\0${h.type}\0${h.size}\0${h.mode}\0${h.mtime}\n`);
  }
  return `"${hash.digest("hex").slice(0, 32)}"`;
}

/** `attachment; filename="NAME"`, with an RFC 5987 form when NAME is not plain ASCII. */
export function contentDisposition(name: string): string {
  const ascii = headerValue(name).replace(/[^\x20-\x7e]/g, "_").replace(/["\\]/g, "_");
  if (ascii === name) return `attachment; filename="${ascii}"`;
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

export interface TarDownload {
  cart: Cart;
  layout: TarLayout;
  /** The download name for the Content-Disposition header. */
  filename: string;
  /** Streams the tar's bytes [start, end). */
  body(start: number, end: number): Promise<ReadableStream<Uint8Array>>;
}

export async function downloadResponse(req: Request, download: TarDownload): Promise<Response> {
  const { cart, layout } = download;
  const size = layout.size;
  const etag = tarEtag(cart, layout);
  const lastModified = new Date(Number(cart.ready_at ?? cart.created_at)).toUTCString();
  const headers = baseHeaders({
    "content-type": "application/octet-stream",
    "content-disposition": contentDisposition(download.filename),
    "accept-ranges": "bytes",
    etag,
    "last-modified": lastModified,
  });

  const range = req.headers.get("range");
  const ifRange = req.headers.get("if-range");
  const rangeApplies = range !== null &&
    (ifRange === null || ifRange === etag || ifRange === lastModified);
  if (rangeApplies) {
    const ranges = rangeParser(size, range, { combine: true });
    if (ranges === -1) {
      const message = `Range ${headerValue(range, 200)} is outside the ${size}-byte tar`;
      return errorResponse(416, message, { "content-range": `bytes */${size}` });
    }
    // Several ranges or a malformed header: the whole tar, as RFC 9110 allows.
    if (ranges !== -2 && ranges.type === "bytes" && ranges.length === 1) {
      const { start, end } = ranges[0];
      headers.set("content-range", `bytes ${start}-${end}/${size}`);
      headers.set("content-length", String(end - start + 1));
      return new Response(await download.body(start, end + 1), { status: 206, headers });
    }
  }
  headers.set("content-length", String(size));
  return new Response(await download.body(0, size), { status: 200, headers });
}
