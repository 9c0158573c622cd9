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
  readonly #start: (sink: TokenSink) => () => void;
  #readable: ReadableStream<string> | undefined;
  /** Set once a `for await` took the direct path (see `[Symbol.asyncIterator]`). */
  #direct: DirectTokens | undefined;
  /**
   * Until the end of the current task: a ReadableStream that young has not
   * finished starting, and defers its first pull by a microtask.
   */
  #young = true;

  /**
   * Wraps a streamed call; `generateStream()` makes these.
   *
   * @param start Sends the call and wires it to the sink; returns the
   * function that stops listening. Called on the first read. Throwing here
   * fails the stream before anything is sent.
   */
  constructor(start: (sink: TokenSink) => () => void) {
    this.#start = start;
    queueMicrotask(() => this.#young = false);
  }

  /** The tokens as a web-standard stream, for `pipeThrough`/`pipeTo`. */
  get readable(): ReadableStream<string> {
    this.#readable ??= this.#direct ? this.#direct.standIn() : tokenReadable(this.#start);
    return this.#readable;
  }

  /** Stops listening; pending reads end and later frames are dropped. */
  cancel(reason?: unknown): Promise<void> {
    return this.readable.cancel(reason);
  }

  /** Iterates the tokens; a `break` cancels the stream. */
  [Symbol.asyncIterator](): AsyncIterator<string> {
    if (this.#readable === undefined && this.#direct === undefined) {
      // The usual case, `for await` on a fresh stream: tokens go straight to the loop, without
      // a ReadableStream's per-chunk promises and pull calls (a quarter of a token's cost).
      this.#direct = new DirectTokens(this.#start, this.#young);
      return this.#direct.iterator();
    }
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

/** The stream as a `ReadableStream`: started by the first read, stopped by a cancel. */
function tokenReadable(start: (sink: TokenSink) => () => void): ReadableStream<string> {
  let stop: (() => void) | undefined;
  let started = false;
  // Once closed, errored or cancelled, late deliveries are ignored.
  let open = true;
  return new ReadableStream<string>({
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

/**
 * A `for await` over a stream, fed by the sink directly: what the reader of a
 * `ReadableStream` would see, at a fraction of its cost per token. Like that
 * reader it holds a lock on the stream until the loop is left early: the
 * `readable` of such a stream is a stand-in, locked meanwhile, cancelled after.
 */
class DirectTokens {
  readonly #start: (sink: TokenSink) => () => void;
  /** Start on the first read, but a microtask later (see `TokenStream.#young`). */
  readonly #startLater: boolean;
  #stop: (() => void) | undefined;
  #started = false;
  /** Tokens arrived and not yet read, from `#head` on. */
  #queue: string[] = [];
  #head = 0;
  #state: "open" | "closed" | "errored" | "cancelled" = "open";
  #error: unknown;
  /** The pending `next()`, waiting for a token or the end. */
  #waiting:
    | { resolve: (result: IteratorResult<string>) => void; reject: (error: unknown) => void }
    | undefined;
  /** Whether the loop still holds the lock (it lets go only when left early). */
  #locked = true;
  /** The lock on the stand-in, taken for the loop while it holds its own. */
  #standInLock: ReadableStreamDefaultReader<string> | undefined;

  constructor(start: (sink: TokenSink) => () => void, startLater: boolean) {
    this.#start = start;
    this.#startLater = startLater;
  }

  iterator(): AsyncIterator<string> {
    return {
      next: () => this.#next(),
      return: (value?: unknown) => this.#release(undefined).then(() => ({ done: true, value })),
      throw: (error?: unknown) =>
        this.#release(error).then(() => {
          throw error;
        }),
    } as AsyncIterator<string>;
  }

  /**
   * The `readable` of a stream read this way: locked while the loop runs, and
   * cancelled once the loop has let go, as the real stream would be.
   */
  standIn(): ReadableStream<string> {
    const released = !this.#locked;
    const standIn = new ReadableStream<string>({
      start(controller) {
        if (released) controller.close();
      },
    }, { highWaterMark: 0 });
    if (!released) this.#standInLock = standIn.getReader();
    return standIn;
  }

  #sink: TokenSink = {
    token: (token) => {
      if (this.#state !== "open") return;
      const waiting = this.#waiting;
      if (waiting) {
        this.#waiting = undefined;
        waiting.resolve({ value: token, done: false });
      } else this.#queue.push(token);
    },
    close: () => {
      if (this.#state !== "open") return;
      this.#state = "closed";
      this.#settleWaiting();
    },
    error: (error) => {
      if (this.#state !== "open") return;
      this.#state = "errored";
      this.#error = error;
      // As a ReadableStream's error: tokens not yet read are dropped.
      this.#queue = [];
      this.#head = 0;
      this.#settleWaiting();
    },
  };

  #next(): Promise<IteratorResult<string>> {
    if (!this.#locked) {
      return Promise.reject(new TypeError("The reader of this stream was released."));
    }
    if (!this.#started) {
      this.#started = true;
      if (this.#startLater) queueMicrotask(() => this.#begin());
      else this.#begin();
    }
    if (this.#head < this.#queue.length) {
      const token = this.#queue[this.#head++];
      if (this.#head === this.#queue.length) {
        this.#queue = [];
        this.#head = 0;
      }
      return Promise.resolve({ value: token, done: false });
    }
    if (this.#state === "errored") return Promise.reject(this.#error);
    if (this.#state !== "open") return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.#waiting = { resolve, reject });
  }

  /** Sends the call, unless the loop was left before. */
  #begin(): void {
    if (this.#state !== "open") return;
    try {
      this.#stop = this.#start(this.#sink);
    } catch (error) {
      this.#sink.error(error);
    }
  }

  /** Ends a pending read: with the stream's error, else as done. */
  #settleWaiting(): void {
    const waiting = this.#waiting;
    if (!waiting) return;
    this.#waiting = undefined;
    if (this.#state === "errored") waiting.reject(this.#error);
    else waiting.resolve({ value: undefined, done: true });
  }

  /** Leaves the loop early: cancels the stream (stopping the call) and lets go of it. */
  async #release(reason: unknown): Promise<void> {
    if (!this.#locked) throw new TypeError("The reader of this stream was released.");
    if (this.#state === "errored") throw this.#error;
    // A close with tokens still unread is only requested: a cancel still reaches the source.
    if (this.#state === "open" || (this.#state === "closed" && this.#head < this.#queue.length)) {
      this.#state = "cancelled";
      this.#queue = [];
      this.#head = 0;
      this.#settleWaiting();
      this.#stop?.();
    }
    this.#locked = false;
    const lock = this.#standInLock;
    this.#standInLock = undefined;
    if (lock) {
      await lock.cancel(reason);
      lock.releaseLock();
    }
  }
}
