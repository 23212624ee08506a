/** How commands show carts to people. */
import type { CartReport } from "../src/cart/service.ts";
import { formatBytes } from "../src/units.ts";

/**
 * One line: `uid: status (phase), 3/10 files ready, 1.2 MiB of 5.0 MiB; message`, saying too how
 * many ready files no checksum verified.
 */
export function statusLine(report: CartReport): string {
  const phase = report.phase !== report.status ? ` (${report.phase})` : "";
  const p = report.progress;
  const sizes = p.sizesKnown === p.filesTotal
    ? `${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)}`
    : `${formatBytes(p.bytesDone)} so far`;
  const unverified = p.filesUnverified > 0
    ? `, ${p.filesUnverified} of them unverified (no checksum given)`
    : "";
  const message = report.message ? `; ${report.message}` : "";
  return `${report.uid}: ${report.status}${phase}, ${p.filesReady}/${p.filesTotal} files ready` +
    `${unverified}, ${sizes}${message}`;
}
