/**
 * The stub Realm server as a whole, independent of any runtime: its options (checked at start,
 * as `realm serve` checks its configuration), its shared state (API keys, rate limiter,
 * pipelines, open connections, received frames) and its fault switches. The counterpart of
 * `lib.rs` of `realm-server` (`ServerConfig`, `RealmServer`); each connection runs in
 * `websocket.ts`, each call in `dispatcher.ts`.
 *
 * The behaviour follows the real `realm-server` 0.1.0 in simulation mode, quirks included: one
 * call at a time per connection, `id:"unknown"` errors for frames that are not calls, no
 * `retry_after`, a `max_tokens: 0` stream that never ends, streams of at most 13 tokens,
 * `uptime_seconds` always 0, no orchestrator, serde_json's error messages (`serde_json.ts`) and
 * its key order. The extras for tests (long streams, pipelines, fault switches) are opt-in.
 *
 * @module
 */

import { ApiKeyStore } from "./auth.ts";
import { ragPipeline, type StubPipelineHandler } from "./dispatcher.ts";
import { complete, errorFrame } from "./protocol.ts";
import { RateLimiter, type StubRateLimit } from "./rate_limiter.ts";
import { tenantIdProblem } from "./runtime_manager.ts";
import { parseCall } from "./serde_json.ts";
import {
  BINARY_REPLY,
  Connection,
  type ConnectionHost,
  signal,
  type StubConnection,
  type StubPeer,
} from "./websocket.ts";

/**
 * Options of {@linkcode startStubServer}. Every option is optional; the defaults reproduce the
 * real `realm-server` in simulation mode (no model runtime, no orchestrator) with authentication
 * off and no rate limit.
 *
 * @example An authenticated server with a tight rate limit and fast tokens
 * ```ts
 * import type { StubServerOptions } from "@realm-ai/ws-client/testing";
 *
 * const options: StubServerOptions = {
 *   apiKeys: { "sk_test_1": "tenant-a" },
 *   rateLimit: { perMinute: 60, burst: 2 },
 *   tokenDelayMs: 1,
 * };
 * ```
 */
export interface StubServerOptions {
  /** TCP port to listen on, always on 127.0.0.1. Default `0`: a free port picked by the OS. */
  port?: number;
  /**
   * API key to tenant id. A non-empty record turns on authenticated mode: every connection then
   * starts with `auth_required` and must send `{"type":"auth","api_key":...}` first. Default:
   * open mode (no authentication), the real server's default. Each tenant id must follow the
   * server's rule (3 to 64 bytes of letters, digits, `-`, `_`): the real server would refuse
   * every call of another, so the stub refuses to start with a `RangeError` naming it.
   */
  apiKeys?: Record<string, string>;
  /**
   * Token bucket per tenant, shared by all of the tenant's connections and checked before every
   * call (health and metadata included). Applies to authenticated connections only, as on the
   * real server. Default: no rate limit.
   */
  rateLimit?: StubRateLimit;
  /**
   * Delay between two streamed tokens, in milliseconds. Default `50`, the real simulation's
   * pace. `0` streams as fast as the socket takes it.
   */
  tokenDelayMs?: number;
  /**
   * How long an authenticated connection may take to send its `auth` frame, in milliseconds.
   * Default `10000`, the real server's 10 seconds. The failure message always says
   * `Authentication timeout (10 seconds)`, as the real server's does.
   */
  authTimeoutMs?: number;
  /**
   * Pipelines by name, callable with `function: "pipeline"`; giving any turns the orchestrator on
   * (see {@linkcode StubServerOptions.orchestrator}). With the orchestrator on, the built-in
   * `rag-pipeline` (`{query}` in, `{answer, sources}` out) is there too unless this record
   * replaces it. Default: none.
   */
  pipelines?: Record<string, StubPipelineHandler>;
  /**
   * Whether the server has a model orchestrator, which runs pipelines. Without one, every
   * `pipeline` call is answered with `DISPATCH_ERROR` `Orchestrator not available`, as the real
   * server in simulation mode answers it. `true` adds one, with the built-in `rag-pipeline`
   * (a test extra: a real orchestrator starts with no pipeline). Default: `true` when
   * `pipelines` are given, else `false`.
   */
  orchestrator?: boolean;
  /**
   * A test extra: streams carry exactly `max_tokens` tokens (the simulation's 13 words, cycled),
   * for tests and benchmarks that need long streams. Default `false`: at most 13 tokens, as the
   * real simulation streams.
   */
  longStreams?: boolean;
  /** Version reported by the welcome frame, `health` and `metadata`. Default `"0.1.0"`. */
  version?: string;
  /**
   * How many `generate` calls the server runs at once over all its connections, as a machine
   * has room for so many; the others wait their turn (in arrival order) before their first
   * token. Not a setting of the real server: it models one machine's limit, so that a test or
   * a benchmark can show what several servers buy. Default `Infinity`.
   */
  maxConcurrentGenerations?: number;
}

/**
 * A frame the stub can push on demand with {@linkcode StubFaults.sendMalformed}:
 *
 * | kind | frame |
 * | --- | --- |
 * | `not-json` | `{oops` |
 * | `unknown-id` | a well-formed `complete` frame for an id no client used |
 * | `binary-reply` | `{"error":"Binary messages not supported"}` |
 * | `id-unknown` | `{"id":"unknown","status":"error","error":{"code":"INTERNAL_ERROR",...}}` |
 *
 * @example
 * ```ts
 * import type { StubMalformedKind } from "@realm-ai/ws-client/testing";
 *
 * const kinds: StubMalformedKind[] = ["not-json", "unknown-id", "binary-reply", "id-unknown"];
 * ```
 */
export type StubMalformedKind = "not-json" | "unknown-id" | "binary-reply" | "id-unknown";

/**
 * Fault switches of a running stub server, for testing how a client copes with a misbehaving
 * network or server. Every switch acts at once on open connections and on new ones.
 *
 * @example Drop every connection after its next frame, then heal
 * ```ts
 * import { startStubServer } from "@realm-ai/ws-client/testing";
 *
 * const server = await startStubServer({ tokenDelayMs: 1 });
 * server.faults.dropAfterFrames(1);
 * server.faults.clear();
 * await server.close();
 * ```
 */
export interface StubFaults {
  /**
   * Drops each connection abruptly once the server has sent it `n` more frames (counted from
   * now for open connections, from the start for new ones). `0` drops open connections at once
   * and new ones before their first frame. The drop is a close with code 1011 where the runtime
   * cannot cut the TCP connection. `Infinity` turns the fault off.
   */
  dropAfterFrames(n: number): void;
  /**
   * While on, the server hangs: new connections get no first frame until it is turned off,
   * frames received meanwhile are swallowed (never answered, even later), and running streams
   * pause, resuming when it is turned off.
   */
  stall(on: boolean): void;
  /**
   * Pushes one malformed frame, now, to every open connection, whatever its state (a stalled
   * connection included, so a test can make it the first frame a client sees).
   */
  sendMalformed(kind: StubMalformedKind): void;
  /** While on, WebSocket upgrade requests are answered with HTTP 503. */
  rejectConnections(on: boolean): void;
  /** Turns every fault off (resuming stalled connections). */
  clear(): void;
}

/**
 * A running stub Realm server, returned by {@linkcode startStubServer}.
 *
 * @example Connect a raw WebSocket and read the welcome frame
 * ```ts
 * import { startStubServer } from "@realm-ai/ws-client/testing";
 *
 * const server = await startStubServer();
 * const socket = new WebSocket(server.url);
 * const welcome = await new Promise<string>((resolve) => {
 *   socket.onmessage = (event) => resolve(event.data);
 * });
 * const closed = new Promise((resolve) => (socket.onclose = resolve));
 * socket.close();
 * await closed;
 * await server.close();
 * const { status, version } = JSON.parse(welcome); // "connected", "0.1.0"
 * ```
 */
export interface StubServer {
  /** The address to connect to, `ws://127.0.0.1:<port>`. */
  readonly url: string;
  /** The TCP port the server listens on. */
  readonly port: number;
  /** How many WebSocket connections are open now. */
  readonly connectionCount: number;
  /**
   * How many call frames (text frames that parse as a call) clients have sent so far, answered
   * or not: handy for asserting that a client sent nothing.
   */
  readonly callCount: number;
  /** The fault switches. */
  readonly faults: StubFaults;
  /** Every text frame received from any client so far, in arrival order (a fresh copy). */
  receivedFrames(): string[];
  /**
   * Adds (or re-enables) an API key. Takes effect for later authentications; the mode
   * (open or authenticated) is fixed when the server starts. Throws a `RangeError` for a tenant
   * id the real server would refuse (see {@linkcode StubServerOptions.apiKeys}).
   */
  setApiKey(key: string, tenantId: string): void;
  /**
   * Revokes an API key for later authentications: `"disabled"` (the default) makes them fail
   * with `API key is disabled`, `"removed"` with `Invalid API key`. Authenticated connections
   * stay open, as on the real server.
   */
  revokeApiKey(key: string, how?: "disabled" | "removed"): void;
  /**
   * Stops listening, closes every connection (close without a status code, seen as 1005) and
   * clears every timer. Idempotent: later calls return the same promise.
   */
  close(): Promise<void>;
}

/**
 * What an adapter owns: the listening socket.
 *
 * @example
 * ```ts
 * import type { StubListener } from "./server.ts";
 *
 * const listener: StubListener = { port: 8080, close: () => Promise.resolve() };
 * ```
 */
export interface StubListener {
  /** The bound TCP port. */
  readonly port: number;
  /** Stops listening and resolves once every socket has closed. */
  close(): Promise<void>;
}

/**
 * Turns to run a generation, `size` at a time, handed out in the order asked. A connection
 * that closes while waiting leaves the line.
 */
class Turns {
  #free: number;
  readonly #line: (() => void)[] = [];
  constructor(size: number) {
    this.#free = size;
  }
  /** Resolves with the function that ends the turn; undefined if `gone` settles first. */
  async take(gone: Promise<void>): Promise<(() => void) | undefined> {
    if (this.#free > 0) {
      this.#free--;
      return this.#ender();
    }
    let wake!: () => void;
    const turn = new Promise<"turn">((resolve) => (wake = () => resolve("turn")));
    this.#line.push(wake);
    if (await Promise.race([turn, gone]) === "turn") return this.#ender();
    const place = this.#line.indexOf(wake);
    if (place >= 0) this.#line.splice(place, 1);
    else this.#ender()(); // the turn came with the close: hand it on
    return undefined;
  }
  #ender(): () => void {
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const next = this.#line.shift();
      if (next) next();
      else this.#free++;
    };
  }
}

function checkNonNegative(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !(value >= 0) || !Number.isFinite(value)) {
    throw new RangeError(`${name} must be a finite number >= 0, got ${value}`);
  }
  return value;
}

/**
 * The stub server, independent of any runtime: its settings, shared state and fault switches,
 * and a connection loop (`websocket.ts`) for every socket an adapter reports as a
 * {@linkcode StubPeer}.
 *
 * @example Drive the engine with an in-memory peer
 * ```ts
 * import { StubEngine } from "./server.ts";
 *
 * const engine = new StubEngine();
 * const sent: string[] = [];
 * const connection = engine.openConnection({ send: (text) => sent.push(text), close: () => {} });
 * connection.onText('{"id":"1","function":"health","params":{}}');
 * await new Promise((resolve) => setTimeout(resolve, 10));
 * connection.onClose();
 * engine.close();
 * const [welcome, health] = sent; // the welcome frame, then health's complete frame
 * ```
 */
export class StubEngine {
  /** The fault switches of this engine (see {@linkcode StubFaults}). */
  readonly faults: StubFaults;
  readonly #host: ConnectionHost;
  readonly #apiKeys = new ApiKeyStore();
  readonly #pipelines = new Map<string, StubPipelineHandler>();
  readonly #connections = new Set<Connection>();
  readonly #received: string[] = [];
  #callCount = 0;
  #dropBudget = Infinity;
  #stall: { promise: Promise<void>; resolve: () => void } | undefined;
  #rejecting = false;
  #closed = false;
  #orphanCount = 0;

  /**
   * Checks the options (throwing a `RangeError` or `TypeError` for a bad one) and prepares an
   * engine with no connections.
   */
  constructor(options: StubServerOptions = {}) {
    const tokenDelayMs = checkNonNegative("tokenDelayMs", options.tokenDelayMs, 50);
    const generations = options.maxConcurrentGenerations ?? Infinity;
    if (!(generations >= 1) || (generations !== Infinity && !Number.isInteger(generations))) {
      throw new RangeError(
        `maxConcurrentGenerations must be an integer >= 1 or Infinity, got ${generations}`,
      );
    }
    const machine = new Turns(generations);
    const authTimeoutMs = checkNonNegative("authTimeoutMs", options.authTimeoutMs, 10_000);
    const rateLimiter = options.rateLimit === undefined
      ? undefined
      : new RateLimiter(options.rateLimit);
    for (const [key, tenantId] of Object.entries(options.apiKeys ?? {})) {
      this.setApiKey(key, tenantId);
    }
    this.#pipelines.set("rag-pipeline", ragPipeline);
    for (const [name, handler] of Object.entries(options.pipelines ?? {})) {
      if (typeof handler !== "function") {
        throw new TypeError(`pipeline "${name}" is not a function`);
      }
      this.#pipelines.set(name, handler);
    }
    this.#host = {
      // The mode is fixed at start, as a real server's `--auth` flag is.
      authenticated: this.#apiKeys.size > 0,
      tokenDelayMs,
      authTimeoutMs,
      orchestrator: options.orchestrator ?? options.pipelines !== undefined,
      longStreams: options.longStreams ?? false,
      version: options.version ?? "0.1.0",
      stallGate: () => this.#stall?.promise,
      record: (text) => {
        this.#received.push(text);
        const parsed = parseCall(text);
        if (parsed.ok) this.#callCount++;
        return parsed;
      },
      forget: (connection) => this.#connections.delete(connection),
      validateKey: (key) => this.#apiKeys.validate(key),
      pipeline: (name) => this.#pipelines.get(name),
      rateLimitWait: (tenantId) => rateLimiter?.wait(tenantId),
      generationTurn: (gone) => machine.take(gone),
    };
    this.faults = this.#createFaults();
  }

  /** Whether an adapter should accept an upgrade request now (false: answer HTTP 503). */
  get acceptingConnections(): boolean {
    return !this.#rejecting && !this.#closed;
  }

  /** How many connections are open now. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** How many call frames clients have sent so far (see {@linkcode StubServer.callCount}). */
  get callCount(): number {
    return this.#callCount;
  }

  /** Every text frame received so far, in order (a copy). */
  receivedFrames(): string[] {
    return [...this.#received];
  }

  /**
   * Adds or re-enables an API key. A tenant id the real server would refuse on every call is
   * refused here, at once, with a `RangeError` naming the key, the tenant and the rule.
   */
  setApiKey(key: string, tenantId: string): void {
    if (typeof key !== "string" || typeof tenantId !== "string") {
      throw new TypeError("API keys and tenant ids must be strings");
    }
    const problem = tenantIdProblem(tenantId);
    if (problem !== undefined) {
      throw new RangeError(
        `API key ${JSON.stringify(key)} maps to tenant ${JSON.stringify(tenantId)}, which the ` +
          `real server refuses on every call: ${problem}.`,
      );
    }
    this.#apiKeys.add(key, tenantId);
  }

  /** Disables or removes an API key for later authentications. */
  revokeApiKey(key: string, how: "disabled" | "removed" = "disabled"): void {
    this.#apiKeys.revoke(key, how);
  }

  /** Starts serving one freshly opened socket; the engine sends its first frame at once. */
  openConnection(peer: StubPeer): StubConnection {
    const connection = new Connection(this.#host, peer, this.#dropBudget);
    if (this.#closed) {
      connection.closeGently();
      return connection;
    }
    this.#connections.add(connection);
    connection.start();
    return connection;
  }

  /** Closes every connection (without a status code) and stops all work. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const connection of [...this.#connections]) connection.closeGently();
    this.#stall?.resolve();
    this.#stall = undefined;
  }

  #createFaults(): StubFaults {
    const faults: StubFaults = {
      dropAfterFrames: (n) => {
        if (typeof n !== "number" || Number.isNaN(n)) {
          throw new RangeError(`dropAfterFrames needs a number, got ${n}`);
        }
        this.#dropBudget = Math.max(0, n);
        for (const connection of [...this.#connections]) connection.setDropBudget(this.#dropBudget);
      },
      stall: (on) => {
        if (on && this.#stall === undefined && !this.#closed) this.#stall = signal();
        if (!on) {
          this.#stall?.resolve();
          this.#stall = undefined;
        }
      },
      sendMalformed: (kind) => {
        const frame = this.#malformedFrame(kind);
        for (const connection of [...this.#connections]) connection.sendNow(frame);
      },
      rejectConnections: (on) => {
        this.#rejecting = on;
      },
      clear: () => {
        faults.dropAfterFrames(Infinity);
        faults.stall(false);
        faults.rejectConnections(false);
      },
    };
    return faults;
  }

  #malformedFrame(kind: StubMalformedKind): string {
    switch (kind) {
      case "not-json":
        return "{oops";
      case "unknown-id":
        return complete(`stub-orphan-${++this.#orphanCount}`, {
          status: "healthy",
          uptime_seconds: 0,
          version: this.#host.version,
        });
      case "binary-reply":
        return BINARY_REPLY;
      case "id-unknown":
        return errorFrame(
          "unknown",
          "INTERNAL_ERROR",
          "Invalid function call: expected value at line 1 column 1",
        );
      default:
        throw new TypeError(`unknown malformed frame kind: ${kind}`);
    }
  }
}

/**
 * Joins an engine and an adapter's listener into the public {@linkcode StubServer}.
 *
 * @example
 * ```ts
 * import { createStubServer, StubEngine } from "./server.ts";
 *
 * const engine = new StubEngine();
 * const server = createStubServer(engine, { port: 1234, close: () => Promise.resolve() });
 * const url = server.url; // "ws://127.0.0.1:1234"
 * await server.close();
 * ```
 */
export function createStubServer(engine: StubEngine, listener: StubListener): StubServer {
  let closing: Promise<void> | undefined;
  return {
    url: `ws://127.0.0.1:${listener.port}`,
    port: listener.port,
    get connectionCount() {
      return engine.connectionCount;
    },
    get callCount() {
      return engine.callCount;
    },
    faults: engine.faults,
    receivedFrames: () => engine.receivedFrames(),
    setApiKey: (key, tenantId) => engine.setApiKey(key, tenantId),
    revokeApiKey: (key, how) => engine.revokeApiKey(key, how),
    close: () => {
      closing ??= (async () => {
        engine.close();
        await listener.close();
      })();
      return closing;
    },
  };
}
