/**
 * One client connection of the stub server, as `websocket.rs` of `realm-server` runs it
 * (`WebSocketHandler`): the handshake (the welcome frame, or `auth_required` and the `auth`
 * frame), then a strictly sequential loop over the frames received: the tenant check, the rate
 * limit, the dispatch, and the answer's frames. The stub's counterpart of that module.
 *
 * A runtime adapter (`deno.ts`, `node.ts`, `bun.ts`) moves frames between a socket and a
 * {@linkcode StubConnection}; everything said on the wire is decided here and in the modules it
 * calls, with web standards only (timers, `performance`), so every adapter shares it unchanged.
 *
 * @module
 */

import { dispatch, type DispatchHost } from "./dispatcher.ts";
import { errorFrame } from "./protocol.ts";
import { type CallParse, parseAuth } from "./serde_json.ts";

/**
 * The engine's view of one client socket, implemented by each runtime adapter.
 *
 * @example A peer that records what the engine sends
 * ```ts
 * import type { StubPeer } from "./websocket.ts";
 *
 * const sent: string[] = [];
 * const peer: StubPeer = { send: (text) => sent.push(text), close: () => {} };
 * ```
 */
export interface StubPeer {
  /** Sends one text frame. */
  send(text: string): void;
  /** Closes without a status code: the client sees close code 1005. */
  close(): void;
  /**
   * Drops the connection abruptly (a TCP reset where the runtime allows it, else a close with
   * code 1011). When absent, {@linkcode StubPeer.close} is used instead.
   */
  terminate?(): void;
}

/**
 * What an adapter reports about one socket to the engine, returned by
 * `StubEngine.openConnection` (`server.ts`).
 *
 * @example
 * ```ts
 * import { StubEngine } from "./server.ts";
 *
 * const engine = new StubEngine();
 * const connection = engine.openConnection({ send: () => {}, close: () => {} });
 * connection.onClose();
 * engine.close();
 * ```
 */
export interface StubConnection {
  /** A text frame arrived. */
  onText(text: string): void;
  /** A binary frame arrived (its content never matters to the server). */
  onBinary(): void;
  /** The socket closed, whoever closed it. */
  onClose(): void;
}

/** The frame the server answers any binary frame with. */
export const BINARY_REPLY = JSON.stringify({ error: "Binary messages not supported" });
const INVALID_AUTH_FORMAT =
  'Invalid authentication message format. Expected: {"type":"auth","api_key":"your-key"}';

type Inbound = { kind: "text"; text: string; parsed: CallParse } | { kind: "binary" };

/** What a connection needs from its server: settings and shared state, kept off the public API. */
export interface ConnectionHost extends DispatchHost {
  readonly authenticated: boolean;
  readonly tokenDelayMs: number;
  readonly authTimeoutMs: number;
  /** The gate to wait on while the server is stalled, else undefined. */
  stallGate(): Promise<void> | undefined;
  /** Records a received text frame and parses it as a call (counting the calls). */
  record(text: string): CallParse;
  forget(connection: Connection): void;
  /** The key's tenant, or the server's failure message (`ApiKeyStore::validate`). */
  validateKey(key: string): { tenantId: string } | { error: string };
  /** Takes a token from the tenant's bucket: undefined if allowed, else whole seconds to wait. */
  rateLimitWait(tenantId: string): number | undefined;
  /**
   * Waits for a turn to generate (`maxConcurrentGenerations`); resolves with the function that
   * ends it, or undefined when `gone` (the connection's close) comes first.
   */
  generationTurn(gone: Promise<void>): Promise<(() => void) | undefined>;
}

/**
 * A promise plus its resolver, without relying on `Promise.withResolvers` (Node 22+).
 *
 * @example
 * ```ts
 * import { signal } from "./websocket.ts";
 *
 * const gate = signal();
 * gate.resolve();
 * await gate.promise;
 * ```
 */
export function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}

/** One client connection: a strictly sequential loop over the frames it receives. */
export class Connection implements StubConnection {
  readonly #host: ConnectionHost;
  readonly #peer: StubPeer;
  readonly #queue: Inbound[] = [];
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  /** Resolvers of pending sleeps, answered `false` when the connection closes. */
  readonly #sleepers = new Set<(slept: boolean) => void>();
  readonly #closedSignal = signal();
  #wake: (() => void) | undefined;
  #framesLeft: number;
  #closed = false;
  #tenantId: string | null = null;

  constructor(host: ConnectionHost, peer: StubPeer, dropBudget: number) {
    this.#host = host;
    this.#peer = peer;
    this.#framesLeft = dropBudget;
  }

  // --- StubConnection ---------------------------------------------------------------------

  onText(text: string): void {
    if (this.#closed) return;
    const parsed = this.#host.record(text);
    if (this.#host.stallGate() !== undefined) return; // a hung server swallows what it gets
    this.#queue.push({ kind: "text", text, parsed });
    this.#wake?.();
  }

  onBinary(): void {
    if (this.#closed || this.#host.stallGate() !== undefined) return;
    this.#queue.push({ kind: "binary" });
    this.#wake?.();
  }

  onClose(): void {
    this.#finish();
  }

  // --- engine-facing ----------------------------------------------------------------------

  start(): void {
    this.#run().catch(() => this.#drop());
  }

  closeGently(): void {
    if (this.#finish()) this.#peer.close();
  }

  setDropBudget(n: number): void {
    this.#framesLeft = n;
    if (n <= 0) this.#drop();
  }

  /** Sends at once, bypassing a stall; false when the connection is (now) gone. */
  sendNow(frame: string): boolean {
    if (this.#closed) return false;
    try {
      this.#peer.send(frame);
    } catch {
      this.#drop();
      return false;
    }
    if (--this.#framesLeft <= 0) {
      this.#drop();
      return false;
    }
    return true;
  }

  // --- internals --------------------------------------------------------------------------

  /** Marks the connection closed and releases everything; false if it already was. */
  #finish(): boolean {
    if (this.#closed) return false;
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const wake of this.#sleepers) wake(false);
    this.#sleepers.clear();
    this.#queue.length = 0;
    this.#closedSignal.resolve();
    this.#wake?.();
    this.#host.forget(this);
    return true;
  }

  #drop(): void {
    if (!this.#finish()) return;
    if (this.#peer.terminate) this.#peer.terminate();
    else this.#peer.close();
  }

  #timer(ms: number, callback: () => void): ReturnType<typeof setTimeout> {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      callback();
    }, ms);
    this.#timers.add(timer);
    return timer;
  }

  #cancelTimer(timer: ReturnType<typeof setTimeout> | undefined): void {
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#timers.delete(timer);
  }

  /** Resolves true after `ms`, or false as soon as the connection closes. */
  #sleep(ms: number): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.#sleepers.add(resolve);
      this.#timer(ms, () => {
        this.#sleepers.delete(resolve);
        resolve(true);
      });
    });
  }

  /** Waits out a stall; false when the connection closed meanwhile. */
  async #unstalled(): Promise<boolean> {
    for (let gate = this.#host.stallGate(); gate !== undefined; gate = this.#host.stallGate()) {
      if (this.#closed) return false;
      await Promise.race([gate, this.#closedSignal.promise]);
    }
    return !this.#closed;
  }

  /** Sends once the server is not stalled; false when the connection is gone. */
  async #emit(frame: string): Promise<boolean> {
    if (this.#host.stallGate() !== undefined && !(await this.#unstalled())) return false;
    return this.sendNow(frame);
  }

  /** The next inbound frame; null once closed, undefined when `timeoutMs` passed first. */
  #next(timeoutMs?: number): Promise<Inbound | null | undefined> {
    const ready = this.#queue.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => {
      let timeout: ReturnType<typeof setTimeout> | undefined;
      this.#wake = () => {
        this.#wake = undefined;
        this.#cancelTimer(timeout);
        resolve(this.#closed ? null : this.#queue.shift() ?? null);
      };
      if (timeoutMs !== undefined) {
        timeout = this.#timer(timeoutMs, () => {
          this.#wake = undefined;
          resolve(undefined);
        });
      }
    });
  }

  async #run(): Promise<void> {
    if (this.#framesLeft <= 0) return this.#drop();
    if (!(await this.#unstalled())) return;
    if (this.#host.authenticated && !(await this.#authenticate())) return;
    // Keys sorted, as the server's `serde_json::json!` writes them (so in every handshake frame).
    const welcome = { status: "connected", tenant_id: this.#tenantId, version: this.#host.version };
    if (!(await this.#emit(JSON.stringify(welcome)))) return;
    // One call at a time: the next frame is not looked at before this one's work is done.
    for (;;) {
      const inbound = await this.#next();
      if (!inbound) return;
      await this.#handle(inbound);
      if (this.#closed) return;
    }
  }

  /** The real handshake: auth_required, then the first frame decides. False when it failed. */
  async #authenticate(): Promise<boolean> {
    const required = {
      message: "Please send authentication message with your API key",
      type: "auth_required",
    };
    if (!(await this.#emit(JSON.stringify(required)))) return false;
    const first = await this.#next(this.#host.authTimeoutMs);
    if (first === null) return false;
    let failure: string;
    if (first === undefined) failure = "Authentication timeout (10 seconds)";
    else if (first.kind === "binary") failure = "Authentication message must be text";
    else {
      const key = parseAuth(first.text);
      const answer = key === undefined
        ? { error: INVALID_AUTH_FORMAT }
        : this.#host.validateKey(key);
      if ("error" in answer) failure = answer.error;
      else {
        this.#tenantId = answer.tenantId;
        return await this.#emit(
          JSON.stringify({ tenant_id: answer.tenantId, type: "auth_success" }),
        );
      }
    }
    if (await this.#emit(JSON.stringify({ error: failure, type: "auth_failed" }))) {
      this.closeGently();
    }
    return false;
  }

  async #handle(inbound: Inbound): Promise<void> {
    if (inbound.kind === "binary") {
      await this.#emit(BINARY_REPLY);
      return;
    }
    const parsed = inbound.parsed;
    if (!parsed.ok) {
      const message = `Invalid function call: ${parsed.reason}`;
      await this.#emit(errorFrame("unknown", "INTERNAL_ERROR", message));
      return;
    }
    const call = parsed.call;
    if (this.#tenantId !== null) {
      if (call.tenant_id !== this.#tenantId) {
        await this.#emit(errorFrame(call.id, "UNAUTHORIZED", "Tenant ID mismatch"));
        return;
      }
      const wait = this.#host.rateLimitWait(this.#tenantId);
      if (wait !== undefined) {
        const message = `Rate limit exceeded. Try again in ${wait} seconds.`;
        await this.#emit(errorFrame(call.id, "RATE_LIMIT_EXCEEDED", message));
        return;
      }
    }
    let endTurn: (() => void) | undefined;
    if (call.function === "generate") {
      endTurn = await this.#host.generationTurn(this.#closedSignal.promise);
      if (endTurn === undefined) return;
    }
    try {
      const result = await dispatch(call, this.#host, {
        closed: this.#closedSignal.promise,
        isClosed: () => this.#closed,
      });
      if (result === undefined) return;
      if (result.kind === "single") {
        await this.#emit(result.frame);
        return;
      }
      await this.#stream(result.tokens, result.end);
    } finally {
      endTurn?.();
    }
  }

  /** `handle_dispatch_result` for a stream: its token frames, paced, then its end. */
  async #stream(tokens: Iterable<string>, end: string | undefined): Promise<void> {
    const delay = this.#host.tokenDelayMs;
    let index = 0;
    for (const frame of tokens) {
      // The first token goes out at once, then one per delay; with no delay, still yield to
      // the event loop now and then so other connections and timers get their turn.
      if (index > 0 && (delay > 0 || index % 100 === 0) && !(await this.#sleep(delay))) return;
      index++;
      if (!(await this.#emit(frame))) return;
    }
    if (end !== undefined) await this.#emit(end);
  }
}
