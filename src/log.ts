/**
 * Plain, line-oriented logging to stderr, so stdout stays free for command output (a tar on
 * `cartd get -o -`, JSON on `--json`). The level comes from `CARTD_LOG` (error, warn, info, debug).
 */

const levels = { error: 0, warn: 1, info: 2, debug: 3 } as const;
type Level = keyof typeof levels;

function threshold(): number {
  const wanted = (Deno.env.get("CARTD_LOG") ?? "info").toLowerCase();
  return wanted in levels ? levels[wanted as Level] : levels.info;
}

const limit = threshold();
const encoder = new TextEncoder();

function write(level: Level, message: string) {
  if (levels[level] > limit) return;
  const line = `${new Date().toISOString()} ${level.padEnd(5)} ${message}\n`;
  Deno.stderr.writeSync(encoder.encode(line));
}

/** Log lines at each level, to stderr. */
export const log = {
  error: (message: string) => write("error", message),
  warn: (message: string) => write("warn", message),
  info: (message: string) => write("info", message),
  debug: (message: string) => write("debug", message),
};
