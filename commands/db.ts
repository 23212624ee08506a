/** `cartd db migrate` (alias `dbsync`) and `cartd db check`. */
import { Command } from "@commander-js/extra-typings";
import { CartdError, ExitCode } from "../src/errors.ts";
import { type GlobalOptions, MissingDatabase, openStore, resolveConfig } from "./context.ts";

export function dbCommand(globals: () => GlobalOptions) {
  const db = new Command("db").description("database schema: migrate or check");
  db.command("migrate").alias("dbsync")
    .description("create or update the database schema")
    .action(async () => {
      const store = openStore(resolveConfig(globals()), { create: true });
      try {
        const applied = await store.migrate();
        console.log(applied.length ? `applied: ${applied.join(", ")}` : "schema is up to date");
      } finally {
        await store.close();
      }
    });
  db.command("check")
    .description("exit 0 when the schema is up to date, 1 when migrations are pending")
    .action(async () => {
      let store;
      try {
        store = openStore(resolveConfig(globals()));
      } catch (err) {
        if (!(err instanceof MissingDatabase)) throw err;
        throw new CartdError(
          `${err.message}; "cartd db migrate" creates it`,
          500,
          ExitCode.failure,
        );
      }
      try {
        const pending = await store.pendingMigrations();
        if (pending.length) {
          throw new CartdError(`pending migrations: ${pending.join(", ")}`, 500, ExitCode.failure);
        }
        console.log("schema is up to date");
      } finally {
        await store.close();
      }
    });
  return db;
}
