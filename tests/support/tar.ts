/** Reads tars the way users do: GNU tar, and Python's tarfile in stream mode (`r|`). */

/** Extracts `tar` (a file) into a fresh directory with GNU tar; returns the directory. */
export async function extractWithGnuTar(tar: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "cartd-extract-" });
  const out = await new Deno.Command("tar", { args: ["-xf", tar, "-C", dir], stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`tar -x failed: ${new TextDecoder().decode(out.stderr)}`);
  return dir;
}

/** Member names and sizes as Python's tarfile reads them from a stream. */
export async function listWithPython(
  tar: Uint8Array,
): Promise<{ name: string; size: number; mtime: number; type: string }[]> {
  const script = `
import sys, tarfile, json
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
    out = []
    for m in t:
        if m.isfile():
            data = t.extractfile(m).read()
            assert len(data) == m.size
        out.append({"name": m.name, "size": m.size, "mtime": int(m.mtime), "type": "dir" if m.isdir() else "file"})
print(json.dumps(out))
`;
  const child = new Deno.Command("python3", {
    args: ["-c", script],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(tar);
  await writer.close();
  const out = await child.output();
  if (!out.success) {
    throw new Error(`python tarfile failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** Extracts a tar read as a stream (`r|`), as the Pacifica downloader does; returns the directory. */
export async function extractWithPython(tar: Uint8Array): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "cartd-extract-" });
  const script = `
import sys, tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
    t.extractall(sys.argv[1])
`;
  const child = new Deno.Command("python3", {
    args: ["-c", script, dir],
    stdin: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(tar);
  await writer.close();
  const out = await child.output();
  if (!out.success) {
    throw new Error(`python tarfile failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return dir;
}
