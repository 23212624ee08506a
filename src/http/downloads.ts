/**
 * The downloads a server is streaming, so shutdown can wait for them and, past its deadline, end
 * them cleanly (erroring a body is the one way to stop a stream that Deno.serve survives).
 */
export class Downloads {
  private readonly live = new Map<
    ReadableStreamDefaultController<Uint8Array>,
    ReadableStreamDefaultReader<Uint8Array>
  >();

  /** How many downloads are streaming now. */
  get size(): number {
    return this.live.size;
  }

  /** Wraps a body so it is counted while it streams. */
  track(body: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
    const reader = body.getReader();
    const live = this.live;
    let self: ReadableStreamDefaultController<Uint8Array>;
    return new ReadableStream<Uint8Array>({
      start(controller) {
        self = controller;
        live.set(controller, reader);
      },
      async pull(controller) {
        try {
          const { value, done } = await reader.read();
          if (done) {
            live.delete(self);
            controller.close();
          } else controller.enqueue(value);
        } catch (err) {
          live.delete(self);
          controller.error(err);
        }
      },
      async cancel(reason) {
        live.delete(self);
        await reader.cancel(reason);
      },
    }, { highWaterMark: 0 });
  }

  /** Ends every download still streaming. */
  abortAll(reason: string): void {
    for (const [controller, reader] of this.live) {
      try {
        controller.error(new Error(reason));
      } catch { /* already finished */ }
      reader.cancel(reason).catch(() => {});
    }
    this.live.clear();
  }
}
