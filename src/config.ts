/**
 * cartd's configuration: built-in defaults < INI file < environment < command-line flags, resolved
 * once into one typed, validated object. The INI file and the environment variables are the
 * original's (`[cartd] volume_path` / `VOLUME_PATH`, ...); keys cartd adds use a `CARTD_` variable.
 */
import { existsSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
import { resolve } from "node:path";
import { archiveUrlProblem } from "./archive/mod.ts";
import { CartdError, configError, describe } from "./errors.ts";
import { parseDatabaseUrl } from "./store/database_url.ts";
import { IniSyntaxError, parseIni } from "./ini.ts";
import { log, type LogFormat, logFormats, type LogLevel, logLevels } from "./log.ts";
import { durationProblem, parseDuration, parseSize } from "./units.ts";

/** cartd's whole configuration, resolved and checked: what every part of cartd reads. */
export interface Config {
  /** Where carts are staged; the SQLite database lives here too unless `databaseUrl` says not. */
  volumePath: string;
  /** `sqlite:///path`-style URL, plain path, or `postgres://` (`postgresql://`) URL. */
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
  /** How long (ms) a cached file no cart refers to stays unused before gc removes it; 0: kept. */
  cacheLifetime: number;
  /** How long (ms) to wait for a database another process has locked. */
  databaseBusyTimeout: number;
  /** Tries to reach a database server that is not up yet, before giving up. */
  connectAttempts: number;
  /** How long (ms) between those tries. */
  connectWait: number;
  /** Migrate an older schema at start; undefined: on for SQLite, off for PostgreSQL. */
  autoMigrate: boolean | undefined;
  /** How long (ms) an archive request may go without an answer or a byte of its body. */
  transferTimeout: number;
  /** The least severe log lines written. */
  logLevel: LogLevel;
  /** Readable text lines, or one JSON object per line. */
  logFormat: LogFormat;
  /** Addresses and networks of reverse proxies whose `X-Forwarded-For` is believed. */
  trustedProxies: string[];
  /** `name token role` lines; empty: no access control (the Pacifica contract stays open). */
  tokensFile: string;
  /** Where cart events (ready, failed) are POSTed as CloudEvents. */
  notifyUrls: string[];
  /** How long (ms) a notification is retried before it is given up. */
  notifyGiveUp: number;
  /** The URL users reach cartd at (behind a proxy): download links in notifications. */
  publicUrl: string;
}

/** An amount of disk space: a byte count or a percentage of the file system. */
export type SpaceAmount = { bytes: number } | { percent: number };

/** The bytes `amount` stands for on a file system of `totalBytes`. */
export function spaceBytes(amount: SpaceAmount, totalBytes: number): number {
  return "bytes" in amount ? amount.bytes : Math.ceil(totalBytes * amount.percent / 100);
}

/**
 * `20%` or a size such as `50 GB`; undefined when it is neither. A bare number other than 0 is
 * refused: `20` could be a share or bytes.
 */
export function parseSpaceAmount(text: string): SpaceAmount | undefined {
  const percent = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(text);
  if (percent) return Number(percent[1]) <= 100 ? { percent: Number(percent[1]) } : undefined;
  if (/^\s*\d+(\.\d+)?\s*$/.test(text) && Number(text) !== 0) return undefined;
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
  | "optional-boolean"
  | "space"
  | "choice"
  | "address-list"
  | "optional-path"
  | "url-list"
  | "optional-url";

/** One configuration key: where it is set, its default, how it is read, and what it means. */
export interface KeyDef {
  field: keyof Config;
  section: string;
  key: string;
  env: string;
  default: string;
  kind: Kind;
  /** For people: README's configuration table is made from these. */
  meaning: string;
  /** The default as README shows it, when the raw default (empty) says nothing. */
  shownDefault?: string;
  /** For a `choice`: the words it may be. */
  choices?: readonly string[];
  /** For a `duration`: 0 is refused (an interval of nothing would spin, a timeout fire at once). */
  aboveZero?: boolean;
}

/** Every key cartd reads, in README order: this table drives parsing, errors and the docs. */
export const configKeys: readonly KeyDef[] = [
  {
    field: "volumePath",
    section: "cartd",
    key: "volume_path",
    env: "VOLUME_PATH",
    default: "./cartd-data",
    kind: "path",
    meaning: "where carts are staged (and the SQLite database kept, by default)",
  },
  {
    field: "transferSize",
    section: "cartd",
    key: "transfer_size",
    env: "TRANSFER_SIZE",
    default: "4 Mb",
    kind: "size",
    meaning:
      "read and write size; `KB MB GB` are powers of 10, `Kb Mb Gb` (and `KiB MiB GiB`) of 2",
  },
  {
    field: "lruBufferTime",
    section: "cartd",
    key: "lru_buffer_time",
    env: "LRU_BUFFER_TIME",
    default: "0",
    kind: "seconds",
    meaning: "seconds after its last use during which a cart is never evicted",
  },
  {
    field: "lruPurge",
    section: "cartd",
    key: "lru_purge",
    env: "LRU_PURGE",
    default: "on",
    kind: "boolean",
    meaning: "whether a shortage of space may evict least-recently-used carts",
  },
  {
    field: "bundleTask",
    section: "cartd",
    key: "bundle_task",
    env: "BUNDLE_TASK",
    default: "off",
    kind: "boolean",
    meaning: "default of a request's `bundle` key",
  },
  {
    field: "pollInterval",
    section: "cartd",
    key: "poll_interval",
    env: "CARTD_POLL_INTERVAL",
    default: "1s",
    kind: "duration",
    aboveZero: true,
    meaning: "first delay between status polls of a file on tape",
  },
  {
    field: "pollMaxInterval",
    section: "cartd",
    key: "poll_max_interval",
    env: "CARTD_POLL_MAX_INTERVAL",
    default: "60s",
    kind: "duration",
    aboveZero: true,
    meaning:
      "ceiling of every backoff delay (polls, retries, outage probes); they double, with jitter",
  },
  {
    field: "stageTimeout",
    section: "cartd",
    key: "stage_timeout",
    env: "CARTD_STAGE_TIMEOUT",
    default: "24h",
    kind: "duration",
    aboveZero: true,
    meaning: "a file still on tape this long after its stage request is an error",
  },
  {
    field: "retryLimit",
    section: "cartd",
    key: "retry_limit",
    env: "CARTD_RETRY_LIMIT",
    default: "5",
    kind: "count",
    meaning: "tries of a file that fails while the archive answers others (missing, cut body, 5xx)",
  },
  {
    field: "retryInterval",
    section: "cartd",
    key: "retry_interval",
    env: "CARTD_RETRY_INTERVAL",
    default: "1s",
    kind: "duration",
    aboveZero: true,
    meaning: "first delay between those tries, and between probes of an archive that is down",
  },
  {
    field: "archiveOutageWait",
    section: "cartd",
    key: "archive_outage_wait",
    env: "CARTD_ARCHIVE_OUTAGE_WAIT",
    default: "1h",
    kind: "duration",
    meaning: "how long files wait for an archive that is down before they fail",
  },
  {
    field: "leaseTime",
    section: "cartd",
    key: "lease_time",
    env: "CARTD_LEASE_TIME",
    default: "60s",
    kind: "duration",
    aboveZero: true,
    meaning: "how long a worker's claim on a file (or a download's hold on a cart) lasts unrenewed",
  },
  {
    field: "workers",
    section: "cartd",
    key: "workers",
    env: "CARTD_WORKERS",
    default: "4",
    kind: "count",
    meaning: "files a process stages and pulls at once (`serve --workers`)",
  },
  {
    field: "shutdownTimeout",
    section: "cartd",
    key: "shutdown_timeout",
    env: "CARTD_SHUTDOWN_TIMEOUT",
    default: "30s",
    kind: "duration",
    meaning: "how long `cartd serve` lets running downloads finish when told to stop",
  },
  {
    field: "maxRequestSize",
    section: "cartd",
    key: "max_request_size",
    env: "CARTD_MAX_REQUEST_SIZE",
    default: "64 MiB",
    kind: "size",
    meaning: "the largest cart request body `cartd serve` accepts (larger: 413)",
  },
  {
    field: "volumeSizeLimit",
    section: "cartd",
    key: "volume_size_limit",
    env: "CARTD_VOLUME_SIZE_LIMIT",
    default: "",
    kind: "optional-size",
    meaning: "cap on what carts and pulls may take on the volume; empty: only the disk limits",
    shownDefault: "none",
  },
  {
    field: "volumeReserve",
    section: "cartd",
    key: "volume_reserve",
    env: "CARTD_VOLUME_RESERVE",
    default: "100 MB",
    kind: "space",
    meaning: "free space pulls must leave on the volume's file system: a size or a share (`5%`)",
  },
  {
    field: "spaceWait",
    section: "cartd",
    key: "space_wait",
    env: "CARTD_SPACE_WAIT",
    default: "10m",
    kind: "duration",
    meaning: "how long a file waits for space before its cart fails",
  },
  {
    field: "cartLifetime",
    section: "cartd",
    key: "cart_lifetime",
    env: "CARTD_CART_LIFETIME",
    default: "",
    kind: "optional-duration",
    meaning: "a ready or failed cart expires this long after it finished; empty: never",
    shownDefault: "never",
  },
  {
    field: "cacheLifetime",
    section: "cartd",
    key: "cache_lifetime",
    env: "CARTD_CACHE_LIFETIME",
    default: "",
    kind: "optional-duration",
    meaning: "how long a cached file no cart refers to may stay unused before `cartd gc` removes " +
      "it; empty: until space is needed (cached files are evicted before any cart)",
    shownDefault: "until evicted",
  },
  {
    field: "logLevel",
    section: "cartd",
    key: "log_level",
    env: "CARTD_LOG",
    default: "info",
    kind: "choice",
    choices: logLevels,
    meaning: "the least severe log lines written: `error`, `warn`, `info` or `debug`",
  },
  {
    field: "logFormat",
    section: "cartd",
    key: "log_format",
    env: "CARTD_LOG_FORMAT",
    default: "text",
    kind: "choice",
    choices: logFormats,
    meaning: "`text`: readable lines; `json`: one JSON object per line (time, level, message, " +
      "request_id, uid, route, status, duration, bytes, client, user)",
  },
  {
    field: "trustedProxies",
    section: "cartd",
    key: "trusted_proxies",
    env: "CARTD_TRUSTED_PROXIES",
    default: "",
    kind: "address-list",
    meaning:
      "reverse proxies (addresses or networks such as `10.0.0.0/8`, comma-separated) whose " +
      "`X-Forwarded-For` and `X-Request-Id` cartd believes; empty: none",
    shownDefault: "none",
  },
  {
    field: "archiveUrl",
    section: "archiveinterface",
    key: "url",
    env: "ARCHIVE_INTERFACE_URL",
    default: "http://127.0.0.1:8080/",
    kind: "archive-url",
    meaning: "Pacifica archive interface, or `file:///dir` for a mounted directory",
  },
  {
    field: "transferTimeout",
    section: "archiveinterface",
    key: "timeout",
    env: "CARTD_ARCHIVE_TIMEOUT",
    default: "60s",
    kind: "duration",
    aboveZero: true,
    meaning: "how long an archive request may go without an answer or a byte of its body",
  },
  {
    field: "databaseUrl",
    section: "database",
    key: "peewee_url",
    env: "PEEWEE_URL",
    default: "",
    kind: "database-url",
    meaning: "`sqlite:///relative.db`, `sqlite:////absolute.db` (also `sqliteext://`), a plain " +
      "path, or `postgres://user:pass@host:5432/db` (`postgresql://`, `?host=/socket/dir`, " +
      "`?sslmode=` as libpq reads it)",
    shownDefault: "<volume>/cartd.sqlite3",
  },
  {
    field: "databaseBusyTimeout",
    section: "database",
    key: "busy_timeout",
    env: "CARTD_DB_BUSY_TIMEOUT",
    default: "30s",
    kind: "duration",
    meaning: "how long to wait for a database another process has locked (then 503, or exit 1)",
  },
  {
    field: "connectAttempts",
    section: "database",
    key: "connect_attempts",
    env: "DATABASE_CONNECT_ATTEMPTS",
    default: "10",
    kind: "count",
    meaning: "tries to reach a database server that is not up yet before cartd gives up (exit 1)",
  },
  {
    field: "connectWait",
    section: "database",
    key: "connect_wait",
    env: "DATABASE_CONNECT_WAIT",
    default: "20",
    kind: "seconds",
    meaning: "seconds between those tries",
  },
  {
    field: "autoMigrate",
    section: "database",
    key: "auto_migrate",
    env: "CARTD_AUTO_MIGRATE",
    default: "",
    kind: "optional-boolean",
    meaning:
      "migrate an older schema at start (else `cartd db migrate` must); empty: on for SQLite, off for PostgreSQL",
    shownDefault: "auto",
  },
  {
    field: "notifyUrls",
    section: "cartd",
    key: "notify_url",
    env: "CARTD_NOTIFY_URL",
    default: "",
    kind: "url-list",
    meaning: "where `cartd serve` POSTs a CloudEvent when a cart becomes ready or fails " +
      "(http(s) URLs, comma-separated); retried until `notify_give_up`; empty: none",
    shownDefault: "none",
  },
  {
    field: "notifyGiveUp",
    section: "cartd",
    key: "notify_give_up",
    env: "CARTD_NOTIFY_GIVE_UP",
    default: "24h",
    kind: "duration",
    meaning: "how long a notification a receiver did not take is retried before it is dropped " +
      "(with a log line)",
  },
  {
    field: "publicUrl",
    section: "cartd",
    key: "public_url",
    env: "CARTD_PUBLIC_URL",
    default: "",
    kind: "optional-url",
    meaning: "the URL users reach cartd at (e.g. behind a proxy): notifications carry the " +
      "cart's download link under it; empty: no link",
    shownDefault: "none",
  },
  {
    field: "tokensFile",
    section: "auth",
    key: "tokens_file",
    env: "CARTD_TOKENS_FILE",
    default: "",
    kind: "optional-path",
    meaning:
      "file of `name token role` lines (reader, writer, admin) that `cartd serve` requires " +
      "a token from; mode 600; read again when it changes; empty: open to all",
    shownDefault: "none",
  },
];

/** README's configuration table, made from `configKeys`. */
export function configTableMarkdown(): string {
  const rows = [
    ["section / key", "environment", "default", "meaning"],
    ["---", "---", "---", "---"],
    ...configKeys.map((k) => [
      `\`[${k.section}] ${k.key}\``,
      `\`${k.env}\``,
      `\`${k.shownDefault ?? k.default}\``,
      k.meaning,
    ]),
  ];
  return rows.map((cells) => `| ${cells.join(" | ")} |`).join("\n");
}

/** Keys of the original that cartd accepts and has no use for (it has no broker). */
const ignoredKeys = new Set([
  "celery.broker_url",
  "celery.backend_url",
  "database.debug_logging",
]);

/** What the command line says: a config file and any keys set by flags (`section.key` → value). */
export interface ConfigSources {
  configFile?: string;
  flags?: Record<string, string | undefined>;
  env?: Record<string, string | undefined>;
}

/** Where a key's value came from. */
export type ValueSource =
  | { from: "default" }
  | { from: "file"; file: string }
  | { from: "env"; variable: string }
  | { from: "flag" };

/** One key as the sources set it: the text given, and where it came from. */
export interface SetValue {
  key: KeyDef;
  text: string;
  source: ValueSource;
}

/** What the sources say, before the values are checked: every key's text, and unknown keys. */
export interface ConfigReading {
  values: SetValue[];
  /** The config file read, if any. */
  file?: string;
  /** `[section] key` of each key in the file cartd does not know. */
  unknownKeys: string[];
}

/** Reads defaults, the INI file, the environment and flags, without checking a value. */
export function readConfigSources(sources: ConfigSources = {}): ConfigReading {
  const env = sources.env ?? environment();
  const values = new Map<string, SetValue>();
  for (const key of configKeys) {
    values.set(`${key.section}.${key.key}`, {
      key,
      text: key.default,
      source: { from: "default" },
    });
  }
  const set = (name: string, text: string, source: ValueSource) => {
    const value = values.get(name);
    if (value) values.set(name, { key: value.key, text, source });
  };

  const file = sources.configFile ?? (env.CARTD_CONFIG || undefined) ??
    (localIniExists() ? "cartd.ini" : undefined);
  let unknownKeys: string[] = [];
  if (file !== undefined) {
    const ini = readIni(file);
    for (const [name, text] of ini.values) set(name, text, { from: "file", file });
    unknownKeys = ini.unknown;
  }
  for (const key of configKeys) {
    const text = env[key.env];
    if (text !== undefined && text !== "") {
      set(`${key.section}.${key.key}`, text, { from: "env", variable: key.env });
    }
  }
  for (const [name, text] of Object.entries(sources.flags ?? {})) {
    if (text !== undefined) set(name, text, { from: "flag" });
  }
  return { values: [...values.values()], file, unknownKeys };
}

/** The process's environment; a clear stop when Deno may not read it. */
function environment(): Record<string, string> {
  try {
    return Deno.env.toObject();
  } catch {
    throw configError(
      "cartd reads its configuration from the environment: run it with --allow-env",
    );
  }
}

/** Whether `./cartd.ini` is there (where Deno may not look, it is not). */
function localIniExists(): boolean {
  try {
    return existsSync("cartd.ini");
  } catch {
    return false;
  }
}

/** How a message names where a value came from. */
export function sourceName(source: ValueSource): string {
  switch (source.from) {
    case "default":
      return "default";
    case "file":
      return source.file;
    case "env":
      return source.variable;
    case "flag":
      return "command line";
  }
}

/** Resolves defaults, the INI file, the environment and flags into a validated `Config`. */
export function loadConfig(sources: ConfigSources = {}): Config {
  const reading = readConfigSources(sources);
  for (const unknown of reading.unknownKeys) {
    log.warn(`config file ${reading.file}: unknown key ${unknown} ignored${suggestion(unknown)}`);
  }
  return configFrom(reading);
}

/** The checked `Config` a reading gives; throws a config error naming the first bad value. */
export function configFrom(reading: ConfigReading): Config {
  const config = {} as Record<keyof Config, unknown>;
  const problems: string[] = [];
  for (const { key, text, source } of reading.values) {
    try {
      config[key.field] = convert(key, text, sourceName(source));
    } catch (err) {
      if (!(err instanceof CartdError)) throw err;
      problems.push(err.message);
    }
  }
  // Every bad value at once, so a file is put right in one go.
  if (problems.length > 0) throw configError(problems.join("; "));
  const result = config as unknown as Config;
  if (result.databaseUrl === "") result.databaseUrl = resolve(result.volumePath, "cartd.sqlite3");
  return result;
}

/** `; did you mean [cartd] volume_size_limit?` for a key one or two edits from a known one. */
export function suggestion(unknown: string): string {
  const [, section, key] = /^\[(.*)\] (.*)$/.exec(unknown) ?? [];
  const elsewhere = configKeys.find((k) => k.key === key && k.section !== section);
  if (elsewhere) return `; it belongs in [${elsewhere.section}]`;
  let best: KeyDef | undefined;
  let bestDistance = 3;
  for (const k of configKeys) {
    const distance = editDistance(`${section}.${key}`, `${k.section}.${k.key}`);
    if (distance < bestDistance) [best, bestDistance] = [k, distance];
  }
  return best ? `; did you mean [${best.section}] ${best.key}?` : "";
}

/** Levenshtein distance, for suggestions. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(
        previous[j] + 1,
        current[j - 1] + 1,
        previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = current;
  }
  return previous[b.length];
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
  "connectAttempts",
  "connectWait",
  "autoMigrate",
  // Turning access control on or off, or pointing it elsewhere, is not for a reload to do by
  // accident (a line commented out would open every cart to everyone).
  "tokensFile",
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

/** A config file's known keys (`section.key` → text) and its unknown ones (`[section] key`). */
function readIni(file: string): { values: Map<string, string>; unknown: string[] } {
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
  const unknown: string[] = [];
  for (const [section, pairs] of Object.entries(sections)) {
    for (const [key, value] of Object.entries(pairs)) {
      const name = `${section}.${key}`;
      if (known.has(name)) values.set(name, value.trim());
      else if (!ignoredKeys.has(name)) unknown.push(`[${section}] ${key}`);
    }
  }
  return { values, unknown };
}

function convert(k: KeyDef, value: string, from: string): unknown {
  const failWith = (problem: string): never => {
    throw configError(`bad value for [${k.section}] ${k.key} (from ${from}): ${problem}`);
  };
  const fail = (expected: string) => failWith(`${JSON.stringify(value)} is not ${expected}`);
  switch (k.kind) {
    case "path":
      return value.trim() === "" ? fail("a path") : value.trim();
    case "optional-path":
      return value.trim();
    case "url-list": {
      const urls = value.split(/[\s,]+/).filter((u) => u !== "");
      const bad = urls.findIndex((u) => !isHttpUrl(u));
      // The value is not echoed: a webhook URL often carries its secret.
      return bad === -1
        ? urls
        : failWith(`entry ${bad + 1} of the list is not an http:// or https:// URL`);
    }
    case "optional-url":
      if (value.trim() === "") return "";
      return isHttpUrl(value.trim())
        ? value.trim().replace(/\/+$/, "")
        : fail("an http:// or https:// URL, or empty");
    case "archive-url": {
      const problem = archiveUrlProblem(value.trim());
      return problem ? failWith(problem) : value.trim();
    }
    case "database-url": {
      // Empty means the default, a file on the volume.
      if (value.trim() === "") return "";
      try {
        parseDatabaseUrl(value.trim());
      } catch (err) {
        return failWith(describe(err));
      }
      return value.trim();
    }
    case "size":
      return positive(parseSize(value)) ?? fail('a size such as "4 Mb" or "500 GB"');
    case "duration": {
      const ms = parseDuration(value) ?? failWith(durationProblem(value));
      return k.aboveZero && ms <= 0 ? fail("a duration above 0") : ms;
    }
    case "seconds": {
      const seconds = /^\s*\d+\s*$/.test(value) ? Number(value) : undefined;
      return seconds === undefined ? fail("a whole number of seconds") : seconds * 1000;
    }
    case "boolean":
      return parseBoolean(value) ?? fail("on/off, true/false, yes/no or 1/0");
    case "optional-boolean":
      return value.trim() === ""
        ? undefined
        : parseBoolean(value) ?? fail("on/off, true/false, yes/no, 1/0, or empty");
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
    case "address-list": {
      const entries = value.split(/[\s,]+/).filter((e) => e !== "");
      const bad = entries.find((e) => !isAddressOrNetwork(e));
      return bad === undefined
        ? entries
        : failWith(`${JSON.stringify(bad)} is not an IP address or a network such as 10.0.0.0/8`);
    }
    case "choice": {
      const word = value.trim().toLowerCase();
      return k.choices!.includes(word) ? word : fail(`one of ${k.choices!.join(", ")}`);
    }
  }
}

/** An absolute http(s) URL. */
function isHttpUrl(text: string): boolean {
  return URL.canParse(text) && ["http:", "https:"].includes(new URL(text).protocol);
}

/** `192.0.2.7`, `::1`, `10.0.0.0/8` or `fd00::/8`. */
function isAddressOrNetwork(text: string): boolean {
  const [address, prefix, extra] = text.split("/");
  const family = isIP(address);
  if (family === 0 || extra !== undefined) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
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
