/** The tar layout: PAX where ustar cannot say it, deterministic bytes, exact byte ranges. */
import { join } from "node:path";
import { defaultTarName, type TarLayout, tarLayout, tarRootName, type TarSource } from "./tar.ts";
import { tarStream } from "./tar_stream.ts";
import { encodeHeader } from "./tar_header.ts";
import { assert, assertEquals, assertRejects } from "../../tests/support/assert.ts";
import { bytes } from "../../tests/support/archive.ts";
import { listWithPython, runWithInput } from "../../tests/support/tar.ts";

type SourceOnDisk = TarSource & { file: string };

async function sources(specs: [string, number][]): Promise<SourceOnDisk[]> {
  const dir = await Deno.makeTempDir();
  return await Promise.all(specs.map(async ([path, size], i) => {
    const file = join(dir, String(i));
    await Deno.writeFile(file, bytes(size, i + 7));
    return { path, size, mtime: 1_700_000_000 + i, file };
  }));
}

/** The layout of files written by `sources`. */
function layoutOf(root: string, files: SourceOnDisk[]): TarLayout {
  const byPath = new Map(files.map((f) => [f.path, f.file]));
  return tarLayout(root, files, (path) => byPath.get(path)!);
}

const entriesOf = (layout: TarLayout) =>
  Array.from({ length: layout.count }, (_, i) => layout.entry(i));

const read = async (stream: ReadableStream<Uint8Array>) =>
  new Uint8Array(await new Response(stream).arrayBuffer());

Deno.test("long and non-ASCII names go into PAX headers; Python and GNU tar read them back", async () => {
  const long = `${"d".repeat(120)}/${"f".repeat(124)}.bin`;
  const layout = layoutOf("root", await sources([[long, 1000], ["ünï/çødé.txt", 10], ["a/b", 0]]));
  const tar = await read(tarStream(layout));
  assertEquals(tar.length, layout.size);
  assertEquals(tar.length % 10240, 0);
  const members = await listWithPython(tar);
  assertEquals(members.map((m) => m.name), [
    "root",
    "root/a",
    "root/a/b",
    `root/${"d".repeat(120)}`,
    `root/${long}`,
    "root/ünï",
    "root/ünï/çødé.txt",
  ]);
  assertEquals(members.find((m) => m.name === `root/${long}`)!.mtime, 1_700_000_000);

  const file = await Deno.makeTempFile();
  await Deno.writeFile(file, tar);
  const listed = await new Deno.Command("tar", {
    args: ["-tvf", file],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(listed.stdout);
  assert(listed.success, new TextDecoder().decode(listed.stderr));
  assert(text.includes(`root/${long}`) && !text.includes("Ignoring"), text);
});

Deno.test("a size of 8 GiB or more is carried in a PAX header", async () => {
  const size = 9 * 1024 ** 3;
  const header = encodeHeader({ name: "data/huge.bin", type: "file", size, mode: 0o644, mtime: 1 });
  // Python reads the header from a stream and reports the size without needing the body.
  const script =
    "import sys,tarfile;t=tarfile.open(fileobj=sys.stdin.buffer,mode='r|');m=t.next();print(m.name,m.size)";
  assertEquals(
    (await runWithInput("python3", ["-c", script], header)).trim(),
    `data/huge.bin ${size}`,
  );
});

Deno.test("equal inputs give equal bytes, and any range is exactly that slice of the whole", async () => {
  const files = await sources([["x/1", 1], ["x/2", 511], ["x/3", 512], ["y", 513], [
    "z",
    3_000_000,
  ]]);
  const layout = layoutOf("r", files);
  const whole = await read(tarStream(layout));
  assertEquals(
    await read(tarStream(layoutOf("r", [...files].reverse()))),
    whole,
    "order of input does not matter",
  );
  const ranges: [number, number][] = [
    [0, 1],
    [0, 512],
    [511, 1537],
    [1000, 5000],
    [5000, 2_000_000],
    [layout.size - 10241, layout.size],
    [layout.size - 1, layout.size],
  ];
  for (const [start, end] of ranges) {
    assertEquals(
      await read(tarStream(layout, { start, end })),
      whole.subarray(start, end),
      `${start}-${end}`,
    );
  }
});

Deno.test("a file that changed size on disk stops the stream instead of sending a wrong tar", async () => {
  const files = await sources([["a", 100]]);
  const layout = layoutOf("r", files);
  await Deno.writeFile(files[0].file, bytes(50));
  const err = await assertRejects(() => read(tarStream(layout)));
  assertEquals(
    err.message,
    `${
      files[0].file
    } ended 50 bytes early: the file changed on the volume since it was verified; ` +
      "the download was stopped",
  );
});

Deno.test("download names: the root drops .tar and cannot carry separators, dot-dot or controls", () => {
  assertEquals(tarRootName("data"), "data");
  assertEquals(tarRootName("foo.tar"), "foo");
  assertEquals(tarRootName("my.tarball.tar"), "my.tarball");
  assertEquals(tarRootName("../../etc"), "_.._etc");
  assertEquals(tarRootName(".hidden.tar"), "hidden");
  assertEquals(tarRootName(".."), "data");
  assertEquals(tarRootName("a\r\nb/c"), "ab_c");
  assertEquals(tarRootName(""), "data");
  assertEquals(defaultTarName(new Date(2026, 10, 27, 23, 0, 26)), "data_2026_11_27_23_00_26.tar");
  // Cut at 200 code points, not inside a surrogate pair; lone surrogates become U+FFFD.
  const long = tarRootName(`${"L".repeat(199)}\u{1F600}\u{1F600}.tar`);
  assertEquals(long, `${"L".repeat(199)}\u{1F600}`);
  assertEquals(tarRootName("a\uD800b"), "a\uFFFDb");
  encodeURIComponent(long);
});

Deno.test("members come in directory-walk order: segment by segment, a folder before its siblings' longer names", () => {
  const sources = ["a.b", "ab/c", "a b", "a/b", "a/a/z", "a/a"].map((path) => ({
    path,
    size: 1,
    mtime: path.length,
  }));
  const layout = tarLayout("r", sources, (path) => `/nowhere/${path}`);
  const names = entriesOf(layout).map((e) => e.header.name);
  assertEquals(names, [
    "r/",
    "r/a/",
    "r/a/a",
    "r/a/a/",
    "r/a/a/z",
    "r/a/b",
    "r/a b",
    "r/a.b",
    "r/ab/",
    "r/ab/c",
  ]);
  // A folder's time is the latest of what it holds.
  const mtimes = entriesOf(layout).map((e) => e.header.mtime);
  assertEquals(mtimes.slice(0, 2), [5, 5]);
});

Deno.test("a cart of many tiny files is read a few files at a time, not all at once", async () => {
  const files = await sources(Array.from({ length: 400 }, (_, i) => [`f${i}`, 10]));
  let checked = 0;
  let open!: () => void;
  const gate = new Promise<void>((resolve) => open = resolve);
  const stream = tarStream(layoutOf("r", files), {
    checkFile: async () => {
      checked++;
      await gate;
    },
  });
  const whole = read(stream);
  await new Promise((resolve) => setTimeout(resolve, 50));
  // Their bytes alone (4 KiB) would let every file be read ahead at once.
  assert(checked <= 16, `${checked} files read at once`);
  open();
  assertEquals((await whole).length, layoutOf("r", files).size);
  assertEquals(checked, 400);
});
