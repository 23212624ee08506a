/**
 * `cartd gc` (from cron): expired carts, carts unused for too long, then least-recently-used ones
 * until a free-space target is met. `cartd purge --time-ago "N days ago"` is the original's
 * admin command, kept as an alias for `gc --older-than`.
 */
import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { parseSpaceAmount } from "../src/config.ts";
import type { GcOptions, GcReport } from "../src/cart/service.ts";
import { durationProblem, formatBytes, parseDuration, parseTimeAgo } from "../src/units.ts";
import { MissingDatabase } from "../src/cartd.ts";
import { type GlobalOptions, withCartd } from "./context.ts";

function duration(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined) throw new InvalidArgumentError(durationProblem(value));
  return ms;
}

function space(value: string) {
  const amount = parseSpaceAmount(value);
  if (!amount) {
    throw new InvalidArgumentError('expected a share such as "20%" or a size such as "50 GB"');
  }
  return amount;
}

function timeAgo(value: string): number {
  const ms = parseTimeAgo(value);
  if (ms === undefined) {
    throw new InvalidArgumentError('expected "N unit ago", e.g. "180 days ago"');
  }
  return ms;
}

async function runGc(globals: GlobalOptions, options: GcOptions, json: boolean) {
  try {
    await withCartd(globals, async ({ service }) => {
      const report = await service.collectGarbage(options);
      console.log(json ? JSON.stringify(report, null, 2) : describeReport(report));
    });
  } catch (err) {
    // No database: nothing was ever staged with this configuration, so nothing to collect.
    if (!(err instanceof MissingDatabase)) throw err;
    console.error(`cartd: ${err.message}`);
    const report = { dryRun: options.dryRun ?? false, removed: [], missingDatabase: err.file };
    console.log(json ? JSON.stringify(report, null, 2) : "nothing to do");
  }
}

function describeReport(report: GcReport): string {
  const verb = report.dryRun ? "would remove" : "removed";
  const lines = report.removed.map((r) =>
    `${verb} ${r.uid} (${formatBytes(r.bytes)}): ${r.reason}`
  );
  if (report.strayDirectories > 0) {
    lines.push(
      `${verb} ${report.strayDirectories} cart director${
        report.strayDirectories === 1 ? "y" : "ies"
      } no cart owns`,
    );
  }
  if (report.cache.files > 0) {
    lines.push(
      `${verb} ${report.cache.files} cached file(s) no cart refers to (${
        formatBytes(report.cache.bytes)
      })`,
    );
  }
  if (lines.length === 0) return `nothing to do; ${formatBytes(report.freeBefore)} free`;
  // Freed as the volume sees it: files carts shared count once.
  const freed = Math.max(0, report.freeAfter - report.freeBefore);
  lines.push(
    `${report.removed.length} cart(s); ${formatBytes(freed)} freed; ${
      formatBytes(report.freeAfter)
    } free` +
      (report.dryRun ? " afterwards" : ""),
  );
  return lines.join("\n");
}

/** The `gc` subcommand, for cron. */
export function gcCommand(globals: () => GlobalOptions) {
  return new Command("gc")
    .description(
      "remove expired carts, carts unused for --older-than, then least-recently-used carts " +
        "until --free is met; safe to run from cron beside cartd serve",
    )
    .option("--dry-run", "report what would be removed, remove nothing")
    .option("--json", "print the report as JSON")
    .option("--older-than <duration>", "remove carts not used for this long (e.g. 30d)", duration)
    .option("--free <target>", "evict until this much is free (e.g. 20% or 50 GB)", space)
    .action(async (options) => {
      await runGc(globals(), {
        dryRun: options.dryRun ?? false,
        olderThan: options.olderThan,
        free: options.free,
      }, options.json ?? false);
    });
}

/** The original's `purge`: `gc --older-than` in its own words. */
export function purgeCommand(globals: () => GlobalOptions) {
  return new Command("purge")
    .description('remove carts not used since --time-ago (the original\'s purge; "180 days ago")')
    .option(
      "--time-ago <when>",
      '"N unit ago", with days, hours, minutes, seconds or weeks',
      timeAgo,
    )
    .option("--dry-run", "report what would be removed, remove nothing")
    .option("--json", "print the report as JSON")
    .action(async (options) => {
      await runGc(globals(), {
        dryRun: options.dryRun ?? false,
        olderThan: options.timeAgo ?? 180 * 86_400_000,
        skipExpired: true,
      }, options.json ?? false);
    });
}
