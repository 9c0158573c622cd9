/**
 * Public option and result types, shaped like the server's wire format.
 *
 * @module
 */

import type { RealmError } from "./errors.ts";
import type { StateChange } from "./lifecycle.ts";

/**
 * A `WebSocket` constructor: the runtime's global one, `ws` on older Node, or
 * any compatible implementation (a proxy-aware one, a test double).
 *
 * @example
 * ```ts
 * import type { WebSocketConstructor } from "@realm-ai/ws-client";
 * const impl: WebSocketConstructor = WebSocket;
 * ```
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

/**
 * Receives the client's debug lines when given as the `logger` option. The
 * client prints nothing by itself; lines never contain the API key.
 *
 * @example
 * ```ts
 * import type { RealmLogger } from "@realm-ai/ws-client";
 * const lines: string[] = [];
 * const logger: RealmLogger = (message) => lines.push(message);
 * ```
 */
export type RealmLogger = (message: string, data?: Record<string, unknown>) => void;

/**
 * Options of {@linkcode RealmWebSocketClient}. Only `model` is required.
 *
 * @example
 * ```ts
 * import type { RealmClientOptions } from "@realm-ai/ws-client";
 * const options: RealmClientOptions = { model: "llama-2-7b", timeout: 10_000 };
 * ```
 */
export interface RealmClientOptions {
  /** Model name, file path or URL, sent with every `generate`. Required: it has no default. */
  model: string;
  /**
   * Server address, `ws:` or `wss:`, or a list of servers: calls are spread
   * over all of them, and a server that fails is left out until it is back.
   *
   * @default {"ws://localhost:8080"}
   */
  url?: string | string[];
  /**
   * API key for servers started with `--auth`. The server then decides the
   * tenant: the client adopts the tenant id from `auth_success`. `""` (an
   * empty environment variable) counts as no key. Default: none.
   */
  apiKey?: string;
  /**
   * Tenant id sent with every call on open servers: 3 to 64 letters, digits,
   * `-` or `_`. Replaced by the server's tenant after authentication.
   * Default: a random UUID, drawn when the client is made.
   */
  tenantId?: string;
  /**
   * Reconnect after an unexpected close.
   *
   * @default {true}
   */
  reconnect?: boolean;
  /**
   * First reconnect delay in ms; later ones double up to
   * `maxReconnectInterval`, each randomised (full jitter).
   *
   * @default {5000}
   */
  reconnectInterval?: number;
  /**
   * Longest reconnect delay in ms; never below `reconnectInterval` (a larger
   * `reconnectInterval` raises the default to it).
   *
   * @default {60000}
   */
  maxReconnectInterval?: number;
  /**
   * Reconnect tries after a drop before giving up.
   *
   * @default {Infinity}
   */
  maxReconnectAttempts?: number;
  /**
   * Per-call timeout in ms: the longest a call waits for its answer (for a
   * stream: for its first token; later tokens are bounded by
   * `streamIdleTimeout`).
   *
   * @default {30000}
   */
  timeout?: number;
  /**
   * Longest gap in ms between two frames of a stream before it fails with
   * `TIMEOUT` (checked in quarter steps, so within 1.25× of it). The real
   * server can stop a stream without a final frame.
   *
   * @default {30000}
   */
  streamIdleTimeout?: number;
  /**
   * Longest wait in ms for the server's first frame (and the authentication
   * answer) when opening a socket.
   *
   * @default {10000}
   */
  connectTimeout?: number;
  /**
   * Send a `health` call after this many ms without traffic, to detect a
   * half-open socket. `0` turns it off.
   *
   * @default {0}
   */
  heartbeatInterval?: number;
  /**
   * How long a heartbeat waits for its answer, in ms.
   *
   * @default {10000}
   */
  heartbeatTimeout?: number;
  /**
   * Retries of a rate-limited call after the server's `retryAfter`; `0`: the
   * error reaches the caller unchanged.
   *
   * @default {0}
   */
  maxRetries?: number;
  /**
   * Calls that may wait for a connection while the client reconnects; past it
   * a call fails at once with `QUEUE_FULL`.
   *
   * @default {1000}
   */
  maxQueuedCalls?: number;
  /**
   * Sockets to open, from 1 to 64. Each call goes to the least busy one, so up
   * to this many calls run in parallel (the server serves one call at a time
   * per socket). With a list of servers they are spread over the servers in
   * turn. Default: one per server (`1` for a single `url`).
   */
  connections?: number;
  /**
   * Calls one socket carries at once: written to it and not yet answered; the
   * rest wait in the client's queue for the first socket with room. The
   * server serves a socket's calls one at a time, in order, so a cap costs a
   * round trip per call over a network (at 10 ms each way, about 140 calls/s
   * per socket at 4, against 21,000 uncapped) and gains nothing in failover
   * (calls the server never read are re-sent for free). A small cap (1 to 8)
   * suits an app that mixes long streams with bursts of short calls on few
   * sockets, or that wants to bound what a hung server holds: fewer short calls
   * then wait behind a stream. An integer ≥ 1, or `Infinity` for no limit.
   *
   * @default {Infinity}
   */
  pipelining?: number;
  /**
   * Allow sending `apiKey` over plain `ws://` to a host that is not loopback.
   * Off by default: such a key would cross the network readable by anyone.
   *
   * @default {false}
   */
  allowInsecureAuth?: boolean;
  /**
   * The `WebSocket` implementation to use. Default: the runtime's global; the
   * npm package falls back to `ws` where there is none (Node 20).
   */
  WebSocket?: WebSocketConstructor;
  /** Receives debug lines. Default: none; the client prints nothing. */
  logger?: RealmLogger;
}

/**
 * Per-call options, the last argument of every call.
 *
 * @example
 * ```ts
 * import type { CallOptions } from "@realm-ai/ws-client";
 * const opts: CallOptions = { timeout: 5_000, signal: AbortSignal.timeout(10_000) };
 * ```
 */
export interface CallOptions {
  /** Aborting it rejects the call at once with `ABORTED`. */
  signal?: AbortSignal;
  /** Overrides the client's `timeout` for this call, in ms. */
  timeout?: number;
  /** Overrides the client's `streamIdleTimeout` for this call, in ms. */
  streamIdleTimeout?: number;
  /** Overrides the client's `maxRetries` for this call. */
  maxRetries?: number;
  /**
   * For `executePipeline`: the pipeline may run twice without harm, so when
   * its connection closes while the server may be running it, it is sent
   * again (as `generate`, `health` and `metadata` always are). Default
   * `false`: a pipeline's steps may act on the world.
   */
  safeToRepeat?: boolean;
}

/**
 * Parameters of `generate`, as the server names them.
 *
 * @example
 * ```ts
 * import type { GenerationOptions } from "@realm-ai/ws-client";
 * const options: GenerationOptions = { prompt: "Hi", max_tokens: 20, temperature: 0.2 };
 * ```
 */
export interface GenerationOptions {
  /** The prompt. Required. */
  prompt: string;
  /** Overrides the client's `model` for this call. */
  model?: string;
  /** Most tokens to generate: an integer ≥ 1. Server default 100. */
  max_tokens?: number;
  /** Sampling temperature, 0 to 2. Server default 0.7. */
  temperature?: number;
  /** Nucleus sampling, in (0, 1]. Server default 0.9. */
  top_p?: number;
  /** Top-k sampling, an integer ≥ 0 (0 = off). Server default 0. */
  top_k?: number;
  /** Repetition penalty, > 0. Server default 1.0. */
  repetition_penalty?: number;
  /**
   * With `generate()`: stream the answer and join it (see `onToken`).
   * Ignored by `generateStream()`, which always streams.
   */
  stream?: boolean;
  /** With `generate({ stream: true })`: called with each token as it arrives. */
  onToken?: (token: string) => void;
}

/**
 * What `generate()` resolves to. Without streaming, the server's `complete`
 * data; with `stream: true`, the joined tokens and the token count.
 *
 * @example
 * ```ts
 * import type { GenerationResult } from "@realm-ai/ws-client";
 * const show = (r: GenerationResult) => `${r.text} (${r.tokens_generated} tokens)`;
 * ```
 */
export interface GenerationResult {
  /** The generated text. */
  text: string;
  /** Tokens generated. */
  tokens_generated: number;
  /** Prompt tokens, when the server reports them. */
  prompt_tokens?: number;
  /** Cost in US dollars, when the server reports it. */
  cost_usd?: number;
  /** Server time in ms, when the server reports it. */
  time_ms?: number;
  /** The call's id, as its errors carry it and the server logs it. */
  requestId?: string;
  /** Time from the call to its result in ms, measured by the client (waits and retries included). */
  durationMs?: number;
  /** With streaming: time from the call to its first token in ms, measured by the client. */
  timeToFirstTokenMs?: number;
}

/**
 * What `health()` resolves to.
 *
 * @example
 * ```ts
 * import type { HealthStatus } from "@realm-ai/ws-client";
 * const ok = (h: HealthStatus) => h.status === "healthy";
 * ```
 */
export interface HealthStatus {
  /** `"healthy"` when the server is serving. */
  status: string;
  /** The server's version, e.g. `"0.1.0"`. */
  version: string;
  /** Seconds since the server started (`realm-server` 0.1.0 always says 0). */
  uptime_seconds: number;
  /** The call's id, as its errors carry it and the server logs it. */
  requestId?: string;
}

/**
 * One parameter of a server function, as `metadata()` lists it.
 *
 * @example
 * ```ts
 * import type { ParamMetadata } from "@realm-ai/ws-client";
 * const required = (p: ParamMetadata) => p.required;
 * ```
 */
export interface ParamMetadata {
  /** Parameter name. */
  name: string;
  /** Its type as the server names it (Rust names: `"String"`, `"usize"`, `"f64"`, `"bool"`, ...); `param_type` in the server, renamed on the wire. */
  type: string;
  /** What it does. */
  description: string;
  /** Whether a call must give it. */
  required: boolean;
  /** Its default, when it has one. */
  default?: unknown;
}

/**
 * One server function, as `metadata()` lists it.
 *
 * @example
 * ```ts
 * import type { FunctionMetadata } from "@realm-ai/ws-client";
 * const names = (fs: FunctionMetadata[]) => fs.map((f) => f.name);
 * ```
 */
export interface FunctionMetadata {
  /** Function name, e.g. `"generate"`. */
  name: string;
  /** What it does. */
  description: string;
  /** Its parameters. */
  params: ParamMetadata[];
  /** What it returns. */
  returns: string;
  /** Whether it can stream. */
  streaming: boolean;
}

/**
 * What `metadata()` resolves to.
 *
 * @example
 * ```ts
 * import type { RuntimeMetadata } from "@realm-ai/ws-client";
 * const canStream = (m: RuntimeMetadata) => m.functions.some((f) => f.streaming);
 * ```
 */
export interface RuntimeMetadata {
  /** The server's version. */
  version: string;
  /** The functions the server offers. */
  functions: FunctionMetadata[];
  /** The call's id, as its errors carry it and the server logs it. */
  requestId?: string;
}

/**
 * Input of a pipeline: any JSON object; its fields depend on the pipeline.
 *
 * @example
 * ```ts
 * import type { PipelineInput } from "@realm-ai/ws-client";
 * const input: PipelineInput = { query: "What is ML?", context: "..." };
 * ```
 */
export type PipelineInput = Record<string, unknown>;

/**
 * Payloads of the client's events, by event name. With `on()` the callback
 * receives the payload; with `addEventListener()` it is the event's `detail`.
 * `socket` is the index (from 0) of the socket among `connections`, `url`
 * its server.
 *
 * @example
 * ```ts
 * import type { RealmEventMap } from "@realm-ai/ws-client";
 * const log = (d: RealmEventMap["disconnected"]) => `closed with ${d.code}`;
 * ```
 */
export interface RealmEventMap {
  /**
   * Socket(s) are being opened: `attempt` 0 for `connect()` (all sockets),
   * then 1, 2, … for one socket's reconnects.
   */
  connecting: { attempt: number; socket?: number; url?: string };
  /** A socket completed the handshake; fires on every (re)connection of every socket. */
  connected: { tenantId: string; version: string; socket: number; url: string };
  /** A socket closed; `code` and `reason` as the close event gave them. */
  disconnected: {
    code: number;
    reason: string;
    willReconnect: boolean;
    socket: number;
    url: string;
  };
  /** A socket's reconnect is scheduled after `delay` ms; `attempt` counts from 1. */
  reconnecting: { attempt: number; delay: number; socket: number; url: string };
  /** Something went wrong that is not one call's result. */
  error: RealmError;
  /** `client.state` changed; see the README's "Connection states". */
  statechange: StateChange;
}

/**
 * Counts of what the client holds right now. After `disconnect()` all are
 * zero but `listeners`, which counts the `on()` listeners still registered:
 * they survive `disconnect()`, so that a later `connect()` keeps them.
 *
 * @example
 * ```ts
 * import type { ClientStats } from "@realm-ai/ws-client";
 * const idle = (s: ClientStats) => s.pendingCalls === 0 && s.queuedCalls === 0;
 * ```
 */
export interface ClientStats {
  /** Calls without an outcome yet (queued, sent, or waiting out a rate-limit retry). */
  pendingCalls: number;
  /** Calls waiting for a connection. */
  queuedCalls: number;
  /** Sockets open and handshaken. */
  openConnections: number;
  /**
   * Calls written to sockets whose last frame has not arrived, abandoned ones
   * included until they have been quiet for `streamIdleTimeout`.
   */
  callsOnTheWire: number;
  /** Event listeners added with `on()`. */
  listeners: number;
  /** Calls re-sent after a socket closed before their answer began, since the client was made. */
  resentCalls: number;
  /**
   * Retries the client-wide retry budget withheld since the client was made
   * (re-sends of a call a server may have been running, rate-limit retries).
   */
  retriesWithheld: number;
  /** With a list of servers (`url` given as an array): each server, in the order given. */
  servers?: ServerStats[];
}

/**
 * One server of a list, as `stats().servers` reports it.
 *
 * @example
 * ```ts
 * import type { ServerStats } from "@realm-ai/ws-client";
 * const usable = (servers: ServerStats[]) => servers.filter((s) => s.state === "up").length;
 * ```
 */
export interface ServerStats {
  /** The server's address, as given in `url`. */
  url: string;
  /**
   * `"up"` with at least one socket open, `"ejected"` while left out after
   * failing again and again, else `"down"` (reconnecting, or given up).
   */
  state: "up" | "down" | "ejected";
  /** Its sockets open and handshaken. */
  openConnections: number;
  /** Calls on its sockets whose last frame has not arrived. */
  callsOnTheWire: number;
  /** Failed connection attempts in a row (since it was last up or ejected). */
  failures: number;
  /** Calls re-sent elsewhere after its sockets closed under them, since the client was made. */
  resentCalls: number;
  /** Retries of calls that failed on it that the retry budget withheld. */
  retriesWithheld: number;
}
