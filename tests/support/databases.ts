/**
 * The database engines tests run against: each gives a fresh, empty database URL per call. SQLite
 * is a file in a temporary folder; PostgreSQL a new database on this test module's throwaway
 * cluster (tests/support/postgres.ts), which a failure to start fails, never skips.
 */
import { join } from "node:path";
import { testPostgres } from "./postgres.ts";

/** An engine, by name, and a way to make a new empty database on it. */
export interface TestEngine {
  name: "sqlite" | "postgres";
  freshDatabase(): Promise<string>;
}

/** Both engines, in the order tests run them. */
export const engines: TestEngine[] = [
  {
    name: "sqlite",
    freshDatabase: async () => join(await Deno.makeTempDir(), "cartd.sqlite3"),
  },
  {
    name: "postgres",
    freshDatabase: async () => (await testPostgres()).createDatabase(),
  },
];

let current: TestEngine | undefined;

/** The engine the running test was registered for (tests in a module run one at a time). */
export function currentEngine(): TestEngine | undefined {
  return current;
}

/**
 * Registers `body` once per engine, named `<engine>: <name>`; cartd opened by `openTestCartd`
 * inside it uses that engine.
 */
export function testOnEngines(name: string, body: () => Promise<void>): void {
  for (const engine of engines) {
    Deno.test(`${engine.name}: ${name}`, async () => {
      current = engine;
      try {
        await body();
      } finally {
        current = undefined;
      }
    });
  }
}
