/**
 * Names of lease owners: `<host>:<pid>:<nonce>`. A process that finds leases held by a process of
 * its own host that is no longer running takes them back at once, instead of waiting for them to
 * run out (a `cartd bundle` or `cartd serve` restarted after a crash carries straight on).
 */
import { hostname } from "node:os";
import process from "node:process";

/** A name for this process's leases: its host and pid (so a restart can reap them), and a nonce. */
export function newOwnerName(): string {
  return `${hostname()}:${Deno.pid}:${crypto.randomUUID().slice(0, 8)}`;
}

/** True when `owner` names a process of this host that has exited. */
export function isDeadLocalOwner(owner: string): boolean {
  const [host, pidText] = owner.split(":");
  const pid = Number(pidText);
  if (host !== hostname() || !Number.isInteger(pid) || pid <= 0 || pid === Deno.pid) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as { code?: string }).code !== "EPERM";
  }
  return isZombie(pid);
}

/**
 * A process killed a moment ago stays a zombie until its parent reaps it: it can still be
 * signalled, but it will never renew a lease again.
 */
function isZombie(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the command name (in parentheses, which may contain spaces): state first.
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state === "Z" || state === "X";
  } catch {
    return false;
  }
}
