/**
 * Parsers for the human-written quantities in configuration and flags: sizes in the original's
 * `4 Mb` style and durations like `30s`, `7d` or a plain number of seconds.
 */

// As the original: upper-case units are powers of 10, lower-case `b`-suffixed ones powers of 2.
const sizeUnits: Record<string, number> = {
  B: 1,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  PB: 1e15,
  b: 1,
  Kb: 2 ** 10,
  Mb: 2 ** 20,
  Gb: 2 ** 30,
  Tb: 2 ** 40,
  Pb: 2 ** 50,
  KiB: 2 ** 10,
  MiB: 2 ** 20,
  GiB: 2 ** 30,
  TiB: 2 ** 40,
  PiB: 2 ** 50,
};

/** Bytes in `text` (`4 Mb`, `500 GB`, `1048576`), or undefined when it is not a size. */
export function parseSize(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(text);
  if (!match) return undefined;
  const factor = match[2] === "" ? 1 : sizeUnits[match[2]];
  if (factor === undefined) return undefined;
  const bytes = Math.floor(Number(match[1]) * factor);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

const durationUnits: Record<string, number> = {
  ms: 1,
  s: 1000,
  sec: 1000,
  m: 60_000,
  min: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/**
 * Milliseconds in `text` (`250ms`, `30s`, `5m`, `2h`, `7d`, `1w`), else undefined. A unit is
 * required: a bare `30` could mean seconds or days, and guessing wrong deletes carts.
 */
export function parseDuration(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$/.exec(text);
  if (!match) return undefined;
  const factor = durationUnits[match[2]];
  if (factor === undefined) return undefined;
  return Math.round(Number(match[1]) * factor);
}

/** Why `text` is not a duration, for error messages. */
export function durationProblem(text: string): string {
  if (/^\s*\d+(\.\d+)?\s*$/.test(text)) {
    return `${
      JSON.stringify(text.trim())
    } has no unit; say ms, s, m, h, d or w (e.g. "${text.trim()}s")`;
  }
  return `${JSON.stringify(text)} is not a duration such as "500ms", "30s", "5m", "2h" or "7d"`;
}

/** A byte count for people: `1.5 MiB`. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** A duration for people: `1h`, `90s`, `2d 3h`, `250ms`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const parts: string[] = [];
  let rest = Math.round(ms / 1000);
  for (const [unit, seconds] of [["d", 86_400], ["h", 3600], ["m", 60], ["s", 1]] as const) {
    if (rest >= seconds) {
      parts.push(`${Math.floor(rest / seconds)}${unit}`);
      rest %= seconds;
    }
  }
  return parts.join(" ");
}

/**
 * The original `purge --time-ago` form: `"N unit ago"` (or `after`), with a Python timedelta unit
 * (days, hours, minutes, seconds, weeks, milliseconds); returns milliseconds.
 */
export function parseTimeAgo(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s+([a-z]+)\s+(ago|after)\s*$/i.exec(text);
  if (!match) return undefined;
  const units: Record<string, number> = {
    millisecond: 1,
    second: 1000,
    minute: 60_000,
    hour: 3_600_000,
    day: 86_400_000,
    week: 604_800_000,
  };
  const factor = units[match[2].toLowerCase().replace(/s$/, "")];
  return factor === undefined ? undefined : Number(match[1]) * factor;
}
