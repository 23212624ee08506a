/**
 * Rewrites README's generated part, the configuration table, from the key table in src/config.ts
 * (the one place keys are defined), then formats README. `deno task docs`; a test fails while
 * README and the code disagree.
 */
import { configTableMarkdown } from "../src/config.ts";

/** The markers around the generated table in README.md. */
const tableStart = "<!-- config-table: made from src/config.ts by `deno task docs` -->";
const tableEnd = "<!-- /config-table -->";

/** README's text with the table between the markers made anew. */
export function withConfigTable(readme: string): string {
  const start = readme.indexOf(tableStart);
  const end = readme.indexOf(tableEnd);
  if (start < 0 || end < start) throw new Error("README.md has no config-table markers");
  return `${readme.slice(0, start + tableStart.length)}\n\n${configTableMarkdown()}\n\n${
    readme.slice(end)
  }`;
}

if (import.meta.main) {
  const file = new URL("../README.md", import.meta.url);
  await Deno.writeTextFile(file, withConfigTable(await Deno.readTextFile(file)));
  const fmt = await new Deno.Command(Deno.execPath(), { args: ["fmt", file.pathname] }).output();
  if (!fmt.success) Deno.exit(1);
}
