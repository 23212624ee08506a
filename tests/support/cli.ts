/** Runs the real `cartd` command line as a subprocess. */
const main = new URL("../../main.ts", import.meta.url).pathname;

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string>;
  cwd?: string;
  stdin?: string;
}

/** Environment variables that point cartd at a test volume and archive, with quick timings. */
export function cartdEnv(
  volume: string,
  archiveUrl: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    VOLUME_PATH: volume,
    ARCHIVE_INTERFACE_URL: archiveUrl,
    CARTD_POLL_INTERVAL: "100ms",
    CARTD_RETRY_INTERVAL: "50ms",
    CARTD_LEASE_TIME: "2s",
    ...extra,
  };
}

export function cliCommand(args: string[], options: CliOptions = {}): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", main, ...args],
    cwd: options.cwd,
    env: { NO_COLOR: "1", RUST_BACKTRACE: "0", CARTD_CONFIG: "", ...options.env },
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  });
}

export async function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const child = cliCommand(args, options).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}
