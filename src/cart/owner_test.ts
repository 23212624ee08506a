/** Lease owners: which names belong to processes of this host that are gone. */
import { hostname } from "node:os";
import { assertEquals } from "../../tests/support/assert.ts";
import { isDeadLocalOwner, newOwnerName } from "./owner.ts";

Deno.test("a living process, a zombie, an exited pid, another host, and ourselves", async () => {
  // A parent that keeps its exited child unreaped: a zombie, as a just-killed cartd can be.
  const parent = new Deno.Command("python3", {
    args: [
      "-c",
      "import subprocess,time; c=subprocess.Popen(['true']); print(c.pid, flush=True); time.sleep(30)",
    ],
    stdout: "piped",
  }).spawn();
  try {
    const reader = parent.stdout.getReader();
    const zombie = Number(new TextDecoder().decode((await reader.read()).value).trim());
    reader.releaseLock();
    await new Promise((r) => setTimeout(r, 300));
    const owner = (pid: number) => `${hostname()}:${pid}:nonce`;
    assertEquals(isDeadLocalOwner(owner(parent.pid)), false, "alive");
    assertEquals(isDeadLocalOwner(owner(zombie)), true, "a zombie never renews a lease");
    assertEquals(isDeadLocalOwner(owner(999_999_999)), true, "no such process");
    assertEquals(isDeadLocalOwner(`elsewhere:${zombie}:nonce`), false, "another host's owner");
    assertEquals(isDeadLocalOwner(newOwnerName()), false, "this process");
  } finally {
    parent.kill();
    await parent.status;
    await parent.stdout.cancel().catch(() => {});
  }
});
