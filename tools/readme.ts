/**
 * Rewrites what is made from the key table in src/config.ts (the one place keys are defined):
 * README's configuration table and the sample `deploy/cartd.ini`, then formats README.
 * `deno task docs`; a test fails while either disagrees with the code.
 */
import { configKeys, configTableMarkdown } from "../src/config.ts";

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

/** Values the sample sets for a systemd install (deploy/cartd.service); the rest stay defaults. */
const sampleValues: Record<string, string> = {
  "cartd.volume_path": "/var/lib/cartd/volume",
  "archiveinterface.url": "http://archive.example.org:8080/",
};

/** The sample INI: every key, what it means, its variable and default; set ones uncommented. */
export function sampleIni(): string {
  const lines = [
    "; cartd configuration: every key, what it means, its environment variable and its default.",
    "; Made from src/config.ts by `deno task docs`. Python configparser syntax: `;` or `#` start a",
    "; comment line; there are no comments after a value. Check it with: cartd config check",
  ];
  const sections = [...new Set(configKeys.map((k) => k.section))];
  for (const section of sections) {
    lines.push("", `[${section}]`);
    for (const k of configKeys.filter((key) => key.section === section)) {
      const meaning = k.meaning.replaceAll("`", "");
      lines.push(
        "",
        `; ${meaning}`,
        `; environment: ${k.env}; default: ${k.shownDefault ?? k.default}`,
      );
      const set = sampleValues[`${k.section}.${k.key}`];
      lines.push(set === undefined ? `;${k.key} = ${k.default}` : `${k.key} = ${set}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

if (import.meta.main) {
  const file = new URL("../README.md", import.meta.url);
  await Deno.writeTextFile(file, withConfigTable(await Deno.readTextFile(file)));
  await Deno.writeTextFile(new URL("../deploy/cartd.ini", import.meta.url), sampleIni());
  const fmt = await new Deno.Command(Deno.execPath(), { args: ["fmt", file.pathname] }).output();
  if (!fmt.success) Deno.exit(1);
}
