/**
 * In-flight calls: ids, timeouts, abort signals, and settling exactly once.
 * Knows nothing of sockets or reconnecting: a call is sent, answered, timed
 * out or aborted, and whoever owns it is told once.
 *
 * @module
 */

import { RealmError } from "./errors.ts";
import type { RealmFunction } from "./protocol.ts";
import type { GenerationResult } from "./types.ts";
import { newPromise, settlers } from "./settlers.ts";

/** What a caller asked for. */
export interface CallSpec {
  fn: RealmFunction;
  /** The call's `params`, already JSON: checked once, sent as is on every try. */
  paramsJson: string;
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
  /** A pipeline the caller says may run twice: re-sent even when it may have been running. */
  safeToRepeat?: boolean;
}

/** Idle checks per `idleTimeout` span: a silent stream ends within 1.25× of it. */
const IDLE_CHECKS = 4;

/** How a call leaves the registry. */
export type CallEnd = "answered" | "abandoned";

/**
 * One call from creation to its single outcome. Its deadline and abort
 * listener live exactly as long as it is unsettled.
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
  /** Times its frame was written to a socket: 1 for a call sent once. */
  attempts = 0;
  /** Times it was re-sent after its socket closed under it. */
  resends = 0;
  /** A server that may have run it already: it was being served when its socket closed. */
  mayHaveRun = false;
  /** The server it should not go back to on its next try (its socket closed under it). */
  avoid: string | undefined;
  /** Queued while no socket was open (not merely while every socket was full). */
  waitsForServer = false;
  readonly result: Promise<unknown>;
  /**
   * When the call was made, when its first token arrived (0: none yet) and
   * when it settled (0: not yet), on the `performance.now()` clock: read once
   * each, never per token.
   */
  readonly startedAt: number;
  firstTokenAt = 0;
  endedAt = 0;
  /** How it left the registry, once settled. */
  end: CallEnd | undefined;

  #resolve!: (value: unknown) => void;
  #reject!: (error: unknown) => void;
  #settled = false;
  /** The pending timeout (or idle) deadline. */
  #deadline: Deadline | undefined;
  readonly #deadlines: Deadlines;
  /** The pending rate-limit retry wait, on the same shared timer. */
  #wake: Deadline | undefined;
  /**
   * Tokens received (from the first on, the call streams), and the count at the last idle check
   * (no clock read per token).
   */
  #tokens = 0;
  #tokensAtCheck = 0;
  #quietChecks = 0;
  #onEnd: (call: Call, end: CallEnd) => void;
  /** The registry's calls by id, which it leaves when it ends (no closure per call for that). */
  readonly #registered: Map<string, Call> | undefined;
  /** Made only for a call with a signal: most calls have none. */
  #onAbort: (() => void) | undefined;

  /**
   * @param deadlines Where the call's timeout is kept: its registry's, shared
   * by all its calls (a new one by default).
   * @param registered The registry's calls, which the call leaves as it ends.
   */
  constructor(
    id: string,
    spec: CallSpec,
    onEnd: (call: Call, end: CallEnd) => void,
    deadlines: Deadlines = new Deadlines(),
    registered?: Map<string, Call>,
  ) {
    this.id = id;
    this.#deadlines = deadlines;
    this.spec = spec;
    this.retriesLeft = spec.maxRetries;
    this.#onEnd = onEnd;
    this.#registered = registered;
    this.startedAt = performance.now();
    this.result = newPromise();
    this.#resolve = settlers.resolve;
    this.#reject = settlers.reject;
    const signal = spec.signal;
    if (signal) {
      if (signal.aborted) {
        this.#abort();
        return;
      }
      signal.addEventListener("abort", this.#onAbort = () => this.#abort(), { once: true });
    }
    this.#arm(spec.timeout, this.startedAt);
  }

  /**
   * Whether the server may have seen the call (as `RealmError.sent` says): written to a socket
   * now, or the call a socket was serving when it closed.
   */
  get reachedServer(): boolean {
    return this.sent || this.mayHaveRun;
  }

  /** Tokens received so far. */
  get tokens(): number {
    return this.#tokens;
  }

  /** Whether the call has its outcome. */
  get settled(): boolean {
    return this.#settled;
  }

  /** A `streaming` frame arrived with this token. */
  token(token: string): void {
    if (this.#settled) return;
    if (++this.#tokens === 1) {
      // From the first token on, the stream is bounded by its idle gap, not the total timeout.
      this.firstTokenAt = performance.now();
      this.#arm(this.spec.idleTimeout / IDLE_CHECKS);
    }
    try {
      this.spec.onToken?.(token);
    } catch (error) {
      // The caller's own callback failed: stop listening and hand them their error,
      // rather than letting it escape from the socket's message handler.
      if (this.#finish("abandoned")) this.#reject(error);
    }
  }

  /**
   * The call's terminal `complete` frame arrived (at `now`, when its reader read the clock); an
   * answer that is an object carries the call's id.
   */
  complete(data: unknown, now?: number): void {
    if (this.#settled) return;
    if (typeof data === "object" && data !== null && !Array.isArray(data)) {
      (data as { requestId?: unknown }).requestId ??= this.id;
    }
    this.#finish("answered", now);
    this.#resolve(data);
  }

  /** The call failed for good (server error frame, dropped socket, ...). */
  fail(error: RealmError, end: CallEnd = "answered"): void {
    if (this.#finish(end)) this.#reject(error);
  }

  /** The consumer stopped listening (a `break` out of a stream): no outcome is delivered. */
  abandon(): void {
    if (this.#finish("abandoned")) this.#resolve(undefined);
  }

  /**
   * When the call times out if nothing arrives, on the `performance.now()`
   * clock; `Infinity` once it streams or without a timeout.
   */
  get deadlineAt(): number {
    return this.#tokens > 0 ? Infinity : this.#deadline?.at ?? Infinity;
  }

  /** Prepares a new try (rate-limit retry or resend after a drop); the timer keeps running. */
  resetForRetry(): void {
    this.sent = false;
    this.connection = undefined;
  }

  /** Runs `then` after `ms` unless the call settles first (a rate-limit retry wait). */
  wake(ms: number, then: () => void): void {
    this.#wake = this.#deadlines.add(ms, () => {
      this.#wake = undefined;
      if (!this.#settled) then();
    });
  }

  #arm(ms: number, now?: number): void {
    if (this.#deadline !== undefined) this.#deadlines.cancel(this.#deadline);
    this.#deadline = Number.isFinite(ms) ? this.#deadlines.add(ms, this, now) : undefined;
  }

  /**
   * The call's timeout (or idle check) is due: called by its {@linkcode Deadlines}, which keep
   * the call itself rather than a closure made for every call.
   */
  expire(): void {
    this.#deadline = undefined;
    if (this.#settled) return;
    if (this.#tokens > 0) {
      // Idle after IDLE_CHECKS checks in a row saw no new token: between 1 and
      // 1 + 1/IDLE_CHECKS times `idleTimeout` after the last one. Counting
      // tokens instead of timing each keeps the clock off the per-token path.
      if (this.#tokens !== this.#tokensAtCheck) {
        this.#tokensAtCheck = this.#tokens;
        this.#quietChecks = 0;
      }
      if (++this.#quietChecks <= IDLE_CHECKS) {
        this.#arm(this.spec.idleTimeout / IDLE_CHECKS);
        return;
      }
      this.fail(
        new RealmError(
          "TIMEOUT",
          `The ${this.spec.fn} stream (call ${this.id}) got no token for ` +
            `${this.spec.idleTimeout} ms: raise \`streamIdleTimeout\` for a slower model.`,
          { requestId: this.id, sent: true },
        ),
        "abandoned",
      );
      return;
    }

    this.fail(
      new RealmError(
        "TIMEOUT",
        `No answer to ${this.spec.fn} (call ${this.id}) within ${this.spec.timeout} ms. ` +
          (this.waitsForServer
            ? (this.attempts ? "Its connection closed, and no server" : "No server") +
              " could be reached to send it (see the `error` events)."
            : "It may have waited behind other calls: raise `timeout`, `connections` or " +
              "`pipelining`."),
        { requestId: this.id, sent: this.reachedServer },
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
        { requestId: this.id, sent: this.reachedServer, cause: reason },
      ),
      "abandoned",
    );
  }

  /** Marks the call settled and frees its deadline and listener; false if it already was. */
  #finish(end: CallEnd, now: number = performance.now()): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    this.end = end;
    this.endedAt = now;
    if (this.#deadline !== undefined) this.#deadlines.cancel(this.#deadline);
    this.#deadline = undefined;
    if (this.#wake !== undefined) this.#deadlines.cancel(this.#wake);
    this.#wake = undefined;
    try {
      if (this.#onAbort) this.spec.signal!.removeEventListener("abort", this.#onAbort);
    } catch { /* a signal-like object that throws here must not keep the call from settling */ }
    this.#registered?.delete(this.id);
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
  readonly #deadlines = new Deadlines();
  #nextId = 0;

  /** Creates and registers a call; it removes itself when it ends. */
  create(spec: CallSpec, onEnd: (call: Call, end: CallEnd) => void): Call {
    const id = String(++this.#nextId);
    const call = new Call(id, spec, onEnd, this.#deadlines, this.#calls);
    // A call aborted before creation has already ended and must not be kept.
    if (!call.settled) this.#calls.set(id, call);
    return call;
  }

  /** The unsettled call with this id. */
  get(id: string): Call | undefined {
    return this.#calls.get(id);
  }

  /** Whether `id` is one this registry gave out (so a frame for it is late, not foreign). */
  issued(id: string): boolean {
    const n = Number(id);
    return Number.isInteger(n) && n >= 1 && n <= this.#nextId && String(n) === id;
  }

  /** The unsettled calls, oldest first (a copy: settling them while iterating is safe). */
  pending(): Call[] {
    return [...this.#calls.values()];
  }

  /** Number of unsettled calls. */
  get size(): number {
    return this.#calls.size;
  }
}

/** Microtasks with no deadline pending after which the shared timer is released. */
const IDLE_HOPS = 32;

/**
 * Hops are queued on a settled promise: Node's `queueMicrotask` makes an async resource for each
 * (about 90 ns against 26 ns), and a call that follows another makes two hops.
 */
const tick = Promise.resolve();

/** What a deadline calls `expire()` on when it is due. */
export interface Expiring {
  expire(): void;
}

/** A deadline kept by {@linkcode Deadlines}. */
export interface Deadline {
  /** When it is due, on the `performance.now()` clock. */
  readonly at: number;
  /** Creation order: deadlines due together fire in the order they were set, as timers do. */
  readonly seq: number;
  /** What it calls when due: a function, or an object's `expire()` (a call: no closure per call). */
  readonly fire: (() => void) | Expiring;
  /** Fired or cancelled; it stays in the heap until it comes to the top or the heap is rebuilt. */
  done: boolean;
}

/**
 * Many deadlines on one timer, armed for the earliest. A `setTimeout` per call
 * (plus its `clearTimeout`) costs 1.3 to 4 µs on Deno 2.9 and garbage to
 * collect, more than the rest of a call's bookkeeping, while calls are almost
 * always answered long before their timeout. Here a call's deadline is an
 * entry in a binary heap, and the one timer stays armed across calls: a call
 * made right after the previous one settled, with the same timeout, is due
 * after the timer, so it needs no new one (the timer wakes early and re-arms).
 * When no deadline is pending the timer is released a few microtasks later,
 * once the settled call's awaiters had their turn to make the next call, so
 * that an idle client holds no timer (and Deno's leak sanitizer sees none).
 *
 * @example
 * ```ts
 * import { Deadlines } from "./calls.ts";
 *
 * const deadlines = new Deadlines();
 * const deadline = deadlines.add(1000, () => {
 *   throw new Error("timed out");
 * });
 * deadlines.cancel(deadline); // answered in time: nothing fires, and the timer is released
 * const left = deadlines.size; // 0
 * ```
 */
export class Deadlines {
  #heap: Deadline[] = [];
  #pending = 0;
  #seq = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the timer is set to fire; `Infinity` when there is none. */
  #timerAt = Infinity;
  /** Microtasks since the set last became idle; -1 when no release is under way. */
  #idleHops = -1;
  #onTimer = () => this.#fireDue();
  #onIdleHop = () => this.#idleHop();

  /**
   * Calls `fire` (or its `expire()`) once, `ms` milliseconds from now, unless
   * cancelled first; `now` spares a clock read to a caller that has just read it.
   */
  add(ms: number, fire: (() => void) | Expiring, now: number = performance.now()): Deadline {
    const deadline: Deadline = { at: now + ms, seq: ++this.#seq, fire, done: false };
    this.#push(deadline);
    this.#pending++;
    // A timer due before this deadline wakes up early and re-arms for it: cheaper than a new one.
    if (deadline.at < this.#timerAt) this.#arm(deadline.at, now);
    return deadline;
  }

  /** Cancels a deadline; does nothing once it has fired or been cancelled. */
  cancel(deadline: Deadline): void {
    if (deadline.done) return;
    deadline.done = true;
    if (--this.#pending === 0) return this.#idle();
    if (this.#heap.length > 64 && this.#heap.length > 4 * this.#pending) {
      // Mostly answered calls' entries: rebuild, so memory follows the pending calls.
      const pending = this.#heap.filter((entry) => !entry.done);
      this.#heap = [];
      for (const entry of pending) this.#push(entry);
    }
  }

  /** Deadlines not yet fired nor cancelled. */
  get size(): number {
    return this.#pending;
  }

  /** Nothing pending: forget the entries, and release the timer unless a deadline comes soon. */
  #idle(): void {
    this.#heap = [];
    // Restarts the count when a release is already under way. (With no timer it releases none.)
    if (this.#idleHops < 0) tick.then(this.#onIdleHop);
    this.#idleHops = 0;
  }

  /**
   * One microtask of an idle spell. A caller awaiting a call that just settled makes its next
   * call within a few microtasks (each `await` is one or three); a spell this long is idle.
   */
  #idleHop(): void {
    if (this.#pending > 0) this.#idleHops = -1;
    else if (++this.#idleHops < IDLE_HOPS) tick.then(this.#onIdleHop);
    else {
      this.#idleHops = -1;
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#timerAt = Infinity;
    }
  }

  #arm(at: number, now: number): void {
    clearTimeout(this.#timer); // a no-op without one
    this.#timerAt = at;
    // A negative delay is 0 on every runtime; past 2^31-1 ms a timer fires at once, so wait
    // that long at most and look again.
    this.#timer = setTimeout(this.#onTimer, Math.min(MAX_TIMER_MS, at - now));
  }

  #fireDue(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    // Timers count whole milliseconds and can fire up to 1 ms before performance.now()
    // reaches their delay; a deadline that close is due, as its own timer would have been.
    const now = performance.now();
    const due: Deadline[] = [];
    while (this.#heap.length > 0 && (this.#heap[0].done || this.#heap[0].at <= now + 1)) {
      const entry = this.#pop();
      if (!entry.done) due.push(entry);
    }
    // Collected first: a deadline added by a callback waits for the next timer.
    for (const entry of due) {
      if (entry.done) continue;
      entry.done = true;
      this.#pending--;
      const fire = entry.fire;
      if (typeof fire === "function") fire();
      else fire.expire();
    }
    if (this.#pending === 0) return this.#idle();
    while (this.#heap[0].done) this.#pop();
    if (this.#heap[0].at < this.#timerAt) this.#arm(this.#heap[0].at, now);
  }

  #push(entry: Deadline): void {
    const heap = this.#heap;
    let i = heap.length;
    heap.push(entry);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!earlier(entry, heap[parent])) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = entry;
  }

  #pop(): Deadline {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= heap.length) break;
        const right = left + 1;
        const child = right < heap.length && earlier(heap[right], heap[left]) ? right : left;
        if (!earlier(heap[child], last)) break;
        heap[i] = heap[child];
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }
}

/** The longest delay `setTimeout` honours; a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

function earlier(a: Deadline, b: Deadline): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/**
 * The result of a generation, with the call's id and timings. A stream's
 * `complete` frame carries only the token count, so its text is the joined tokens.
 */
export function toGenerationResult(
  data: unknown,
  call: Call,
  streamed?: string[],
): GenerationResult {
  const d = (typeof data === "object" && data !== null ? data : {}) as Record<string, unknown>;
  const result: GenerationResult = {
    text: streamed ? streamed.join("") : typeof d.text === "string" ? d.text : "",
    tokens_generated: typeof d.tokens_generated === "number"
      ? d.tokens_generated
      : streamed?.length ?? 0,
  };
  for (const key of ["prompt_tokens", "cost_usd", "time_ms"] as const) {
    if (typeof d[key] === "number") result[key] = d[key] as number;
  }
  result.requestId = call.id;
  result.durationMs = call.endedAt - call.startedAt;
  if (call.firstTokenAt) result.timeToFirstTokenMs = call.firstTokenAt - call.startedAt;
  return result;
}
