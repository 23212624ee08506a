/** How commands show carts to people. */
import type { CartReport } from "../src/cart/service.ts";
import { formatBytes } from "../src/units.ts";

/** One line: `uid: status (phase), 3/10 files ready, 1.2 MiB of 5.0 MiB; message`. */
export function statusLine(report: CartReport): string {
  const phase = report.phase !== report.status ? ` (${report.phase})` : "";
  const sizes = report.bytes.sizesKnown === report.files.total
    ? `${formatBytes(report.bytes.done)} of ${formatBytes(report.bytes.total)}`
    : `${formatBytes(report.bytes.done)} so far`;
  const message = report.message ? `; ${report.message}` : "";
  return `${report.uid}: ${report.status}${phase}, ${report.files.ready}/${report.files.total} files ready, ${sizes}${message}`;
}
