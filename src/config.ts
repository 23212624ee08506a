/**
 * cartd's configuration: built-in defaults < INI file < environment < command-line flags, resolved
 * once into one typed, validated object. The INI file and the environment variables are the
 * original's (`[cartd] volume_path` / `VOLUME_PATH`, ...); keys cartd adds use a `CARTD_` variable.
 */
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { archiveUrlProblem } from "./archive/mod.ts";
import { configError, describe } from "./errors.ts";
import { parseDatabaseUrl } from "./store/database_url.ts";
import { IniSyntaxError, parseIni } from "./ini.ts";
import { log } from "./log.ts";
import { durationProblem, parseDuration, parseSize } from "./units.ts";

export interface Config {
  /** Where carts are staged; the SQLite database lives here too unless `databaseUrl` says not. */
  volumePath: string;
  /** `sqlite:///path`-style URL, plain path, or `postgres://` URL. */
  databaseUrl: string;
  /** Pacifica archive interface (`http(s)://…/`) or a mounted directory (`file:///dir`). */
  archiveUrl: string;
  /** Bytes per read when pulling from the archive. */
  transferSize: number;
  /** Grace period (ms) after a cart's last use during which it is never evicted. */
  lruBufferTime: number;
  /** Whether space shortage may evict least-recently-used carts. */
  lruPurge: boolean;
  /** Default for a request's `bundle` key. */
  bundleTask: boolean;
  /** First delay (ms) between status polls of a file still on tape; doubles up to the ceiling. */
  pollInterval: number;
  /** Ceiling (ms) of the delay between status polls. */
  pollMaxInterval: number;
  /** How long (ms) a file may stay on tape after its stage request before it is an error. */
  stageTimeout: number;
  /** Tries of a request that failed with a network error or 5xx before the file is an error. */
  retryLimit: number;
  /** First delay (ms) between such tries; doubles each time. */
  retryInterval: number;
  /** How long (ms) files wait for an archive that is down before their carts fail. */
  archiveOutageWait: number;
  /** How long (ms) a worker's claim on a file lasts without renewal. */
  leaseTime: number;
  /** Files a worker stages and pulls at once. */
  workers: number;
  /** `cartd serve`: how long (ms) running downloads may take to finish on shutdown. */
  shutdownTimeout: number;
  /** `cartd serve`: the largest cart request body accepted, in bytes. */
  maxRequestSize: number;
  /** Cap (bytes) on what cartd's carts may take on the volume; 0 means only the disk limits. */
  volumeSizeLimit: number;
  /** Free space (bytes or a share of the file system) that pulls must leave untouched. */
  volumeReserve: SpaceAmount;
  /** How long (ms) a file waits for space before its cart fails. */
  spaceWait: number;
  /** A ready or failed cart expires this long (ms) after it finished; 0 means never. */
  cartLifetime: number;
  /** How long (ms) to wait for a database another process has locked. */
  databaseBusyTimeout: number;
  /** How long (ms) an archive request may go without an answer or a byte of its body. */
  transferTimeout: number;
}

/** An amount of disk space: a byte count or a percentage of the file system. */
export type SpaceAmount = { bytes: number } | { percent: number };

/** The bytes `amount` stands for on a file system of `totalBytes`. */
export function spaceBytes(amount: SpaceAmount, totalBytes: number): number {
  return "bytes" in amount ? amount.bytes : Math.ceil(totalBytes * amount.percent / 100);
}

/** `20%` or a size such as `50 GB`; undefined when it is neither. */
export function parseSpaceAmount(text: string): SpaceAmount | undefined {
  const percent = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(text);
  if (percent) return Number(percent[1]) <= 100 ? { percent: Number(percent[1]) } : undefined;
  const bytes = parseSize(text);
  return bytes === undefined ? undefined : { bytes };
}

type Kind =
  | "path"
  | "archive-url"
  | "database-url"
  | "size"
  | "duration"
  | "seconds"
  | "boolean"
  | "count"
  | "optional-size"
  | "optional-duration"
  | "space";

interface KeyDef {
  section: string;
  key: string;
  env: string;
  default: string;
  kind: Kind;
  field: keyof Config;
}

// field, [section] key, environment variable, default, kind; in README order.
const keyTable: [keyof Config, string, string, string, Kind][] = [
  ["volumePath", "cartd.volume_path", "VOLUME_PATH", "./cartd-data", "path"],
  ["transferSize", "cartd.transfer_size", "TRANSFER_SIZE", "4 Mb", "size"],
  ["lruBufferTime", "cartd.lru_buffer_time", "LRU_BUFFER_TIME", "0", "seconds"],
  ["lruPurge", "cartd.lru_purge", "LRU_PURGE", "on", "boolean"],
  ["bundleTask", "cartd.bundle_task", "BUNDLE_TASK", "off", "boolean"],
  ["pollInterval", "cartd.poll_interval", "CARTD_POLL_INTERVAL", "1s", "duration"],
  ["pollMaxInterval", "cartd.poll_max_interval", "CARTD_POLL_MAX_INTERVAL", "60s", "duration"],
  ["stageTimeout", "cartd.stage_timeout", "CARTD_STAGE_TIMEOUT", "24h", "duration"],
  ["retryLimit", "cartd.retry_limit", "CARTD_RETRY_LIMIT", "5", "count"],
  ["retryInterval", "cartd.retry_interval", "CARTD_RETRY_INTERVAL", "1s", "duration"],
  [
    "archiveOutageWait",
    "cartd.archive_outage_wait",
    "CARTD_ARCHIVE_OUTAGE_WAIT",
    "1h",
    "duration",
  ],
  ["leaseTime", "cartd.lease_time", "CARTD_LEASE_TIME", "60s", "duration"],
  ["workers", "cartd.workers", "CARTD_WORKERS", "4", "count"],
  ["shutdownTimeout", "cartd.shutdown_timeout", "CARTD_SHUTDOWN_TIMEOUT", "30s", "duration"],
  ["maxRequestSize", "cartd.max_request_size", "CARTD_MAX_REQUEST_SIZE", "64 MiB", "size"],
  ["volumeSizeLimit", "cartd.volume_size_limit", "CARTD_VOLUME_SIZE_LIMIT", "", "optional-size"],
  ["volumeReserve", "cartd.volume_reserve", "CARTD_VOLUME_RESERVE", "100 MB", "space"],
  ["spaceWait", "cartd.space_wait", "CARTD_SPACE_WAIT", "10m", "duration"],
  ["cartLifetime", "cartd.cart_lifetime", "CARTD_CART_LIFETIME", "", "optional-duration"],
  [
    "archiveUrl",
    "archiveinterface.url",
    "ARCHIVE_INTERFACE_URL",
    "http://127.0.0.1:8080/",
    "archive-url",
  ],
  ["databaseUrl", "database.peewee_url", "PEEWEE_URL", "", "database-url"],
  ["databaseBusyTimeout", "database.busy_timeout", "CARTD_DB_BUSY_TIMEOUT", "30s", "duration"],
  ["transferTimeout", "archiveinterface.timeout", "CARTD_ARCHIVE_TIMEOUT", "60s", "duration"],
];

/** Every key cartd reads. */
export const configKeys: readonly KeyDef[] = keyTable.map(([field, name, env, fallback, kind]) => {
  const [section, key] = name.split(".");
  return { section, key, env, default: fallback, kind, field };
});

/** Keys of the original that cartd accepts and has no use for (no broker, no connect retries). */
const ignoredKeys = new Set([
  "celery.broker_url",
  "celery.backend_url",
  "database.debug_logging",
  "database.connect_attempts",
  "database.connect_wait",
]);

/** What the command line says: a config file and any keys set by flags (`section.key` → value). */
export interface ConfigSources {
  configFile?: string;
  flags?: Record<string, string | undefined>;
  env?: Record<string, string | undefined>;
}

/** Resolves defaults, the INI file, the environment and flags into a validated `Config`. */
export function loadConfig(sources: ConfigSources = {}): Config {
  const env = sources.env ?? Deno.env.toObject();
  const raw = new Map<string, { value: string; from: string }>();
  for (const k of configKeys) {
    raw.set(`${k.section}.${k.key}`, { value: k.default, from: "default" });
  }

  const file = sources.configFile ?? (env.CARTD_CONFIG || undefined) ??
    (existsSync("cartd.ini") ? "cartd.ini" : undefined);
  if (file !== undefined) {
    for (const [name, value] of readIni(file)) raw.set(name, { value, from: file });
  }
  for (const k of configKeys) {
    const value = env[k.env];
    if (value !== undefined && value !== "") {
      raw.set(`${k.section}.${k.key}`, { value, from: k.env });
    }
  }
  for (const [name, value] of Object.entries(sources.flags ?? {})) {
    if (value !== undefined) raw.set(name, { value, from: "command line" });
  }

  const config = {} as Record<keyof Config, unknown>;
  for (const k of configKeys) {
    const { value, from } = raw.get(`${k.section}.${k.key}`)!;
    config[k.field] = convert(k, value, from);
  }
  const result = config as unknown as Config;
  if (result.databaseUrl === "") result.databaseUrl = resolve(result.volumePath, "cartd.sqlite3");
  return result;
}

/** Keys a running server reads once at start: a new value needs a restart. */
const readAtStart = new Set<keyof Config>([
  "volumePath",
  "databaseUrl",
  "archiveUrl",
  "workers",
  "transferSize",
  "transferTimeout",
  "cartLifetime",
  "databaseBusyTimeout",
]);

/** What a reload changed: keys now in effect, and keys whose new value waits for a restart. */
export interface ConfigReload {
  applied: string[];
  needRestart: string[];
}

/**
 * Reads the configuration again from the same sources and applies, in place, every changed key a
 * running server reads as it goes (limits, timings, eviction). Throws, changing nothing, when the
 * new configuration is bad.
 */
export function reloadConfig(current: Config, sources: ConfigSources = {}): ConfigReload {
  const next = loadConfig(sources);
  const reload: ConfigReload = { applied: [], needRestart: [] };
  for (const k of configKeys) {
    if (JSON.stringify(next[k.field]) === JSON.stringify(current[k.field])) continue;
    const name = `[${k.section}] ${k.key}`;
    if (readAtStart.has(k.field)) {
      reload.needRestart.push(name);
      continue;
    }
    (current as unknown as Record<string, unknown>)[k.field] = next[k.field];
    reload.applied.push(name);
  }
  return reload;
}

function readIni(file: string): Map<string, string> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const reason = (err as { code?: string }).code === "ENOENT" ? "no such file" : String(err);
    throw configError(`cannot read config file ${file}: ${reason}`);
  }
  let sections;
  try {
    sections = parseIni(text);
  } catch (err) {
    if (err instanceof IniSyntaxError) throw configError(`config file ${file}, ${err.message}`);
    throw err;
  }
  const known = new Set(configKeys.map((k) => `${k.section}.${k.key}`));
  const values = new Map<string, string>();
  for (const [section, pairs] of Object.entries(sections)) {
    for (const [key, value] of Object.entries(pairs)) {
      const name = `${section}.${key}`;
      if (known.has(name)) values.set(name, value.trim());
      else if (!ignoredKeys.has(name)) {
        log.warn(`config file ${file}: unknown key [${section}] ${key} ignored`);
      }
    }
  }
  return values;
}

function convert(k: KeyDef, value: string, from: string): unknown {
  const failWith = (problem: string): never => {
    throw configError(`bad value for [${k.section}] ${k.key} (from ${from}): ${problem}`);
  };
  const fail = (expected: string) => failWith(`${JSON.stringify(value)} is not ${expected}`);
  switch (k.kind) {
    case "path":
      return value.trim() === "" ? fail("a path") : value.trim();
    case "archive-url": {
      const problem = archiveUrlProblem(value.trim());
      return problem ? failWith(problem) : value.trim();
    }
    case "database-url": {
      // Empty means the default, a file on the volume.
      if (value.trim() === "") return "";
      let target;
      try {
        target = parseDatabaseUrl(value.trim());
      } catch (err) {
        return failWith(describe(err));
      }
      if (target.kind === "postgres") {
        return failWith("PostgreSQL is not supported by this build yet; use a SQLite database");
      }
      return value.trim();
    }
    case "size":
      return positive(parseSize(value)) ?? fail('a size such as "4 Mb" or "500 GB"');
    case "duration":
      return parseDuration(value) ?? failWith(durationProblem(value));
    case "seconds": {
      const seconds = /^\s*\d+\s*$/.test(value) ? Number(value) : undefined;
      return seconds === undefined ? fail("a whole number of seconds") : seconds * 1000;
    }
    case "boolean":
      return parseBoolean(value) ?? fail("on/off, true/false, yes/no or 1/0");
    case "count":
      return positive(/^\s*\d+\s*$/.test(value) ? Number(value) : undefined) ??
        fail("a whole number above 0");
    case "optional-size":
      return unset(value) ? 0 : parseSize(value) ?? fail('a size such as "500 GB", or empty');
    case "optional-duration":
      return unset(value)
        ? 0
        : parseDuration(value) ?? failWith(`${durationProblem(value)}, or empty`);
    case "space":
      return parseSpaceAmount(value) ?? fail('a size such as "1 GB" or a share such as "5%"');
  }
}

/** Optional keys are off when empty, `0`, `none` or `off`. */
function unset(value: string): boolean {
  return ["", "0", "none", "off"].includes(value.trim().toLowerCase());
}

function positive(n: number | undefined): number | undefined {
  return n !== undefined && n > 0 ? n : undefined;
}

/** configparser's getboolean words. */
export function parseBoolean(value: string): boolean | undefined {
  const word = value.trim().toLowerCase();
  if (["1", "yes", "true", "on"].includes(word)) return true;
  if (["0", "no", "false", "off"].includes(word)) return false;
  return undefined;
}
