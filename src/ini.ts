/**
 * A parser for the INI dialect of Python's configparser, which Pacifica's config files are written
 * in: `[section]`, `key = value` or `key: value`, whole-line `;`/`#` comments, no inline comments
 * (values such as database URLs may contain `;` and `#`), case-folded keys, indented continuation
 * lines and a `[DEFAULT]` section merged into every other one. Values stay strings.
 */

/** Section name → key → value, as configparser would give them. */
export type IniSections = Record<string, Record<string, string>>;

/** A line the INI reader cannot make sense of; the message names the line. */
export class IniSyntaxError extends Error {}

/** The sections of an INI text, keys lower-cased, `[DEFAULT]` merged into each. */
export function parseIni(text: string): IniSections {
  const sections: IniSections = {};
  const defaults: Record<string, string> = {};
  let current: Record<string, string> | undefined;
  let lastKey: string | undefined;
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = raw.trimEnd();
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith(";") || trimmed.startsWith("#")) {
      if (trimmed === "") lastKey = undefined;
      return;
    }
    if (/^\s/.test(line) && current && lastKey !== undefined) {
      current[lastKey] += `\n${trimmed}`;
      return;
    }
    const section = /^\[([^\]]+)\]$/.exec(trimmed);
    if (section) {
      const name = section[1].trim();
      // configparser (strict, its default) refuses a section or key given twice.
      if (name !== "DEFAULT" && sections[name] !== undefined) {
        throw new IniSyntaxError(`line ${index + 1}: section [${name}] appears twice`);
      }
      current = name === "DEFAULT" ? defaults : (sections[name] = {});
      lastKey = undefined;
      return;
    }
    const pair = /^([^=:]+?)\s*[=:]\s*(.*)$/.exec(trimmed);
    if (!pair || !current) {
      throw new IniSyntaxError(`line ${index + 1}: expected "[section]" or "key = value"`);
    }
    lastKey = pair[1].toLowerCase();
    if (Object.hasOwn(current, lastKey)) {
      throw new IniSyntaxError(`line ${index + 1}: key ${lastKey} is set twice in its section`);
    }
    current[lastKey] = pair[2];
  });
  for (const values of Object.values(sections)) {
    for (const [key, value] of Object.entries(defaults)) values[key] ??= value;
  }
  return sections;
}
