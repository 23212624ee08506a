/** Reads tars the way users do: GNU tar, and Python's tarfile in stream mode (`r|`). */

/** Runs a command with `input` on its stdin; throws with its stderr when it fails. */
export async function runWithInput(
  command: string,
  args: string[],
  input: Uint8Array,
): Promise<string> {
  const child = new Deno.Command(command, {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(input);
  await writer.close();
  const out = await child.output();
  if (!out.success) {
    throw new Error(`${command} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

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
  return JSON.parse(await runWithInput("python3", ["-c", script], tar));
}

/** Extracts a tar read as a stream (`r|`), as the Pacifica downloader does; returns the directory. */
export async function extractWithPython(tar: Uint8Array): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "cartd-extract-" });
  const script = `
import sys, tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
    t.extractall(sys.argv[1])
`;
  await runWithInput("python3", ["-c", script, dir], tar);
  return dir;
}
