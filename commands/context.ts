/**
 * What every subcommand starts from: the global flags, turned into a configuration, and an open
 * cartd (see src/cartd.ts). Only commands that make carts (`create`, `serve`, `db migrate`) create a
 * database; the others look for the one the configuration names and say so when it is not there.
 */
import { type Cartd, MissingDatabase, openCartd, type OpenOptions } from "../src/cartd.ts";
import { type ConfigSources, loadConfig } from "../src/config.ts";
import { configureLog } from "../src/log.ts";

/** Flags every subcommand accepts. */
export interface GlobalOptions {
  config?: string;
  volume?: string;
  archiveUrl?: string;
  database?: string;
}

/** How a subcommand opens cartd, and the keys its own flags set (`section.key` → value). */
export interface ContextOptions extends OpenOptions {
  flags?: Record<string, string | undefined>;
}

/** Where the configuration comes from, given the global flags and a subcommand's own. */
export function configSources(
  options: GlobalOptions,
  flags: Record<string, string | undefined> = {},
): ConfigSources {
  return {
    configFile: options.config,
    flags: {
      "cartd.volume_path": options.volume,
      "archiveinterface.url": options.archiveUrl,
      "database.peewee_url": options.database,
      ...flags,
    },
  };
}

/** The configuration the flags, the environment and the config file make; logging follows it. */
export function resolveConfig(options: GlobalOptions, flags?: Record<string, string | undefined>) {
  const config = loadConfig(configSources(options, flags));
  configureLog({ level: config.logLevel, format: config.logFormat });
  return config;
}

/** Runs `body` with cartd open, closing it afterwards. */
export async function withCartd<T>(
  options: GlobalOptions,
  body: (cartd: Cartd) => Promise<T>,
  open: ContextOptions = {},
): Promise<T> {
  let cartd;
  try {
    cartd = await openCartd(resolveConfig(options, open.flags), open);
  } catch (err) {
    if (err instanceof MissingDatabase) {
      err.withHint("is this the right configuration? (--config, --volume, --database)");
    }
    throw err;
  }
  try {
    return await body(cartd);
  } finally {
    await cartd.close();
  }
}
