/** Character classes cartd refuses or cleans in names, paths and messages. */

/** A C0 or C1 control character (NUL, CR, LF, ESC, ... and U+0080 to U+009F). */
// deno-lint-ignore no-control-regex
export const controlCharacter = /[\u0000-\u001f\u007f-\u009f]/;

/** Every control character in a string, for replacing them. */
export const controlCharacters = new RegExp(controlCharacter.source, "g");

/** Text of printable ASCII only (what a ustar header or a plain header parameter can carry). */
export const printableAscii = /^[\x20-\x7e]*$/;

/** Each character outside printable ASCII, for replacing them. */
export const notPrintableAscii = /[^\x20-\x7e]/g;

/**
 * Text with a URL's password (up to the last `@` of its authority, as URL parsers read it) and
 * any `password=` parameter shown as `***`: for messages and `config show`.
 */
export function maskSecrets(text: string): string {
  return text.replace(/(\/\/[^/@:]*:)[^/]*@/g, "$1***@").replace(/(password=)[^&\s]*/gi, "$1***");
}
