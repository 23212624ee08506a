/**
 * `cartd list [--json]`: every active cart (the original's `dump`), and what the shared cache
 * holds that no cart refers to (the text only: the JSON stays the list of carts).
 */
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
      let cache = { files: 0, bytes: 0 };
      try {
        [carts, cache] = await withCartd(
          globals(),
          ({ service }) => Promise.all([service.list(), service.cacheTotals()]),
        );
      } catch (err) {
        // No database at all: there are no carts, but say where cartd looked.
        if (!(err instanceof MissingDatabase)) throw err;
        console.error(`cartd: ${err.message}`);
        carts = [];
      }
      if (options.json) return console.log(JSON.stringify(carts, null, 2));
      const cached = cache.files > 0
        ? `cache: ${cache.files} file(s), ${formatBytes(cache.bytes)} no cart refers to`
        : "";
      if (carts.length === 0) return console.log(cached ? `no carts; ${cached}` : "no carts");
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
      if (cached) console.log(cached);
    });
}
