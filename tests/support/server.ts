/** `cartd serve` as a subprocess on a free loopback port. */
import { sleep } from "../../src/time.ts";
import { cliCommand } from "./cli.ts";

export interface RunningServer {
  url: string;
  child: Deno.ChildProcess;
  /** Resolves with the exit status once the process ends. */
  exited: Promise<Deno.CommandStatus>;
  /** Everything the server wrote to stderr so far. */
  log(): string;
}

export async function startServer(
  env: Record<string, string>,
  args: string[] = [],
): Promise<RunningServer> {
  const child = cliCommand(["serve", "--port", "0", ...args], { env }).spawn();
  let stderr = "";
  const decoder = new TextDecoder();
  (async () => {
    for await (const chunk of child.stderr) stderr += decoder.decode(chunk, { stream: true });
  })();
  const reader = child.stdout.getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`cartd serve did not start: ${stderr}`);
    out += decoder.decode(value);
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  const url = /http:\/\/[^\s]+/.exec(out)![0];
  return { url, child, exited: child.status, log: () => stderr };
}

/** Polls HEAD /<uid> until X-Pacifica-Status is no longer `staging`, as the real downloader does. */
export async function waitWhileStaging(
  url: string,
  intervalMs = 1000,
  timeoutMs = 60_000,
  headers: Record<string, string> = {},
): Promise<Response> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const response = await fetch(url, { method: "HEAD", headers });
    const status = response.headers.get("x-pacifica-status");
    const message = response.headers.get("x-pacifica-message");
    if (status === null || message === null) throw new Error("a Pacifica header is missing");
    if ((response.status === 204 && status !== "staging") || response.status === 500) {
      return response;
    }
    if (Date.now() > deadline) throw new Error(`still staging after ${timeoutMs} ms`);
    await sleep(intervalMs);
  }
}
