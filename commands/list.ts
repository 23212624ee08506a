/** `cartd list [--json]`: every active cart (the original's `dump`). */
import { Command } from "@commander-js/extra-typings";
import type { CartListing } from "../src/cart/service.ts";
import { formatBytes } from "../src/units.ts";
import { MissingDatabase } from "../src/cartd.ts";
import { type GlobalOptions, withCartd } from "./context.ts";

/** The `list` subcommand (alias `dump`). */
export function listCommand(globals: () => GlobalOptions) {
  return new Command("list")
    .alias("dump")
    .description("list every active cart: status, files, size, created and last used")
    .option("--json", "print the carts as JSON")
    .action(async (options) => {
      let carts: CartListing[];
      try {
        carts = await withCartd(globals(), ({ service }) => service.list());
      } catch (err) {
        // No database at all: there are no carts, but say where cartd looked.
        if (!(err instanceof MissingDatabase)) throw err;
        console.error(`cartd: ${err.message}`);
        carts = [];
      }
      if (options.json) return console.log(JSON.stringify(carts, null, 2));
      if (carts.length === 0) return console.log("no carts");
      const rows = carts.map((c) => [
        c.uid,
        c.status,
        String(c.files),
        formatBytes(c.bytes),
        c.created,
        c.lastUsed,
      ]);
      const header = ["UID", "STATUS", "FILES", "SIZE", "CREATED", "LAST USED"];
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
      for (const row of [header, ...rows]) {
        console.log(row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd());
      }
    });
}
