/**
 * The database's tables as Kysely sees them. Times are epoch milliseconds; `mtime` is the
 * archive's modification time in whole seconds (what the tar carries).
 */
import type { Generated, Selectable } from "kysely";

/**
 * A cart's own state; per-file detail lives in `files`. Deleted carts keep their row. `creating`
 * is a draft still receiving its files, invisible to everyone.
 */
export type CartStatus = "creating" | "staging" | "ready" | "error";

/** A file's place in the pipeline: waiting → staging → staged → pulling → ready | error. */
export type FileState = "waiting" | "staging" | "staged" | "pulling" | "ready" | "error";

/** A row of `carts`: a cart's own state, which outlives its deletion for the record. */
export interface CartTable {
  id: Generated<number>;
  uid: string;
  /** Digest of the normalised request, so a repeated create can be recognised. */
  fingerprint: string;
  bundle: number;
  status: CartStatus;
  message: string;
  file_count: number;
  created_at: number;
  /** Last use: created, staged, statused or downloaded. */
  used_at: number;
  ready_at: number | null;
  deleted_at: number | null;
  /** When the cart became ready or failed; its lifetime counts from here. */
  finished_at: number | null;
  /** When its files left the volume (a deleted cart keeps them while downloads of it run). */
  removed_at: number | null;
  delete_reason: string | null;
  /** Bytes of its verified files on the volume, kept as files become ready. */
  bytes: number;
  /** When a worker last took one of its files: the cart waiting longest goes next. */
  claimed_at: number;
  /** The name of the token that created it (access control on); null: open to every caller. */
  owner: string | null;
  /**
   * Bytes its files not yet on the volume were promised when it was admitted (its first pull):
   * space no other cart takes. Counts only while the cart is staging.
   */
  promised_bytes: number;
  /** When its first file was admitted (see SpaceRecords); until then it takes nothing cached. */
  admitted_at: number | null;
}

/** A row of `files`: one file of a cart and its place in the pipeline. */
export interface FileTable {
  id: Generated<number>;
  cart_id: number;
  /** Position in the request, so listings keep the user's order. */
  seq: number;
  archive_id: string;
  path: string;
  hash_type: string;
  hash_sum: string;
  state: FileState;
  size: number | null;
  mtime: number | null;
  bytes_pulled: number;
  /** Pulls started, for the status report. */
  attempts: number;
  /** Status polls made while the file was on tape. */
  polls: number;
  /** Consecutive failures of the current step that concern this file; bounds its retries. */
  failures: number;
  /** Why the file failed; while it is being retried, the last failure. */
  error: string;
  verified: number;
  owner: string | null;
  lease_until: number | null;
  next_try_at: number;
  stage_requested_at: number | null;
  updated_at: number;
  /** Bytes held reserved on the volume while the file is pulled. */
  reserved: number;
  /** Since when the file has been waiting for space, if it is. */
  space_wait_since: number | null;
  /** Since when the file has been waiting for the archive to come back, if it is. */
  outage_since: number | null;
  /** The cached file it is (once ready). */
  blob_id: number | null;
  /** 1 when it came from the cache rather than a pull of its own. */
  from_cache: number;
  /** Its share of its cart's `promised_bytes` (0: not promised), given back when it is ready. */
  promised: number;
  /** The CRC-32 of its bytes, once verified (for zips); null when pulled before it was kept. */
  crc32: number | null;
}

/** A download in progress, so its cart's files stay until it ends. */
export interface DownloadTable {
  id: Generated<number>;
  cart_id: number;
  owner: string;
  lease_until: number;
}

/**
 * A row of `blobs`: a verified file held once on the volume (`<volume>/cache/<key>`), which any
 * number of carts' files refer to (`files.blob_id`). Its size counts once in space accounting.
 */
export interface BlobTable {
  id: Generated<number>;
  /** Its name in the cache folder; null while its one copy is still its first cart's. */
  key: string | null;
  archive_id: string;
  hash_type: string;
  /** Lower case; empty when its request gave none. */
  hash_sum: string;
  verified: number;
  size: number;
  /** The archive's mtime, in seconds. */
  mtime: number | null;
  /** The file whose pull made it. */
  origin_file_id: number | null;
  created_at: number;
  /** Last time a cart took it or a download read it: least recently used goes first. */
  used_at: number;
  /** The CRC-32 of its bytes (null: not known, pulled before it was kept). */
  crc32: number | null;
}

/** A row of `pulls`: the file pulling a file identity now (other carts' files wait for it). */
export interface PullTable {
  /** The archive id, hash type and checksum (lower case), as a JSON array. */
  identity: string;
  file_id: number;
  created_at: number;
}

/** The one row of `cache_totals`: the bytes of every blob, kept with them. */
export interface CacheTotalsTable {
  id: number;
  bytes: number;
}

/** A row of `notifications`: one cart event for one receiver, until it is delivered. */
export interface NotificationTable {
  id: Generated<number>;
  cart_id: number;
  /** The CloudEvent's id: the same for every receiver and every try. */
  event_id: string;
  url: string;
  type: string;
  /** The event's data, as JSON. */
  data: string;
  created_at: number;
  attempts: number;
  next_try_at: number;
  owner: string | null;
  lease_until: number | null;
  last_error: string;
}

/** Every table, so Kysely can check each query's columns and types at compile time. */
export interface Database {
  carts: CartTable;
  files: FileTable;
  downloads: DownloadTable;
  notifications: NotificationTable;
  blobs: BlobTable;
  pulls: PullTable;
  cache_totals: CacheTotalsTable;
}

/** A cart row as read; it stays inside the core (front ends get reports). */
export type Cart = Selectable<CartTable>;
/** A file row as read; it stays inside the core (front ends get reports and events). */
export type CartFile = Selectable<FileTable>;
/** A notification row as read. */
export type NotificationRow = Selectable<NotificationTable>;
/** A cached file's row as read. */
export type Blob = Selectable<BlobTable>;
/** What a cart request says of a file; the store fills in the pipeline's starting values. */
export type NewFile = Pick<FileTable, "seq" | "archive_id" | "path" | "hash_type" | "hash_sum">;
