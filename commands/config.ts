/**
 * `cartd config show [--json]`: every effective value and where it came from (default, file,
 * environment, command line), secrets masked. `cartd config check`: exits non-zero on a bad value
 * or a key cartd does not know (a misspelt key would otherwise silently not apply).
 */
import { Command } from "@commander-js/extra-typings";
import { configFrom, readConfigSources, type SetValue, suggestion } from "../src/config.ts";
import { shownUrl } from "../src/cart/notifier.ts";
import { configError } from "../src/errors.ts";
import { maskSecrets } from "../src/text.ts";
import { TokenFile } from "../src/http/auth.ts";
import { configSources, type GlobalOptions } from "./context.ts";

/** What `config show` says of one key. */
function shown(value: SetValue, databaseUrl: string) {
  const { key, text, source } = value;
  let effective = text;
  if (key.field === "databaseUrl" && text.trim() === "") effective = databaseUrl;
  // Webhook URLs carry their secret in the path or query: only their origins are shown.
  if (key.kind === "url-list") {
    effective = text.split(/[\s,]+/).filter((u) => u !== "").map(shownUrl).join(", ");
  }
  return {
    key: `${key.section}.${key.key}`,
    section: key.section,
    name: key.key,
    env: key.env,
    value: maskSecrets(effective),
    shownDefault: key.shownDefault,
    source: source.from,
    ...(source.from === "file" ? { file: source.file } : {}),
    ...(source.from === "env" ? { variable: source.variable } : {}),
  };
}

function readAndCheck(globals: GlobalOptions) {
  const reading = readConfigSources(configSources(globals));
  const config = configFrom(reading);
  return { reading, config, databaseUrl: config.databaseUrl };
}

/** The `config` subcommand and its own subcommands. */
export function configCommand(globals: () => GlobalOptions) {
  const config = new Command("config").description("show or check the effective configuration");
  config.command("show")
    .description("every key's effective value and where it came from (secrets masked)")
    .option("--json", "as JSON")
    .action((options) => {
      const { reading, databaseUrl } = readAndCheck(globals());
      const keys = reading.values.map((value) => shown(value, databaseUrl));
      if (options.json) {
        console.log(JSON.stringify(
          { file: reading.file ?? null, keys, unknownKeys: reading.unknownKeys },
          null,
          2,
        ));
        return;
      }
      console.log(`# config file: ${reading.file ?? "none"}`);
      const width = Math.max(...keys.map((k) => `[${k.section}] ${k.name} = ${k.value}`.length));
      for (const k of keys) {
        const where = k.source === "file"
          ? `file ${k.file}`
          : k.source === "env"
          ? `environment ${k.variable}`
          : k.source === "flag"
          ? "command line"
          : `default${k.value === "" && k.shownDefault ? ` (${k.shownDefault})` : ""}`;
        console.log(`${`[${k.section}] ${k.name} = ${k.value}`.padEnd(width)}  # ${where}`);
      }
      for (const unknown of reading.unknownKeys) {
        console.log(`# unknown, ignored: ${unknown}${suggestion(unknown)}`);
      }
    });
  config.command("check")
    .description(
      "exit 0 if every value is valid, every key in the file known, and the tokens file usable",
    )
    .action(() => {
      const { reading, config } = readAndCheck(globals());
      // As `cartd serve` will read it: there, safe, and well formed.
      if (config.tokensFile !== "") new TokenFile(config.tokensFile);
      if (reading.unknownKeys.length > 0) {
        const list = reading.unknownKeys.map((k) => `${k}${suggestion(k)}`).join("; ");
        throw configError(`config file ${reading.file}: unknown key(s): ${list}`);
      }
      console.log(`configuration OK (${reading.file ? `file ${reading.file}` : "no config file"})`);
    });
  return config;
}
