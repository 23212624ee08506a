/** `cartd db migrate` (alias `dbsync`), `cartd db check`, `cartd db backup` and `cartd db copy`. */
import { Command } from "@commander-js/extra-typings";
import { assertBackupSupported, copyDatabase, MissingDatabase, newerSchema } from "../src/cartd.ts";
import { CartdError } from "../src/errors.ts";
import { formatBytes } from "../src/units.ts";
import { type GlobalOptions, resolveConfig, withCartd } from "./context.ts";

/** The `db` subcommand and its own subcommands: the schema is changed only when asked. */
export function dbCommand(globals: () => GlobalOptions) {
  const db = new Command("db").description(
    "database schema: migrate, check, back up, or copy a database",
  );
  db.command("migrate").alias("dbsync")
    .description("create or update the database schema (refused for a newer cartd's schema)")
    .action(async () => {
      await withCartd(globals(), async (cartd) => {
        const applied = await cartd.migrate();
        console.log(applied.length ? `applied: ${applied.join(", ")}` : "schema is up to date");
      }, { create: true, checkSchema: false });
    });
  db.command("check")
    .description("exit 0 when the schema is up to date, 1 when it is older or newer than cartd's")
    .action(async () => {
      try {
        await withCartd(globals(), async (cartd) => {
          const state = await cartd.schema();
          if (state.unknown.length) throw newerSchema(state);
          if (state.pending.length) {
            throw new CartdError("failure", `pending migrations: ${state.pending.join(", ")}`)
              .withHint('run "cartd db migrate" to apply them');
          }
          console.log("schema is up to date");
        }, { checkSchema: false });
      } catch (err) {
        if (!(err instanceof MissingDatabase)) throw err;
        throw new CartdError("failure", `${err.message}; "cartd db migrate" creates it`);
      }
    });
  db.command("backup")
    .description(
      "a consistent copy of the SQLite database in FILE, safe while cartd serves " +
        "(PostgreSQL: use pg_dump)",
    )
    .argument("<file>", "where the copy goes (a new file)")
    .action(async (file) => {
      // Said before connecting to anything.
      const config = resolveConfig(globals());
      assertBackupSupported(config);
      await withCartd(globals(), async (cartd) => {
        const { bytes } = await cartd.backup(file);
        console.log(`backed up to ${file} (${formatBytes(bytes)})`);
        // As it is: a backup taken before an upgrade must still be the old schema.
      }, { checkSchema: false });
    });
  db.command("copy")
    .description(
      "copy every cart and file of one database into another (SQLite to PostgreSQL as a site " +
        "grows, or back), ids, states and use times kept; stop the site's cartd processes first",
    )
    .argument("<from>", "the database to copy: a SQLite path or URL, or a postgres:// URL")
    .argument("<to>", "the database to fill: set up if needed, and empty unless --force")
    .option("--force", "replace whatever carts the target already holds")
    .action(async (from, to, options) => {
      const config = resolveConfig(globals());
      const report = await copyDatabase(from, to, config, { force: options.force ?? false });
      console.log(`copied ${report.carts} cart(s) and ${report.files} file(s)`);
    });
  return db;
}
