/**
 * Staging throughput of one large cart from a `file://` archive: many small files, so the
 * per-file bookkeeping (claims, reservations, settling) dominates rather than I/O.
 *
 *   deno run -A bench/stage_bench.ts [--files 20000] [--size 1000] [--workers 4]
 */
import { parseArgs } from "node:util";
import { parseCartRequest } from "../src/cart/request.ts";
import { makeArchive } from "../tests/support/archive.ts";
import { openTestCartd } from "../tests/support/cartd.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    files: { type: "string", default: "20000" },
    size: { type: "string", default: "1000" },
    workers: { type: "string", default: "4" },
  },
});
const count = Number(values.files);
// One archive file, requested under many cart paths: the archive side stays cheap.
const archive = await makeArchive([{ id: "blob", size: Number(values.size) }]);
const [template] = archive.request.fileids;
const request = {
  fileids: Array.from({ length: count }, (_, i) => ({ ...template, path: `d${i % 100}/f${i}` })),
};
const cartd = await openTestCartd(`file://${archive.dir}`, { CARTD_WORKERS: values.workers });
try {
  let started = performance.now();
  const { cart } = await cartd.service.create("bench", parseCartRequest(JSON.stringify(request)));
  const createMs = performance.now() - started;
  started = performance.now();
  const done = await cartd.worker().drainCart(cart.id);
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `${count} files of ${values.size} B, ${values.workers} workers: created in ${
      createMs.toFixed(0)
    } ms, ` +
      `${done?.status} after ${seconds.toFixed(1)} s = ${(count / seconds).toFixed(0)} files/s`,
  );
} finally {
  await cartd.close();
  await Deno.remove(archive.dir, { recursive: true });
}
