/** Lease owners: which names belong to processes of this machine that are gone. */
import { assertEquals } from "../../tests/support/assert.ts";
import { isDeadLocalOwner, newOwnerName, ownerNameFor } from "./owner.ts";

Deno.test("a living process, a zombie, an exited pid, a reused pid, another host or container, and ourselves", async () => {
  // A parent that keeps its exited child unreaped: a zombie, as a just-killed cartd can be.
  const parent = new Deno.Command("python3", {
    args: [
      "-c",
      "import subprocess,time; c=subprocess.Popen(['sleep','0.2']); print(c.pid, flush=True); time.sleep(30)",
    ],
    stdout: "piped",
  }).spawn();
  try {
    const reader = parent.stdout.getReader();
    const child = Number(new TextDecoder().decode((await reader.read()).value).trim());
    reader.releaseLock();
    const childOwner = ownerNameFor(child); // read while it runs: its start time is in the name
    await new Promise((r) => setTimeout(r, 600));
    const alive = ownerNameFor(parent.pid);
    assertEquals(isDeadLocalOwner(alive), false, "alive");
    assertEquals(isDeadLocalOwner(childOwner), true, "a zombie never renews a lease");
    assertEquals(isDeadLocalOwner(ownerNameFor(999_999_999)), true, "no such process");
    const [host, pid, where, nonce] = alive.split(":");
    const [boot, namespace] = where.split(".");
    assertEquals(
      isDeadLocalOwner([host, pid, `${boot}.${namespace}.1`, nonce].join(":")),
      true,
      "the pid now names a process that started at another time",
    );
    assertEquals(
      isDeadLocalOwner(["elsewhere", pid, where, nonce].join(":")),
      false,
      "another host",
    );
    assertEquals(
      isDeadLocalOwner([host, "999999999", `${boot}.1.0`, nonce].join(":")),
      false,
      "another pid namespace (a container with our host name): not ours to judge",
    );
    assertEquals(isDeadLocalOwner(`${newOwnerName()}#3`), false, "this process, any claim of it");
  } finally {
    parent.kill();
    await parent.status;
    await parent.stdout.cancel().catch(() => {});
  }
});
