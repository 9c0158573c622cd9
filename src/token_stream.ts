/**
 * A streamed call's tokens as a `ReadableStream<string>` that is also async
 * iterable, started lazily on the first read.
 *
 * @module
 */

/**
 * Where a streamed call delivers its tokens and its end.
 *
 * @example A stream of fixed tokens
 * ```ts
 * import { TokenStream, type TokenSink } from "@realm-ai/ws-client";
 * const stream = new TokenStream((sink: TokenSink) => {
 *   sink.token("Hello");
 *   sink.close();
 *   return () => {};
 * });
 * ```
 */
export interface TokenSink {
  /** One token arrived. */
  token(token: string): void;
  /** The stream finished normally. */
  close(): void;
  /** The stream failed; the reader throws this. */
  error(error: unknown): void;
}

/**
 * The tokens of one `generateStream()` call, in order. Iterate it with
 * `for await`, or take {@linkcode TokenStream.readable} to pipe it. The call
 * is sent on the first read; leaving a `for await` loop early (or calling
 * {@linkcode TokenStream.cancel}) stops listening, and the server's later
 * frames for the call are dropped.
 *
 * @example Pipe tokens into an HTTP response
 * ```ts
 * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
 * function storyResponse(client: RealmWebSocketClient): Response {
 *   const stream = client.generateStream({ prompt: "Tell me a story" });
 *   return new Response(stream.readable.pipeThrough(new TextEncoderStream()));
 * }
 * ```
 */
export class TokenStream implements AsyncIterable<string> {
  /** The tokens as a web-standard stream, for `pipeThrough`/`pipeTo`. */
  readonly readable: ReadableStream<string>;

  /**
   * Wraps a streamed call; `generateStream()` makes these.
   *
   * @param start Sends the call and wires it to the sink; returns the
   * function that stops listening. Called on the first read. Throwing here
   * fails the stream before anything is sent.
   */
  constructor(start: (sink: TokenSink) => () => void) {
    let stop: (() => void) | undefined;
    let started = false;
    // Once closed, errored or cancelled, late deliveries are ignored.
    let open = true;
    this.readable = new ReadableStream<string>({
      pull(controller) {
        if (started) return;
        started = true;
        stop = start({
          token(token) {
            if (open) controller.enqueue(token);
          },
          close() {
            if (!open) return;
            open = false;
            controller.close();
          },
          error(error) {
            if (!open) return;
            open = false;
            controller.error(error);
          },
        });
      },
      cancel() {
        open = false;
        stop?.();
      },
    }, { highWaterMark: 0 });
  }

  /** Stops listening; pending reads end and later frames are dropped. */
  cancel(reason?: unknown): Promise<void> {
    return this.readable.cancel(reason);
  }

  /** Iterates the tokens; a `break` cancels the stream. */
  [Symbol.asyncIterator](): AsyncIterator<string> {
    // Not `readable.values()`: some browsers still lack ReadableStream iteration.
    const reader = this.readable.getReader();
    return {
      next: () => reader.read() as Promise<IteratorResult<string>>,
      return: async (value?: unknown) => {
        await reader.cancel();
        reader.releaseLock();
        return { done: true, value: value as string };
      },
      throw: async (error?: unknown) => {
        await reader.cancel(error);
        reader.releaseLock();
        throw error;
      },
    };
  }
}
