/**
 * Line-oriented logging to stderr, so stdout stays free for command output (a tar on
 * `cartd get -o -`, JSON on `--json`). Readable text by default; `log_format = json` gives one
 * JSON object per line for log shippers. The level and format come from the configuration
 * (`CARTD_LOG`, `CARTD_LOG_FORMAT`); until it is read, `CARTD_LOG` is taken as it is, if valid.
 */

/** Log levels, most severe first. */
export const logLevels = ["error", "warn", "info", "debug"] as const;
export type LogLevel = typeof logLevels[number];
export const logFormats = ["text", "json"] as const;
export type LogFormat = typeof logFormats[number];

/** What a line may say besides its message; JSON lines carry each as a field. */
export interface LogFields {
  /** The cart the line is about. */
  uid?: string;
  /** The HTTP request the line is about (also sent as `X-Request-Id`). */
  requestId?: string;
  /** `METHOD /route`, the route's pattern rather than the path (`GET /{uid}`). */
  route?: string;
  status?: number;
  /** Milliseconds. */
  duration?: number;
  /** Bytes sent in a response body, or a cart's size. */
  bytes?: number;
  /** Where a request came from. */
  client?: string;
  /** The name of the token a request came with (never the token). */
  user?: string;
}

const rank: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

let threshold = rank[levelFrom(earlyEnv("CARTD_LOG")) ?? "info"];
let format: LogFormat = "text";
const encoder = new TextEncoder();

/**
 * An environment variable read before the configuration is: undefined where Deno may not read the
 * environment (the configuration then says so, clearly).
 */
export function earlyEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** A log level named by `text` (any case), or undefined. */
export function levelFrom(text: string | undefined): LogLevel | undefined {
  const word = text?.trim().toLowerCase();
  return logLevels.find((level) => level === word);
}

/** Applies the configured level and format (at start, and again on SIGHUP). */
export function configureLog(options: { level: LogLevel; format: LogFormat }): void {
  threshold = rank[options.level];
  format = options.format;
}

/** Whether lines of `level` are written now (to skip building costly ones). */
export function logs(level: LogLevel): boolean {
  return rank[level] <= threshold;
}

/** Lines not written yet: they go out together, once per turn of the event loop. */
let pending: string[] = [];
let flushing = false;
/**
 * Whether lines wait for the end of the turn (`cartd serve`, where an access line per request
 * would cost a write each); a command's lines go out at once, in order with what it prints.
 */
let batched = false;

/** Writes lines together once per turn of the event loop (for a server). */
export function batchLogLines(): void {
  batched = true;
}

/** Writes every pending line now (also done at exit, and at once for errors). */
export function flushLog(): void {
  flushing = false;
  if (pending.length === 0) return;
  const bytes = encoder.encode(pending.join(""));
  pending = [];
  for (let written = 0; written < bytes.length;) {
    written += Deno.stderr.writeSync(bytes.subarray(written));
  }
}
globalThis.addEventListener("unload", flushLog);

function write(level: LogLevel, message: string, fields?: LogFields) {
  if (rank[level] > threshold) return;
  const time = new Date().toISOString();
  const line = format === "json"
    ? JSON.stringify({
      time,
      level,
      message,
      request_id: fields?.requestId,
      uid: fields?.uid,
      route: fields?.route,
      status: fields?.status,
      duration: fields?.duration,
      bytes: fields?.bytes,
      client: fields?.client,
      user: fields?.user,
    })
    : `${time} ${level.padEnd(5)} ${message}`;
  pending.push(`${line}\n`);
  // An error goes out at once: the process may be about to end.
  if (!batched || level === "error" || pending.length >= 512) flushLog();
  else if (!flushing) {
    flushing = true;
    setTimeout(flushLog, 0);
  }
}

/** Log lines at each level, to stderr. */
export const log = {
  error: (message: string, fields?: LogFields) => write("error", message, fields),
  warn: (message: string, fields?: LogFields) => write("warn", message, fields),
  info: (message: string, fields?: LogFields) => write("info", message, fields),
  debug: (message: string, fields?: LogFields) => write("debug", message, fields),
};
