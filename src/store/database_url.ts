/**
 * Reads the database setting: the original's peewee URLs (`sqliteext:///db.sqlite3` is relative,
 * `sqlite:////srv/db.sqlite3` absolute), a plain file path, or a `postgres://` URL.
 */
import { parse as parseConnectionString } from "pg-connection-string";
import { configError } from "../errors.ts";

/** The database a URL names: a SQLite file, or a PostgreSQL server. */
export type DatabaseTarget =
  | { kind: "sqlite"; file: string }
  | { kind: "postgres"; url: string };

/** What database `url` names; throws a configuration error for a URL cartd cannot use. */
export function parseDatabaseUrl(url: string): DatabaseTarget {
  const sqlite = /^(sqlite|sqliteext|sqlite3):\/\/(.*)$/i.exec(url);
  if (sqlite) {
    // peewee: everything after the third slash is the path; a fourth makes it absolute.
    const rest = sqlite[2];
    if (!rest.startsWith("/") || rest === "/") {
      throw configError(`bad database URL ${JSON.stringify(url)}: expected sqlite:///path/to/file`);
    }
    const file = rest.slice(1);
    return { kind: "sqlite", file: decodeURIComponent(file) };
  }
  if (/^postgres(ql)?:\/\//i.test(url)) {
    try {
      parseConnectionString(url);
    } catch {
      // Never repeat the URL: it holds the password.
      throw configError(
        "bad PostgreSQL URL: it cannot be read (percent-encode characters such as # / @ : " +
          "in the user name and password)",
      );
    }
    return { kind: "postgres", url };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    throw configError(
      `unsupported database URL ${JSON.stringify(url.replace(/\/\/[^@/]*@/, "//…@"))}: ` +
        "use sqlite:///path, a plain file path, or postgres://",
    );
  }
  return { kind: "sqlite", file: url };
}
