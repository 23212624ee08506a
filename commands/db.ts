/** `cartd db migrate` (alias `dbsync`) and `cartd db check`. */
import { Command } from "@commander-js/extra-typings";
import { MissingDatabase } from "../src/cartd.ts";
import { CartdError } from "../src/errors.ts";
import { type GlobalOptions, withCartd } from "./context.ts";

/** The `db` subcommand and its own subcommands. */
export function dbCommand(globals: () => GlobalOptions) {
  const db = new Command("db").description("database schema: migrate or check");
  db.command("migrate").alias("dbsync")
    .description("create or update the database schema")
    .action(async () => {
      await withCartd(globals(), async (cartd) => {
        const applied = await cartd.migrate();
        console.log(applied.length ? `applied: ${applied.join(", ")}` : "schema is up to date");
      }, { create: true, migrate: false });
    });
  db.command("check")
    .description("exit 0 when the schema is up to date, 1 when migrations are pending")
    .action(async () => {
      try {
        await withCartd(globals(), async (cartd) => {
          const pending = await cartd.pendingMigrations();
          if (pending.length) {
            throw new CartdError("failure", `pending migrations: ${pending.join(", ")}`);
          }
          console.log("schema is up to date");
        }, { migrate: false });
      } catch (err) {
        if (!(err instanceof MissingDatabase)) throw err;
        throw new CartdError("failure", `${err.message}; "cartd db migrate" creates it`);
      }
    });
  return db;
}
