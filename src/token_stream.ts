/**
 * A streamed call's tokens: async iterable, or a `ReadableStream<string>`
 * made on demand; started lazily on the first read.
 *
 * @module
 */

import { RealmError } from "./errors.ts";
import { newPromise, settlers } from "./settlers.ts";
import type { GenerationResult } from "./types.ts";

/**
 * Where a streamed call delivers its tokens and its end.
 *
 * @example A stream of fixed tokens
 * ```ts
 * import { type TokenSink, TokenStream } from "@realm-ai/ws-client";
 * const stream = new TokenStream((sink: TokenSink) => {
 *   sink.requestId = "1";
 *   sink.token("Hello");
 *   sink.close({ tokens_generated: 1 });
 *   return () => {};
 * });
 * ```
 */
export interface TokenSink {
  /** The call's id, once it has one: {@linkcode TokenStream.requestId}. */
  requestId?: string;
  /** One token arrived. */
  token(token: string): void;
  /**
   * The stream finished normally. `result` becomes
   * {@linkcode TokenStream.result}, with `text` the joined tokens
   * (`tokens_generated` defaults to their count).
   */
  close(result?: Partial<GenerationResult>): void;
  /** The stream failed; the reader throws this once the tokens before it are read. */
  error(error: unknown): void;
}

/** Attaching a no-op handler to a promise keeps its rejection from counting as unhandled. */
const ignore = () => {};

/** Tokens joined at a time into a stream's text. */
const TEXT_CHUNK = 256;

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
  /**
   * The oldest read waiting for a token or the end: its promise's functions, kept without an
   * object or a closure per read. A `for await` has one read waiting at most; reads asked for
   * while one waits queue behind it in `#laterReads`, so every read is answered in the order it
   * was asked. (Tokens are buffered only while no read waits.)
   */
  #resolveRead: ((result: IteratorResult<string>) => void) | undefined;
  #rejectRead: ((error: unknown) => void) | undefined;
  #laterReads: [resolve: (result: IteratorResult<string>) => void, reject: (e: unknown) => void][] =
    [];
  #readBy: "for await" | "readable" | undefined;
  #readable: ReadableStream<string> | undefined;
  #sink: TokenSink | undefined;
  /**
   * The tokens so far, for `result.text`: joined {@linkcode TEXT_CHUNK} at a time into `#text`.
   * A `+=` per token would hold a 32-byte join per token until the stream is dropped (a
   * 20,000-token stream: 1.1 MB for 107 KiB of text); this holds about the text's own size.
   */
  #text = "";
  #parts: string[] = [];
  #count = 0;
  readonly #result: Promise<GenerationResult>;
  #settle!: { resolve(result: GenerationResult): void; reject(error: unknown): void };

  /**
   * Wraps a streamed call; `generateStream()` makes these.
   *
   * @param start Sends the call and wires it to the sink; returns the
   * function that stops listening. Called on the first read. Throwing here
   * fails the stream before anything is sent.
   */
  constructor(start: (sink: TokenSink) => () => void) {
    this.#start = start;
    this.#result = new Promise((resolve, reject) => this.#settle = { resolve, reject });
    this.#result.catch(ignore);
  }

  /**
   * The whole outcome once the stream ends: the joined `text`,
   * `tokens_generated`, `requestId` and the timings, without reading the
   * tokens twice. Rejects with the stream's error, or with `ABORTED` when the
   * stream was cancelled (a `break`) before its end. Taking it sends the call
   * if no read has; a rejection nobody awaits is never reported as unhandled.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * async function story(client: RealmWebSocketClient) {
   *   const stream = client.generateStream({ prompt: "Tell me a story" });
   *   for await (const token of stream) console.log(token);
   *   const { tokens_generated, requestId, timeToFirstTokenMs } = await stream.result;
   *   console.log(`${tokens_generated} tokens, call ${requestId}, first after ${timeToFirstTokenMs} ms`);
   * }
   * ```
   */
  get result(): Promise<GenerationResult> {
    if (!this.#started && !this.#ended) this.#begin();
    return this.#result;
  }

  /**
   * The call's id once the stream has started (on the first read), as its
   * errors and {@linkcode TokenStream.result} carry it.
   *
   * @example
   * ```ts
   * import type { TokenStream } from "@realm-ai/ws-client";
   * const id = (stream: TokenStream) => stream.requestId ?? "not started";
   * ```
   */
  get requestId(): string | undefined {
    return this.#sink?.requestId;
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

  /**
   * Stops listening; a pending read ends and later frames are dropped.
   *
   * @param reason Why, as `ReadableStream.cancel(reason)` takes it; the stream does not keep it.
   */
  // deno-lint-ignore no-unused-vars -- named for the API docs; a reason changes nothing here
  cancel(reason?: unknown): Promise<void> {
    if (!this.#ended && !this.#failure) {
      this.#ended = true;
      this.#text = "";
      this.#parts = [];
      this.#stop?.();
      this.#wake();
      this.#settle.reject(
        new RealmError(
          "ABORTED",
          "The stream was cancelled before its end: it has no result.",
          { requestId: this.requestId, sent: this.#started },
        ),
      );
    }
    // Even once the server has finished, a cancelled reader gets nothing more: tokens still
    // buffered, or an error behind them, are dropped.
    this.#ended = true;
    this.#failure = undefined;
    this.#queue = [];
    this.#head = 0;
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
    const read = newPromise<IteratorResult<string>>();
    if (this.#resolveRead !== undefined) this.#laterReads.push([settlers.resolve, settlers.reject]);
    else {
      this.#resolveRead = settlers.resolve;
      this.#rejectRead = settlers.reject;
    }
    return read;
  }

  /** The oldest waiting read is answered: the next one in line becomes the oldest. */
  #nextRead(): void {
    const next = this.#laterReads.shift();
    this.#resolveRead = next?.[0];
    this.#rejectRead = next?.[1];
  }

  #begin(): void {
    this.#started = true;
    const open = () => !this.#ended && !this.#failure;
    const fail = (error: unknown) => {
      this.#failure = { error };
      this.#settle.reject(error);
    };
    this.#sink = {
      token: (token) => {
        if (!open()) return;
        if (this.#parts.push(token) === TEXT_CHUNK) {
          this.#text += this.#parts.join("");
          this.#parts = [];
        }
        this.#count++;
        const resolve = this.#resolveRead;
        if (resolve === undefined) this.#queue.push(token);
        else {
          this.#nextRead();
          resolve({ done: false, value: token });
        }
      },
      close: (result) => {
        if (!open()) return;
        this.#ended = true;
        this.#wake();
        const text = this.#text + this.#parts.join("");
        this.#settle.resolve({ tokens_generated: this.#count, ...result, text });
        this.#text = "";
        this.#parts = [];
      },
      error: (error) => {
        if (!open()) return;
        fail(error);
        this.#wake();
      },
    };
    try {
      this.#stop = this.#start(this.#sink);
    } catch (error) {
      fail(error);
    }
  }

  /** Ends every waiting read, oldest first: the stream closed, failed or was cancelled. */
  #wake(): void {
    for (let resolve = this.#resolveRead; resolve !== undefined; resolve = this.#resolveRead) {
      const reject = this.#rejectRead!;
      this.#nextRead();
      if (this.#failure) reject(this.#failure.error);
      else resolve(DONE);
    }
  }
}
