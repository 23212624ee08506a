/** The volume's partial files: one per claim, and what earlier claims left is cleared. */
import { join } from "node:path";
import { assertEquals } from "../../tests/support/assert.ts";
import { Volume } from "./volume.ts";

Deno.test("a claim's partial file is its own; earlier claims' partials of the file are removed", async () => {
  const volume = new Volume(await Deno.makeTempDir());
  const folder = join(volume.cartDir(7), "partial");
  await Deno.mkdir(folder, { recursive: true });
  for (const name of ["3.old-1.part", "3.part", "30.other.part", "4.x.part"]) {
    await Deno.writeTextFile(join(folder, name), "x");
  }
  const partial = await volume.claimPartial(7, 3, "new-2");
  assertEquals(partial, join(folder, "3.new-2.part"));
  const left = [...Deno.readDirSync(folder)].map((e) => e.name).sort();
  assertEquals(left, ["30.other.part", "4.x.part"], "only file 3's are cleared");
  assertEquals(
    await volume.claimPartial(8, 1, "t"),
    join(volume.cartDir(8), "partial", "1.t.part"),
  );
});
