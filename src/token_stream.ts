/**
 * A streamed call's tokens: async iterable, or a `ReadableStream<string>`
 * made on demand; started lazily on the first read.
 *
 * @module
 */

/**
 * Where a streamed call delivers its tokens and its end.
 *
 * @example A stream of fixed tokens
 * ```ts
 * import { type TokenSink, TokenStream } from "@realm-ai/ws-client";
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
  /** The stream failed; the reader throws this once the tokens before it are read. */
  error(error: unknown): void;
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

/**
 * The tokens of one `generateStream()` call, in order. Read it once, one way:
 * iterate it with `for await`, or take {@linkcode TokenStream.readable} to
 * pipe it. The call is sent on the first read; leaving a `for await` loop
 * early (or calling {@linkcode TokenStream.cancel}) stops listening, and the
 * server's later frames for the call are dropped. Tokens that arrive faster
 * than they are read wait in order; none is lost.
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
  readonly #start: (sink: TokenSink) => () => void;
  #stop: (() => void) | undefined;
  #started = false;
  /** Tokens arrived and not yet read, from `#head` on. */
  #queue: string[] = [];
  #head = 0;
  /** Closed by the server or cancelled by the reader. */
  #ended = false;
  #failure: { error: unknown } | undefined;
  /** Reads waiting for a token or the end, oldest first, as an async generator queues them. */
  #waiting: { resolve(r: IteratorResult<string>): void; reject(e: unknown): void }[] = [];
  #readBy: "for await" | "readable" | undefined;
  #readable: ReadableStream<string> | undefined;

  /**
   * Wraps a streamed call; `generateStream()` makes these.
   *
   * @param start Sends the call and wires it to the sink; returns the
   * function that stops listening. Called on the first read. Throwing here
   * fails the stream before anything is sent.
   */
  constructor(start: (sink: TokenSink) => () => void) {
    this.#start = start;
  }

  /** The tokens as a web-standard stream, for `pipeThrough`/`pipeTo`. */
  get readable(): ReadableStream<string> {
    if (this.#readable) return this.#readable;
    this.#claim("readable");
    // highWaterMark 0: nothing is read (and no call sent) before the consumer asks.
    return this.#readable = new ReadableStream<string>({
      pull: async (controller) => {
        const result = await this.#read();
        if (result.done) controller.close();
        else controller.enqueue(result.value);
      },
      cancel: (reason) => this.cancel(reason),
    }, { highWaterMark: 0 });
  }

  /** Stops listening; a pending read ends and later frames are dropped. */
  cancel(_reason?: unknown): Promise<void> {
    if (!this.#ended && !this.#failure) {
      this.#ended = true;
      this.#queue = [];
      this.#head = 0;
      this.#stop?.();
      this.#wake();
    }
    return Promise.resolve();
  }

  /** Iterates the tokens; a `break` cancels the stream. */
  [Symbol.asyncIterator](): AsyncIterator<string> {
    this.#claim("for await");
    return {
      next: () => this.#read(),
      return: async (value?: unknown) => {
        await this.cancel();
        return { done: true, value: value as undefined };
      },
    };
  }

  #claim(how: "for await" | "readable"): void {
    if (this.#readBy) {
      throw new TypeError(
        `This token stream is already being read through ${this.#readBy}: read it once, one way.`,
      );
    }
    this.#readBy = how;
  }

  #read(): Promise<IteratorResult<string>> {
    if (!this.#started && !this.#ended) this.#begin();
    if (this.#head < this.#queue.length) {
      const value = this.#queue[this.#head];
      // Let go of each token as it is read, and of the read part of the queue now and then:
      // memory follows the unread backlog.
      this.#queue[this.#head++] = "";
      if (this.#head === this.#queue.length) {
        this.#queue = [];
        this.#head = 0;
      } else if (this.#head >= 1024 && this.#head * 4 >= this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      return Promise.resolve({ done: false, value });
    }
    if (this.#failure) return Promise.reject(this.#failure.error);
    if (this.#ended) return Promise.resolve(DONE);
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  #begin(): void {
    this.#started = true;
    const open = () => !this.#ended && !this.#failure;
    try {
      this.#stop = this.#start({
        token: (token) => {
          if (!open()) return;
          const waiting = this.#waiting.shift();
          if (waiting) waiting.resolve({ done: false, value: token });
          else this.#queue.push(token);
        },
        close: () => {
          if (!open()) return;
          this.#ended = true;
          this.#wake();
        },
        error: (error) => {
          if (!open()) return;
          this.#failure = { error };
          this.#wake();
        },
      });
    } catch (error) {
      this.#failure = { error };
    }
  }

  /** Ends the pending reads: the stream closed, failed (each read sees the error) or was cancelled. */
  #wake(): void {
    for (const read of this.#waiting.splice(0)) {
      if (this.#failure) read.reject(this.#failure.error);
      else read.resolve(DONE);
    }
  }
}
