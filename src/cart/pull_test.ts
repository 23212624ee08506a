/**
 * Pulls through both kinds of body: a byte stream read straight into the writer's blocks (BYOB,
 * as fetch and the file:// archive give), and a plain stream whose chunks, empty ones included,
 * are copied in. Blocks are made small so chunks cross them.
 */
import { createHash } from "node:crypto";
import { crc32 } from "node:zlib";
import { join } from "node:path";
import type { Archive } from "../archive/mod.ts";
import { ArchiveError } from "../archive/mod.ts";
import { fileStream } from "../io.ts";
import { bytes } from "../../tests/support/archive.ts";
import { assertEquals, assertMatch, assertRejects } from "../../tests/support/assert.ts";
import { pullFile } from "./pull.ts";

const data = bytes(100_000, 3);
const sha1 = createHash("sha1").update(data).digest("hex");

/** An archive whose one file is `body()`. */
function archiveOf(body: () => ReadableStream<Uint8Array>): Archive {
  return {
    name: "test",
    stage: () => Promise.resolve(),
    status: () => Promise.reject(new Error("not used")),
    open: () => Promise.resolve(body()),
    ping: () => Promise.resolve(),
  };
}

/** A plain (not byte) stream of `chunks`. */
function plainStream(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream({
    pull(controller) {
      if (i < chunks.length) controller.enqueue(chunks[i++]);
      else controller.close();
    },
  });
}

async function pull(archive: Archive, size = data.length, transferSize = 4096) {
  const dir = await Deno.makeTempDir({ prefix: "cartd-pull-" });
  const target = join(dir, "file");
  try {
    const result = await pullFile({
      archive,
      id: "f",
      hashtype: "sha1",
      hashsum: sha1,
      size,
      partial: join(dir, "file.part"),
      target,
      signal: new AbortController().signal,
      transferSize,
      idleTimeoutMs: 10_000,
    });
    return { result, written: await Deno.readFile(target) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a byte-stream body is read straight into the blocks, whole and verified", async () => {
  const source = await Deno.makeTempFile();
  await Deno.writeFile(source, data);
  try {
    for (const transferSize of [1000, 4096, 1 << 20]) {
      const { result, written } = await pull(
        archiveOf(() => fileStream(source, { chunkSize: 3000 })),
        data.length,
        transferSize,
      );
      // The CRC-32 kept piece by piece is the whole file's.
      assertEquals(result, {
        bytes: data.length,
        digest: sha1,
        verified: true,
        crc32: crc32(data),
      });
      assertEquals(written, data);
    }
  } finally {
    await Deno.remove(source);
  }
});

Deno.test("a plain body's chunks, empty ones and ones across blocks, are copied in order", async () => {
  const chunks = [new Uint8Array(0), data.subarray(0, 5000), new Uint8Array(0)];
  for (let at = 5000; at < data.length; at += 7777) chunks.push(data.subarray(at, at + 7777));
  const { result, written } = await pull(archiveOf(() => plainStream(chunks)));
  assertEquals(result.digest, sha1);
  assertEquals(written, data);
});

Deno.test("a body shorter or longer than the archive said fails the pull", async () => {
  const short = await assertRejects(() =>
    pull(archiveOf(() => plainStream([data.subarray(0, 50_000)])))
  );
  assertMatch(short.message, /gave only 50000 of 100000 bytes/);
  const long = await assertRejects(() => pull(archiveOf(() => plainStream([data, data]))));
  assertMatch(long.message, /gave more than/);
  assertEquals(long instanceof ArchiveError, true);
});

Deno.test("an archive that stops sending, or never answers, fails the pull after the idle timeout", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cartd-pull-" });
  // A body that sends a little and then nothing (its reads never settle, and it ignores the
  // abort, as a real body did once garbage collection had run), and an answer that never comes.
  const silent: Archive[] = [
    archiveOf(() =>
      new ReadableStream({
        type: "bytes",
        start: (controller) => controller.enqueue(data.slice(0, 1000)),
        pull: () => new Promise(() => {}),
      })
    ),
    { ...archiveOf(() => plainStream([])), open: () => new Promise(() => {}) },
  ];
  try {
    for (const archive of silent) {
      const started = Date.now();
      const err = await assertRejects(() =>
        pullFile({
          archive,
          id: "f",
          hashtype: "sha1",
          hashsum: sha1,
          size: data.length,
          partial: join(dir, "file.part"),
          target: join(dir, "file"),
          signal: new AbortController().signal,
          transferSize: 4096,
          idleTimeoutMs: 300,
        })
      );
      assertMatch(err.message, /stalled after (1000|0) bytes/);
      assertEquals(Date.now() - started < 3000, true, "within the idle timeout, give or take");
      assertEquals([...Deno.readDirSync(dir)], [], "nothing left behind");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
