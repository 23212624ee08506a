/** cartd's version, shown by `cartd --version` and in HTTP error bodies. */
export const version = "0.1.0";
