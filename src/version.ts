/** cartd's version, shown by `cartd --version` and in HTTP error bodies: deno.json's, the one place it is set. */
import project from "../deno.json" with { type: "json" };

/** The version in deno.json, so a release changes it in one place. */
export const version: string = project.version;
