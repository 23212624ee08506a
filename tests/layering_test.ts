/**
 * The architecture, checked: front ends (commands/, src/http/) reach the core only through
 * src/cartd.ts and the service (the compiler keeps them from the store and volume, which `Cartd`
 * does not expose), SQL stays in src/store, and no module imports itself round a cycle.
 */
import { dirname, join, relative, resolve } from "node:path";
import { assertEquals } from "./support/assert.ts";

const root = resolve(new URL("..", import.meta.url).pathname);

/** Every non-test TypeScript module under `dir`, as paths relative to the repository. */
async function modules(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(join(root, dir))) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) out.push(...await modules(path));
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts")) out.push(path);
  }
  return out.sort();
}

/** What a module imports: relative ones resolved to repository paths, others as written. */
async function importsOf(module: string): Promise<string[]> {
  const text = await Deno.readTextFile(join(root, module));
  const specifiers = [...text.matchAll(/^(?:import|export)\s[^;]*?from\s+"([^"]+)"/gms)]
    .map((m) => m[1]);
  return specifiers.map((s) =>
    s.startsWith(".") ? relative(root, resolve(root, dirname(module), s)) : s
  );
}

Deno.test("front ends use the core's entry point and service, never the store, archive or volume", async () => {
  const forbidden = /^src\/(store|archive|volume)\//;
  const offences: string[] = [];
  for (const module of [...await modules("commands"), ...await modules("src/http")]) {
    for (const imported of await importsOf(module)) {
      if (forbidden.test(imported) || imported === "kysely") {
        offences.push(`${module} → ${imported}`);
      }
    }
    const text = await Deno.readTextFile(join(root, module));
    if (/\bopenCartdCore\b|\bCartdCore\b/.test(text)) {
      offences.push(`${module} opens the core's parts`);
    }
  }
  assertEquals(offences, []);
});

Deno.test("SQL is written in src/store only", async () => {
  const offences: string[] = [];
  for (const module of [...await modules("src"), ...await modules("commands")]) {
    if (module.startsWith("src/store/")) continue;
    for (const imported of await importsOf(module)) {
      if (imported.startsWith("kysely") || imported === "node:sqlite") {
        offences.push(`${module} → ${imported}`);
      }
    }
  }
  assertEquals(offences, []);
});

Deno.test("no import cycles among cartd's modules", async () => {
  const all = [...await modules("src"), ...await modules("commands")];
  const graph = new Map<string, string[]>();
  for (const module of all) {
    graph.set(module, (await importsOf(module)).filter((i) => all.includes(i)));
  }
  const cycles: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (module: string, path: string[]) => {
    if (state.get(module) === "done") return;
    if (state.get(module) === "visiting") {
      cycles.push([...path.slice(path.indexOf(module)), module].join(" → "));
      return;
    }
    state.set(module, "visiting");
    for (const next of graph.get(module)!) visit(next, [...path, module]);
    state.set(module, "done");
  };
  for (const module of all) visit(module, []);
  assertEquals(cycles, []);
});
