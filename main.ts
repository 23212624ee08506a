/**
 * cartd: stages files out of a (often tape-backed) archive onto a local volume, verifies them, and
 * hands a set of them (a cart) out as one tar. Run `cartd --help`.
 */
import { run } from "./commands/program.ts";

if (import.meta.main) {
  Deno.exit(await run(Deno.args));
}
