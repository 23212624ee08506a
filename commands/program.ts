/**
 * The `cartd` command line: global flags, the subcommands, and the one place that turns errors
 * into messages and exit codes (no stack trace reaches a user).
 */
import { Command, CommanderError, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { CartdError, describe } from "../src/errors.ts";
import { log } from "../src/log.ts";
import { bundleCommand } from "./bundle.ts";
import { configCommand } from "./config.ts";
import { createCommand } from "./create.ts";
import { dbCommand } from "./db.ts";
import { deleteCommand } from "./delete.ts";
import { gcCommand, purgeCommand } from "./gc.ts";
import { getCommand } from "./get.ts";
import { listCommand } from "./list.ts";
import { retryCommand } from "./retry.ts";
import { serveCommand } from "./serve.ts";
import { statusCommand } from "./status.ts";
import type { GlobalOptions } from "./context.ts";
import { ExitCode, exitCode } from "./exit_codes.ts";

import { version } from "../src/version.ts";

/** The `cartd` command with its global flags and every subcommand. */
function buildProgram(): Command {
  const program = new Command("cartd")
    .description(
      "Stage files out of an archive (tape or disk), verify them, and hand them out as one tar.",
    )
    .version(version)
    .option("-c, --config <file>", "INI config file (default: $CARTD_CONFIG, else ./cartd.ini)")
    .option("--volume <dir>", "cart storage directory ([cartd] volume_path)")
    .option("--archive-url <url>", "archive interface URL or file:///dir ([archiveinterface] url)")
    .option("--database <url>", "database URL or SQLite path ([database] peewee_url)")
    .showHelpAfterError()
    .addHelpText(
      "after",
      `
Exit codes: 0 ok, 1 failure, 2 usage or invalid request, 3 no such cart,
            4 cart not ready, 5 cart in error, 6 bad configuration.`,
    );
  const globals = () => program.opts() as GlobalOptions;
  for (
    const sub of [
      createCommand(globals),
      bundleCommand(globals),
      retryCommand(globals),
      statusCommand(globals),
      getCommand(globals),
      deleteCommand(globals),
      listCommand(globals),
      gcCommand(globals),
      purgeCommand(globals),
      dbCommand(globals),
      configCommand(globals),
      serveCommand(globals),
    ]
  ) {
    program.addCommand(sub as unknown as Command);
  }
  return program as unknown as Command;
}

/** Runs the command line and returns the process exit code. */
export async function run(args: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  for (const sub of program.commands) exitOverrideDeep(sub);
  try {
    await program.parseAsync(args, { from: "user" });
    return ExitCode.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version are not errors; commander has already printed its message.
      if (["commander.helpDisplayed", "commander.version", "commander.help"].includes(err.code)) {
        return ExitCode.ok;
      }
      return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    if (err instanceof CartdError) {
      console.error(`cartd: ${err.message}`);
      if (err.hint) console.error(`cartd: ${err.hint}`);
      return exitCode[err.kind];
    }
    if (err instanceof Deno.errors.NotCapable) {
      // Run under narrower Deno permissions than this needs: Deno's message names the flag.
      console.error(`cartd: Deno's permissions do not allow this: ${err.message}`);
      return ExitCode.failure;
    }
    log.error(`unexpected failure: ${describe(err)}`);
    if (err instanceof Error && err.stack) log.debug(err.stack);
    console.error(`cartd: internal error: ${describe(err)}`);
    return ExitCode.failure;
  }
}

function exitOverrideDeep(command: CommandUnknownOpts) {
  command.exitOverride();
  for (const sub of command.commands) exitOverrideDeep(sub);
}
