/**
 * In-flight calls: ids, timeouts, abort signals, and settling exactly once.
 * Knows nothing of sockets or reconnecting: a call is sent, answered, timed
 * out or aborted, and whoever owns it is told once.
 *
 * @module
 */

import { RealmError } from "./errors.ts";
import type { RealmFunction } from "./protocol.ts";

/** What a caller asked for. */
export interface CallSpec {
  fn: RealmFunction;
  params: Record<string, unknown>;
  /** The call answers with `streaming` frames before its `complete`. */
  stream: boolean;
  /** Total wait for the answer (for a stream: for its first frame), in ms. */
  timeout: number;
  /** Longest gap between two frames of a stream, in ms. */
  idleTimeout: number;
  /** Rate-limit retries allowed. */
  maxRetries: number;
  signal?: AbortSignal;
  /** Receives each streamed token. */
  onToken?: (token: string) => void;
}

/** How a call leaves the registry. */
export type CallEnd = "answered" | "abandoned";

/**
 * One call from creation to its single outcome. Its timer and abort listener
 * live exactly as long as it is unsettled.
 */
export class Call {
  readonly id: string;
  readonly spec: CallSpec;
  /** The call's frame has been written to a socket (for the current try). */
  sent = false;
  /** The connection it was sent on, opaque to this module. */
  connection: unknown = undefined;
  /** Rate-limit retries left. */
  retriesLeft: number;
  /** `health`/`metadata` may be resent once after a drop. */
  resentAfterDrop = false;
  readonly result: Promise<unknown>;

  #resolve!: (value: unknown) => void;
  #reject!: (error: unknown) => void;
  #settled = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #wakeTimer: ReturnType<typeof setTimeout> | undefined;
  #streaming = false;
  #lastFrameAt = 0;
  #onEnd: (call: Call, end: CallEnd) => void;
  #onAbort = () => this.#abort();

  constructor(id: string, spec: CallSpec, onEnd: (call: Call, end: CallEnd) => void) {
    this.id = id;
    this.spec = spec;
    this.retriesLeft = spec.maxRetries;
    this.#onEnd = onEnd;
    this.result = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    if (spec.signal?.aborted) {
      this.#abort();
      return;
    }
    spec.signal?.addEventListener("abort", this.#onAbort, { once: true });
    this.#arm(spec.timeout);
  }

  /** Whether the call has its outcome. */
  get settled(): boolean {
    return this.#settled;
  }

  /** A `streaming` frame arrived with this token. */
  token(token: string): void {
    if (this.#settled) return;
    this.#lastFrameAt = performance.now();
    if (!this.#streaming) {
      // From the first token on, the stream is bounded by its idle gap, not the total timeout.
      this.#streaming = true;
      this.#arm(this.spec.idleTimeout);
    }
    try {
      this.spec.onToken?.(token);
    } catch (error) {
      // The caller's own callback failed: stop listening and hand them their error,
      // rather than letting it escape from the socket's message handler.
      if (this.#finish("abandoned")) this.#reject(error);
    }
  }

  /** The call's terminal `complete` frame arrived. */
  complete(data: unknown): void {
    if (this.#finish("answered")) this.#resolve(data);
  }

  /** The call failed for good (server error frame, dropped socket, ...). */
  fail(error: RealmError, end: CallEnd = "answered"): void {
    if (this.#finish(end)) this.#reject(error);
  }

  /** The consumer stopped listening (a `break` out of a stream): no outcome is delivered. */
  abandon(): void {
    if (this.#finish("abandoned")) this.#resolve(undefined);
  }

  /** Prepares a new try (rate-limit retry or resend after a drop); the timer keeps running. */
  resetForRetry(): void {
    this.sent = false;
    this.connection = undefined;
  }

  /** Runs `then` after `ms` unless the call settles first (a rate-limit retry wait). */
  wake(ms: number, then: () => void): void {
    this.#wakeTimer = setTimeout(() => {
      this.#wakeTimer = undefined;
      if (!this.#settled) then();
    }, ms);
  }

  #arm(ms: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = Number.isFinite(ms) ? setTimeout(() => this.#onTimer(), ms) : undefined;
  }

  #onTimer(): void {
    this.#timer = undefined;
    if (this.#settled) return;
    if (this.#streaming) {
      const quiet = performance.now() - this.#lastFrameAt;
      if (quiet < this.spec.idleTimeout) {
        this.#arm(this.spec.idleTimeout - quiet);
        return;
      }
      this.fail(
        new RealmError(
          "TIMEOUT",
          `The ${this.spec.fn} stream (call ${this.id}) received no token for ` +
            `${this.spec.idleTimeout} ms and was ended. The server can stop a stream without a ` +
            "final frame; raise `streamIdleTimeout` if your model is slower than that.",
          { requestId: this.id, sent: this.sent },
        ),
        "abandoned",
      );
      return;
    }
    this.fail(
      new RealmError(
        "TIMEOUT",
        `No answer to ${this.spec.fn} (call ${this.id}) within ${this.spec.timeout} ms. ` +
          "The server serves one call at a time per connection, so it may have waited behind " +
          "other calls: raise `timeout`, or open more sockets with `connections`.",
        { requestId: this.id, sent: this.sent },
      ),
      "abandoned",
    );
  }

  #abort(): void {
    const reason = this.spec.signal?.reason;
    this.fail(
      new RealmError(
        "ABORTED",
        `The ${this.spec.fn} call (call ${this.id}) was aborted by its signal.`,
        { requestId: this.id, sent: this.sent, cause: reason },
      ),
      "abandoned",
    );
  }

  /** Marks the call settled and frees its timer and listener; false if it already was. */
  #finish(end: CallEnd): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#wakeTimer !== undefined) clearTimeout(this.#wakeTimer);
    this.#wakeTimer = undefined;
    this.spec.signal?.removeEventListener("abort", this.#onAbort);
    this.#onEnd(this, end);
    return true;
  }
}

/**
 * The client's calls by id, whichever socket they were sent on. Ids are short
 * counters: unique among this client's calls, cheap to make and to send.
 */
export class CallRegistry {
  readonly #calls = new Map<string, Call>();
  #nextId = 0;

  /** Creates and registers a call; it removes itself when it ends. */
  create(spec: CallSpec, onEnd: (call: Call, end: CallEnd) => void): Call {
    const id = String(++this.#nextId);
    const call = new Call(id, spec, (ended, end) => {
      this.#calls.delete(ended.id);
      onEnd(ended, end);
    });
    // A call aborted before creation has already ended and must not be kept.
    if (!call.settled) this.#calls.set(id, call);
    return call;
  }

  /** The unsettled call with this id. */
  get(id: string): Call | undefined {
    return this.#calls.get(id);
  }

  /** Unsettled calls, oldest first. */
  values(): IterableIterator<Call> {
    return this.#calls.values();
  }

  /** Number of unsettled calls. */
  get size(): number {
    return this.#calls.size;
  }
}
