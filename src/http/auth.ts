/**
 * Access control for `cartd serve` (off unless `[auth] tokens_file` is set): a file of
 * `name token role` lines, read again when it changes or on SIGHUP. A request presents a token as
 * `Authorization: Bearer <token>`, or as the password of Basic credentials, so URL credentials
 * (`http://name:token@host:8081/`, which Python `requests` sends as Basic) work unchanged.
 *
 * Roles: `reader` reads carts (HEAD, GET), `writer` also creates and deletes them, `admin` sees
 * every cart and the metrics. A cart belongs to the name that created it: one name may hold
 * several tokens (a writer for the portal, a reader for an edge node). Tokens are compared in
 * constant time, never logged, and the file must not be readable by group or others.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { statSync } from "node:fs";
import { configError } from "../errors.ts";

export const roles = ["reader", "writer", "admin"] as const;
export type Role = typeof roles[number];

/** Who a request comes from, once its token is known. */
export interface Caller {
  name: string;
  role: Role;
}

interface TokenEntry extends Caller {
  digest: Uint8Array;
}

/** Tokens shorter than this are refused: a short token can be guessed. */
const shortestToken = 16;

const digestOf = (token: string) => createHash("sha256").update(token).digest();

/** Parses a tokens file; throws a config error naming the line (never the token). */
export function parseTokens(text: string, file: string): TokenEntry[] {
  const entries: TokenEntry[] = [];
  const seen = new Set<string>();
  for (const [index, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const where = `${file}, line ${index + 1}`;
    const fields = line.split(/\s+/);
    if (fields.length !== 3) {
      throw configError(`${where}: expected "name token role", found ${fields.length} field(s)`);
    }
    const [name, token, role] = fields;
    if (!/^[A-Za-z0-9._@-]{1,64}$/.test(name)) {
      throw configError(`${where}: a name is 1 to 64 letters, digits or . _ @ -`);
    }
    if (!roles.includes(role as Role)) {
      // Not echoed: with the fields swapped, it would be the token.
      throw configError(`${where}: the third field must be reader, writer or admin`);
    }
    if (token.length < shortestToken) {
      throw configError(
        `${where}: the token is shorter than ${shortestToken} characters ` +
          "(make one with: openssl rand -hex 24)",
      );
    }
    if (seen.has(token)) throw configError(`${where}: this token is on an earlier line too`);
    seen.add(token);
    entries.push({ name, role: role as Role, digest: digestOf(token) });
  }
  return entries;
}

/** The tokens file, read again when it changes (checked at most once a second) or on demand. */
export class TokenFile {
  private entries: TokenEntry[] = [];
  private signature = "";
  private checkedAt = 0;

  /** Reads the file; throws a config error when it is unsafe or malformed. */
  constructor(readonly path: string) {
    this.reload();
  }

  /**
   * Reads the file again if it changed. Throws (keeping the tokens in force) when the new file
   * is unsafe or malformed.
   */
  reload(): boolean {
    let info;
    try {
      info = statSync(this.path);
    } catch (err) {
      throw configError(`cannot read tokens file ${this.path}: ${(err as Error).message}`);
    }
    if ((info.mode & 0o077) !== 0) {
      throw configError(
        `tokens file ${this.path} is readable by group or others (mode ` +
          `${(info.mode & 0o777).toString(8)}); chmod 600 it`,
      );
    }
    const signature = `${info.ino}:${info.size}:${info.mtimeMs}`;
    if (signature === this.signature) return false;
    let text;
    try {
      text = Deno.readTextFileSync(this.path);
    } catch (err) {
      throw configError(`cannot read tokens file ${this.path}: ${(err as Error).message}`);
    }
    const entries = parseTokens(text, this.path);
    // No token at all would lock every user out: surely not what was meant.
    if (entries.length === 0) throw configError(`tokens file ${this.path} holds no tokens`);
    this.entries = entries;
    this.signature = signature;
    return true;
  }

  /** How many tokens are in force. */
  get size(): number {
    return this.entries.length;
  }

  /** Re-reads the file when it has changed; a bad new file keeps the old tokens (see `onError`). */
  refresh(now: number, onError: (err: unknown) => void): void {
    if (now - this.checkedAt < 1000) return;
    this.checkedAt = now;
    try {
      this.reload();
    } catch (err) {
      onError(err);
    }
  }

  /** The caller a token stands for; every entry is compared, in constant time. */
  caller(token: string): Caller | undefined {
    const digest = digestOf(token);
    let found: TokenEntry | undefined;
    for (const entry of this.entries) {
      if (timingSafeEqual(entry.digest, digest)) found ??= entry;
    }
    return found && { name: found.name, role: found.role };
  }
}

/**
 * The token and the user name a request presents: undefined without an `Authorization` header;
 * an empty token (never valid) for one that is malformed or of another scheme.
 */
export function presentedToken(req: Request): { token: string; user?: string } | undefined {
  const header = req.headers.get("authorization");
  if (!header) return undefined;
  // A scheme and one value: anything after a token would be taken as part of nothing.
  const parts = /^(\S+) +(\S+)$/.exec(header.trim());
  if (!parts) return { token: "" };
  const [, scheme, value] = parts;
  if (/^bearer$/i.test(scheme)) return { token: value };
  if (/^basic$/i.test(scheme)) {
    let decoded;
    try {
      decoded = new TextDecoder("utf-8", { fatal: true }).decode(
        Uint8Array.from(atob(value), (c) => c.charCodeAt(0)),
      );
    } catch {
      return { token: "" };
    }
    const colon = decoded.indexOf(":");
    if (colon === -1) return { token: "" };
    return { user: decoded.slice(0, colon), token: decoded.slice(colon + 1) };
  }
  return { token: "" };
}

/**
 * The caller of a request, or why there is none. With Basic credentials, a user name other than
 * the token's own is refused (an empty one is not).
 */
export function authenticate(
  req: Request,
  tokens: TokenFile,
): Caller | "missing" | "wrong" {
  const presented = presentedToken(req);
  if (!presented) return "missing";
  const caller = tokens.caller(presented.token);
  if (!caller) return "wrong";
  if (presented.user && presented.user !== caller.name) return "wrong";
  return caller;
}

/** What a route needs of its caller. */
export type Need = "nothing" | "read" | "write" | "admin";

const rank: Record<Role, number> = { reader: 1, writer: 2, admin: 3 };
const needRank: Record<Exclude<Need, "nothing">, number> = { read: 1, write: 2, admin: 3 };

/** A request's standing: let through (as a caller, or anonymously when access control is off). */
export type Admission =
  | { admitted: true; caller?: Caller }
  | { admitted: false; status: 401 | 403; message: string };

/**
 * Access control as the server applies it: off without `[auth] tokens_file`; otherwise each
 * request's token is checked against what its route needs. The tokens file is read at start (a
 * bad one stops the server), and again when it changes or on SIGHUP.
 */
export class AccessControl {
  private readonly tokens?: TokenFile;

  /** `tokensFile` is read once: access control is turned on or off only by a restart. */
  constructor(
    config: { tokensFile: string },
    private readonly onReloadError: (err: unknown) => void = () => {},
  ) {
    if (config.tokensFile !== "") this.tokens = new TokenFile(config.tokensFile);
  }

  /** Whether requests need tokens. */
  get enabled(): boolean {
    return this.tokens !== undefined;
  }

  /**
   * Reads the tokens file again (SIGHUP). Throws when the new file is unsafe or malformed,
   * keeping the tokens in force.
   */
  reload(): void {
    this.tokens?.reload();
  }

  /** Whether `req` may go on to a route that needs `need`, and as whom. */
  admit(req: Request, need: Need): Admission {
    const tokens = this.tokens;
    if (!tokens) return { admitted: true };
    tokens.refresh(Date.now(), this.onReloadError);
    const caller = authenticate(req, tokens);
    if (need === "nothing") {
      return { admitted: true, caller: typeof caller === "object" ? caller : undefined };
    }
    if (caller === "missing") {
      return {
        admitted: false,
        status: 401,
        message:
          "This server needs a token (Authorization: Bearer, or Basic with the token as password)",
      };
    }
    if (caller === "wrong") {
      return { admitted: false, status: 401, message: "The token is not valid" };
    }
    if (rank[caller.role] < needRank[need]) {
      const what = need === "admin" ? "needs an admin token" : "needs a writer token";
      return {
        admitted: false,
        status: 403,
        message: `A ${caller.role} token cannot do this: it ${what}`,
      };
    }
    return { admitted: true, caller };
  }
}

/** The challenge a 401 carries: either scheme works. */
export const authChallenge = 'Bearer realm="cartd", Basic realm="cartd", charset="UTF-8"';
