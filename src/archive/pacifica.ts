/**
 * The Pacifica archive-interface protocol, as the original cartd speaks it: `POST <base><id>` to
 * stage, `HEAD <base><id>` for status, `GET <base><id>` to pull. Status headers are read as the
 * real archive spells them (`X-Pacifica-Messsage` has three s and is only informational).
 */
import { type Archive, ArchiveError, type ArchiveFailure, type FileStatus } from "./archive.ts";

/** The Pacifica archive interface over HTTP, with errors classed by what they mean for retries. */
export class PacificaArchive implements Archive {
  readonly name: string;
  private readonly base: string;

  /** `timeoutMs`: longest wait for an answer's headers. */
  constructor(url: string, private readonly timeoutMs = 60_000) {
    this.base = url.endsWith("/") ? url : `${url}/`;
    // Credentials in the URL are sent (as Basic auth), never shown in messages or health.
    const shown = new URL(this.base);
    shown.username = "";
    shown.password = "";
    this.name = shown.href;
  }

  private url(id: string): string {
    return this.base + encodeURIComponent(id);
  }

  async stage(id: string, signal?: AbortSignal): Promise<void> {
    const response = await this.request("POST", id, "stage", signal);
    await response.body?.cancel();
  }

  async status(id: string, signal?: AbortSignal): Promise<FileStatus> {
    const response = await this.request("HEAD", id, "status", signal);
    await response.body?.cancel();
    return parseStatusHeaders(response.headers, id);
  }

  async open(id: string, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    const response = await this.request("GET", id, "pull", signal, false);
    if (!response.body) throw new ArchiveError(`archive sent no body for file ${id}`, "file");
    return response.body;
  }

  /** `GET` of the base URL, which the archive interface answers "Up and Running". */
  async ping(signal?: AbortSignal): Promise<void> {
    const timeout = AbortSignal.timeout(Math.min(this.timeoutMs, 10_000));
    let response: Response;
    try {
      response = await fetch(this.base, {
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (err) {
      throw new ArchiveError(`cannot reach archive ${this.name}: ${networkReason(err)}`, "outage");
    }
    await response.body?.cancel();
    if (response.status >= 500) {
      throw new ArchiveError(`archive ${this.name} answered ${response.status}`, "outage");
    }
  }

  private async request(
    method: string,
    id: string,
    what: string,
    signal?: AbortSignal,
    timeBody = true,
  ): Promise<Response> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signals = signal ? [signal, timeout] : [timeout];
    let response: Response;
    try {
      // The timeout covers the headers; a GET body is watched by the puller instead.
      response = await fetch(this.url(id), {
        method,
        signal: timeBody ? AbortSignal.any(signals) : signal,
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new ArchiveError(
        `cannot reach archive ${this.name} to ${what} file ${id}: ${networkReason(err)}`,
        "outage",
      );
    }
    if (response.ok) return response;
    const detail = await errorDetail(response);
    const answer = `${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
    const message = response.status === 404
      ? `archive ${this.name} has no file ${id} (404 on ${what})`
      : `archive ${this.name} answered ${answer} to ${what} file ${id}${
        detail ? `: ${detail}` : ""
      }`;
    throw new ArchiveError(message, failureOf(response.status, detail));
  }
}

/** Answers that ask for time: the archive is busy or timing out, not refusing this file. */
const overloaded = new Set([408, 429]);

/**
 * What an error answer means for trying again (see `ArchiveFailure`). A 502–504 usually means
 * the archive behind a proxy is down, but one file can get it while others are served: like a
 * 500, it is judged by whether the archive answers other requests.
 */
export function failureOf(status: number, detail: string): ArchiveFailure {
  if (overloaded.has(status)) return "outage";
  if (status < 500) return "permanent";
  // The real archive answers 500 for a missing id, with the backend's OSError: "[Errno 2] No
  // such file or directory" (ENOENT, by its number or its fixed text).
  if (/\[Errno 2\]|No such file or directory/.test(detail)) return "file";
  return "unknown";
}

/** Reads the archive's status headers; a malformed answer is a (transient) archive error. */
export function parseStatusHeaders(headers: Headers, id: string): FileStatus {
  const malformed = (why: string) =>
    new ArchiveError(`archive status of file ${id} is malformed: ${why}`, "file");
  const media = headers.get("x-pacifica-file-storage-media")?.trim();
  if (!media) throw malformed("no X-Pacifica-File-Storage-Media header");
  const sizeText = headers.get("x-content-length")?.trim();
  if (sizeText === undefined) throw malformed("no X-Content-Length header");
  if (!/^\d+$/.test(sizeText) || !Number.isSafeInteger(Number(sizeText))) {
    throw malformed(
      `X-Content-Length ${JSON.stringify(sizeText.slice(0, 40))} is not a byte count`,
    );
  }
  return {
    onDisk: media.toLowerCase() === "disk",
    media,
    size: Number(sizeText),
    mtime: parseMtime(headers.get("last-modified")),
  };
}

/** `Last-Modified` as the archive sends it (epoch seconds, often fractional) or an HTTP date. */
export function parseMtime(value: string | null): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.floor(Number(text));
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000);
}

/**
 * A one-line reason from an archive's error page. The archive puts a Python traceback in its JSON
 * error body; only the exception's own text is kept, with host paths blanked out.
 */
async function errorDetail(response: Response): Promise<string> {
  let text: string;
  try {
    text = (await response.text()).slice(0, 65536);
  } catch {
    return "";
  }
  let reason = text;
  try {
    const body = JSON.parse(text);
    const traceback = typeof body.traceback === "string" ? body.traceback.trim() : "";
    const last = traceback.split("\n").filter((l: string) => l.trim() !== "").pop();
    reason = last ? last.replace(/^[\w.]+(Error|Exception): /, "") : String(body.message ?? "");
  } catch {
    // Not JSON: keep the first line of whatever it was.
  }
  return reason.split("\n")[0].replace(/'\/[^']*'/g, "'…'").trim().slice(0, 200);
}

/** Reasons for the socket errors a request to the archive meets, by errno (Linux numbers). */
const socketErrors: Record<number, string> = {
  104: "connection reset",
  110: "no answer in time",
  111: "connection refused",
  101: "network unreachable",
  113: "host unreachable",
  32: "connection broken",
};

/**
 * Why a request never got an answer, in a few words. Deno's fetch says only "fetch failed" and
 * puts the socket error in its cause's message, with the errno as `(os error N)`; that number, not
 * the wording around it, decides.
 */
export function networkReason(err: unknown): string {
  if ((err as Error)?.name === "TimeoutError") return "no answer in time";
  const cause = (err as { cause?: unknown })?.cause;
  const text = [err, cause].filter((e) => e !== undefined)
    .map((e) => e instanceof Error ? e.message : String(e)).join(": ");
  const errno = /\(os error (\d+)\)/.exec(text);
  if (errno && socketErrors[Number(errno[1])]) return socketErrors[Number(errno[1])];
  if (/dns error/.test(text)) return "host name not found";
  return text.replace(/^fetch failed: /, "")
    .replace(/error sending request for url \([^)]*\): /, "").slice(0, 200);
}
