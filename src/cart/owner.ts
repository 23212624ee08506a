/**
 * Names of lease owners: `<host>:<pid>:<boot>.<pid namespace>.<start>:<nonce>`. A process that
 * finds leases held by a process of its own host that is no longer running takes them back at
 * once, instead of waiting for them to run out (a `cartd bundle` or `cartd serve` restarted after a
 * crash carries straight on).
 *
 * The host name alone does not say "this machine": containers that share a host name (host
 * networking, a set `hostname:`) each have their own processes. So an owner is judged only by a
 * process that shares its boot (the kernel's boot id) and its pid namespace, and a pid counts as
 * the same process only with the same start time (pids are reused). Where /proc cannot tell, no
 * one else's lease is reaped: it runs out instead.
 */
import { hostname } from "node:os";
import process from "node:process";

/** What makes a pid name one process: the boot, the pid namespace, and the process's start. */
interface ProcessScope {
  boot: string;
  namespace: string;
}

function readProc(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/** The state and start time (clock ticks since boot) of a process, from /proc/<pid>/stat. */
function processStat(pid: number | "self"): { state: string; start: string } | undefined {
  const stat = readProc(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  // The command name is in parentheses and may hold spaces: the fields after it are plain.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { state: fields[0], start: fields[19] };
}

function localScope(): ProcessScope | undefined {
  const boot = readProc("/proc/sys/kernel/random/boot_id")?.trim().slice(0, 8);
  let namespace: string | undefined;
  try {
    namespace = /\[(\d+)\]/.exec(Deno.readLinkSync("/proc/self/ns/pid"))?.[1];
  } catch {
    namespace = undefined;
  }
  return boot && namespace ? { boot, namespace } : undefined;
}

const scope = localScope();

/** A name for this process's leases: host, pid and what makes the pid this process; a nonce. */
export function newOwnerName(): string {
  return ownerNameFor(Deno.pid);
}

/** The owner name a process of this machine would have (for this one, and for tests). */
export function ownerNameFor(pid: number): string {
  const start = processStat(pid === Deno.pid ? "self" : pid)?.start ?? "0";
  const where = scope ? `${scope.boot}.${scope.namespace}.${start}` : "unknown";
  return `${hostname()}:${pid}:${where}:${crypto.randomUUID().slice(0, 8)}`;
}

/** True when `owner` names a process of this machine and pid namespace that has exited. */
export function isDeadLocalOwner(owner: string): boolean {
  const [host, pidText, where] = owner.split(":");
  const pid = Number(pidText);
  if (host !== hostname() || !Number.isInteger(pid) || pid <= 0 || pid === Deno.pid) return false;
  const [boot, namespace, start] = (where ?? "").split(".");
  if (!scope || boot !== scope.boot || namespace !== scope.namespace) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    // ESRCH alone says there is no such process. EPERM: it exists, as someone else's; without
    // permission to ask (Deno's --allow-run), nothing is known, and the lease runs out instead.
    return (err as { code?: string }).code === "ESRCH";
  }
  const stat = processStat(pid);
  if (!stat) return true;
  // A zombie (killed a moment ago, not reaped yet) never renews a lease again; a pid that
  // started at another time is another process.
  return stat.state === "Z" || stat.state === "X" || stat.start !== start;
}
