/**
 * `RealmWebSocketClient`: the public façade. It checks what the caller
 * passes, then hands the work to the modules that own it: the state machine
 * (`lifecycle.ts`), the sockets (`pool.ts`), the calls (`calls.ts`) and the
 * routing between them (`dispatch.ts`).
 *
 * @module
 */

import {
  type Call,
  type CallEnd,
  CallRegistry,
  type CallSpec,
  toGenerationResult,
} from "./calls.ts";
import { Connector } from "./connector.ts";
import { RealmError } from "./errors.ts";
import type { ConnectionState } from "./lifecycle.ts";
import { encodeParams, type RealmFunction } from "./protocol.ts";
import { traceCall } from "./telemetry.ts";
import { TokenStream } from "./token_stream.ts";
import type {
  CallOptions,
  ClientStats,
  GenerationOptions,
  GenerationResult,
  HealthStatus,
  PipelineInput,
  RealmClientOptions,
  RealmEventMap,
  RuntimeMetadata,
  ServerStats,
} from "./types.ts";
import {
  checkCallOptions,
  generationParams,
  pipelineParams,
  randomTenantId,
  type ResolvedOptions,
  resolveOptions,
} from "./validate.ts";
import type { WebSocketSource } from "./websocket.ts";

/** A listener of the caller's, and the guard that keeps its exceptions in. */
type Guards = Map<string, EventListener>;

/**
 * A client of the Realm inference server over one WebSocket (or a few, with
 * `connections`). It is an `EventTarget`: `on()`/`off()` hand callbacks the
 * event's payload, `addEventListener()` receives a `CustomEvent` whose
 * `detail` is that payload. It prints nothing by itself, and an exception
 * thrown by a listener goes to the `logger` instead of the runtime.
 *
 * @example Connect, generate, stream
 * ```ts
 * import { RealmWebSocketClient } from "@realm-ai/ws-client";
 * import { startStubServer } from "@realm-ai/ws-client/testing";
 *
 * const server = await startStubServer({ tokenDelayMs: 0 });
 * const client = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b" });
 * await client.connect();
 * const { text } = await client.generate({ prompt: "What is the capital of France?" });
 * // text: "Paris" (the stub's answer to this prompt)
 * let story = "";
 * for await (const token of client.generateStream({ prompt: "Hi", max_tokens: 5 })) {
 *   story += token;
 * }
 * await client.disconnect();
 * await server.close();
 * ```
 */
export class RealmWebSocketClient extends EventTarget {
  readonly #options: ResolvedOptions;
  readonly #calls = new CallRegistry();
  /** The run: connecting, reconnecting, disconnecting, and the events that tell of them. */
  readonly #connector: Connector;
  readonly #listeners = new Map<string, Map<(payload: never) => void, EventListener>>();
  readonly #guards = new WeakMap<object, Guards>();
  /** Made once: every call's end goes to the dispatcher. */
  readonly #callEnded = (call: Call, end: CallEnd) => this.#connector.dispatcher.ended(call, end);

  /**
   * Creates a client; nothing is opened until {@linkcode RealmWebSocketClient.connect}.
   *
   * @param options See {@linkcode RealmClientOptions}; `model` is required.
   * @throws {RealmError} `INVALID_OPTIONS` naming the bad option.
   */
  constructor(options: RealmClientOptions) {
    super();
    this.#options = resolveOptions(options);
    this.#connector = new Connector(
      this.#options,
      this.#calls,
      this.#options.tenantId ?? randomTenantId(),
      {
        dispatch: (event) => this.dispatchEvent(event),
        log: (message, data) => this.#log(message, data),
      },
    );
  }

  /**
   * The connection state: `"idle"`, `"connecting"`, `"open"`,
   * `"reconnecting"` or `"closed"`; every change fires `statechange`.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * const ready = (client: RealmWebSocketClient) => client.state === "open";
   * ```
   */
  get state(): ConnectionState {
    return this.#connector.state;
  }

  /**
   * Opens the socket(s) and runs the handshake. On an authenticating server
   * it sends the API key and adopts the tenant the server assigns. Resolves
   * once a socket is open and every socket's first attempt has its outcome; a
   * socket that failed keeps trying in the background (with `reconnect` on),
   * and with a list of servers one that cannot be reached is reported as an
   * `error` event. What it does depends on the state:
   * - `"idle"` or `"closed"`: starts a new connection;
   * - `"connecting"`: returns the same promise;
   * - `"reconnecting"`: every socket tries now (backoff reset, ejections
   *   ended); resolves when one is open, rejects once each has failed;
   * - `"open"`: resolves at once; sockets that are down are reopened now.
   *
   * Called from a listener, it runs once the step that fired the event is
   * complete.
   *
   * @throws {RealmError} `UNAUTHORIZED` (key refused or missing), `TIMEOUT`
   * (no handshake within `connectTimeout`), `CONNECTION_CLOSED` (no server),
   * `PROTOCOL_ERROR` (not a Realm server), `ABORTED` (`disconnect()` was
   * called meanwhile).
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * async function start(client: RealmWebSocketClient) {
   *   client.on("connected", ({ tenantId }) => console.log("tenant", tenantId));
   *   await client.connect();
   * }
   * ```
   */
  connect(): Promise<void> {
    return this.#connector.connect();
  }

  /**
   * Drops the sockets and reconnects now, with the backoff reset and
   * ejections ended: what to call after a network change. Calls in flight
   * fail with `CONNECTION_CLOSED` (`sent: true`; `health`/`metadata` are
   * resent once), queued calls wait for the new sockets. Resolves once a
   * socket is open again, rejects once every socket's attempt has failed;
   * from `"idle"` or `"closed"` it is {@linkcode RealmWebSocketClient.connect}.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * async function networkChanged(client: RealmWebSocketClient) {
   *   await client.reconnect();
   * }
   * ```
   */
  reconnect(): Promise<void> {
    return this.#connector.reconnect();
  }

  /**
   * Closes every socket, stops reconnecting and settles every call the
   * client holds: calls in flight and waiting ones reject with
   * `CONNECTION_CLOSED`, a pending `connect()` with `ABORTED`. The state is
   * `"idle"` at once (from a listener: once the step that fired the event is
   * complete); the returned promise resolves once the sockets have closed
   * (awaiting it is optional) and never rejects.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * async function stop(client: RealmWebSocketClient) {
   *   await client.disconnect(); // or just client.disconnect()
   * }
   * ```
   */
  disconnect(): Promise<void> {
    return this.#connector.disconnect();
  }

  /**
   * Whether at least one socket is open and handshaken.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * const ready = (client: RealmWebSocketClient) => client.isConnected();
   * ```
   */
  isConnected(): boolean {
    return this.#connector.openCount > 0;
  }

  /**
   * The tenant id every call carries: the server's after authentication,
   * else the `tenantId` option, else a random UUID.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * const tenant = (client: RealmWebSocketClient) => client.getTenantId();
   * ```
   */
  getTenantId(): string {
    return this.#connector.tenantId;
  }

  /**
   * The `model` option: the model every `generate` uses unless the call names
   * another.
   *
   * @example
   * ```ts
   * import { RealmWebSocketClient } from "@realm-ai/ws-client";
   * const client = new RealmWebSocketClient({ model: "llama-2-7b" });
   * const model: string = client.getModel(); // "llama-2-7b"
   * ```
   */
  getModel(): string {
    return this.#options.model;
  }

  /**
   * The server's version from its welcome frame, once connected.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * const version = (client: RealmWebSocketClient) => client.getServerVersion() ?? "unknown";
   * ```
   */
  getServerVersion(): string | undefined {
    return this.#connector.serverVersion;
  }

  /**
   * Where the `WebSocket` implementation came from, once `connect()` has
   * picked it (`undefined` before): the `WebSocket` option, the runtime's
   * global, or the fallback (`ws` in the npm package on Node versions
   * without a global `WebSocket`).
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * const usesWs = (client: RealmWebSocketClient) => client.getWebSocketSource() === "fallback";
   * ```
   */
  getWebSocketSource(): WebSocketSource | undefined {
    return this.#connector.webSocketSource;
  }

  /**
   * Counts of pending calls, queued calls, sockets and listeners.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * const idle = (client: RealmWebSocketClient) => client.stats().pendingCalls === 0;
   * ```
   */
  stats(): ClientStats {
    let listeners = 0;
    for (const byType of this.#listeners.values()) listeners += byType.size;
    const servers: ServerStats[] = this.#connector.servers();
    const stats: ClientStats = {
      pendingCalls: this.#calls.size,
      queuedCalls: this.#connector.dispatcher.queued,
      openConnections: this.#connector.openCount,
      callsOnTheWire: servers.reduce((sum, server) => sum + server.callsOnTheWire, 0),
      listeners,
      resentCalls: 0,
      retriesWithheld: 0,
      ...this.#connector.dispatcher.counts.get(""),
    };
    if (this.#options.serverList) stats.servers = servers;
    return stats;
  }

  /**
   * Generates text. Without `stream` the server answers in one frame; with
   * `stream: true` the tokens are joined (and handed to `onToken` as they
   * arrive) and `text` is the whole answer.
   *
   * @throws {RealmError} `INVALID_PARAMS` before sending; server codes; `TIMEOUT`, `ABORTED`,
   * `CONNECTION_CLOSED`, `NOT_CONNECTED`.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * async function ask(client: RealmWebSocketClient) {
   *   const whole = await client.generate({ prompt: "What is the capital of France?" });
   *   const joined = await client.generate({
   *     prompt: "Tell me a story",
   *     stream: true,
   *     onToken: (token) => console.log(token),
   *   });
   *   return [whole.text, joined.text];
   * }
   * ```
   */
  async generate(options: GenerationOptions, opts?: CallOptions): Promise<GenerationResult> {
    const stream = options?.stream === true;
    const params = generationParams(options, this.#options.model, stream);
    const parts: string[] = [];
    const onToken = options.onToken;
    const call = this.#start(
      "generate",
      params,
      stream,
      opts,
      stream
        ? (token) => {
          parts.push(token);
          onToken?.(token);
        }
        : undefined,
    );
    return toGenerationResult(await call.result, call, stream ? parts : undefined);
  }

  /**
   * Streams the tokens of a generation as they arrive. Iterate it with
   * `for await`, or pipe `stream.readable`. A `break` stops listening; the
   * call is sent on the first read. `options.stream` is ignored.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * async function story(client: RealmWebSocketClient) {
   *   for await (const token of client.generateStream({ prompt: "Tell me a story" })) {
   *     console.log(token);
   *   }
   * }
   * ```
   */
  generateStream(options: GenerationOptions, opts?: CallOptions): TokenStream {
    return new TokenStream((sink) => {
      const params = generationParams(options, this.#options.model, true);
      const call = this.#start("generate", params, true, opts, (token) => sink.token(token));
      sink.requestId = call.id;
      call.result.then((data) => sink.close(toGenerationResult(data, call)), sink.error);
      return () => call.abandon();
    });
  }

  /**
   * Runs a pipeline on the server and resolves to its output.
   *
   * @throws {RealmError} `DISPATCH_ERROR` "Pipeline not found: …" or
   * "Orchestrator not available"; `INVALID_PARAMS` for a bad name or input.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * async function rag(client: RealmWebSocketClient) {
   *   return await client.executePipeline("rag-pipeline", { query: "What is ML?" });
   * }
   * ```
   */
  executePipeline(
    pipelineName: string,
    input: PipelineInput,
    opts?: CallOptions,
  ): Promise<unknown> {
    return this.#call("pipeline", () => pipelineParams(pipelineName, input), opts);
  }

  /**
   * Checks the server's health: the cheapest round trip.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * async function healthy(client: RealmWebSocketClient) {
   *   return (await client.health({ timeout: 2_000 })).status === "healthy";
   * }
   * ```
   */
  health(opts?: CallOptions): Promise<HealthStatus> {
    return this.#call("health", noParams, opts) as Promise<HealthStatus>;
  }

  /**
   * The server's functions and their parameters.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * async function streamingFunctions(client: RealmWebSocketClient) {
   *   const { functions } = await client.metadata();
   *   return functions.filter((f) => f.streaming).map((f) => f.name);
   * }
   * ```
   */
  metadata(opts?: CallOptions): Promise<RuntimeMetadata> {
    return this.#call("metadata", noParams, opts) as Promise<RuntimeMetadata>;
  }

  /**
   * Adds a listener that receives the event's payload (the error itself for
   * `error`).
   *
   * @typeParam K The event's name: a key of {@linkcode RealmEventMap}.
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * function watch(client: RealmWebSocketClient) {
   *   client.on("disconnected", ({ code }) => console.log("closed", code));
   *   client.on("error", (error) => console.log(error.code));
   * }
   * ```
   */
  on<K extends keyof RealmEventMap>(type: K, callback: (payload: RealmEventMap[K]) => void): this {
    let byType = this.#listeners.get(type);
    if (!byType) this.#listeners.set(type, byType = new Map());
    if (byType.has(callback)) return this;
    const listener: EventListener = (event) =>
      callback((event as CustomEvent<RealmEventMap[K]>).detail);
    byType.set(callback, listener);
    this.addEventListener(type, listener);
    return this;
  }

  /**
   * Adds a listener for `error` events, as the earlier client's `onError` did:
   * the same as `on("error", callback)`, and `off("error", callback)` removes
   * it. Calls' own failures reject their promises instead.
   *
   * @example
   * ```ts
   * import { type RealmError, RealmWebSocketClient } from "@realm-ai/ws-client";
   * const client = new RealmWebSocketClient({ model: "llama-2-7b" });
   * const seen: RealmError[] = [];
   * client.onError((error) => seen.push(error));
   * ```
   */
  onError(callback: (error: RealmError) => void): void {
    this.on("error", callback);
  }

  /**
   * Removes a listener added with {@linkcode RealmWebSocketClient.on}.
   *
   * @typeParam K The event's name: a key of {@linkcode RealmEventMap}.
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * function once(client: RealmWebSocketClient) {
   *   const onConnected = () => client.off("connected", onConnected);
   *   client.on("connected", onConnected);
   * }
   * ```
   */
  off<K extends keyof RealmEventMap>(type: K, callback: (payload: RealmEventMap[K]) => void): this {
    const byType = this.#listeners.get(type);
    const listener = byType?.get(callback);
    if (listener) {
      byType!.delete(callback);
      this.removeEventListener(type, listener);
    }
    return this;
  }

  /**
   * Adds a listener. The client wraps it so that an exception it throws goes
   * to the `logger` instead of escaping into the runtime.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * function watch(client: RealmWebSocketClient) {
   *   client.addEventListener("statechange", (event) => {
   *     const { from, to } = (event as CustomEvent).detail;
   *     console.log(from, "→", to);
   *   });
   * }
   * ```
   */
  override addEventListener(
    type: string,
    // Spelt out: the DOM library's names for these types (`EventListenerOrEventListenerObject`,
    // `AddEventListenerOptions`) are unknown to a Node project without that library.
    listener: ((event: Event) => void) | { handleEvent(event: Event): void } | null,
    options?: boolean | {
      capture?: boolean;
      once?: boolean;
      passive?: boolean;
      signal?: AbortSignal;
    },
  ): void {
    if (listener === null) return;
    const key = guardKey(type, options);
    let guards = this.#guards.get(listener);
    if (!guards) this.#guards.set(listener, guards = new Map());
    let guarded = guards.get(key);
    if (!guarded) {
      guarded = (event) => {
        try {
          if (typeof listener === "function") listener.call(this, event);
          else listener.handleEvent(event);
        } catch (error) {
          this.#log(`a "${type}" listener threw`, { error: String(error) });
        }
      };
      guards.set(key, guarded);
    }
    super.addEventListener(type, guarded, options);
  }

  /**
   * Removes a listener added with {@linkcode RealmWebSocketClient.addEventListener}.
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * function watchOnce(client: RealmWebSocketClient) {
   *   const listener = () => client.removeEventListener("connected", listener);
   *   client.addEventListener("connected", listener);
   * }
   * ```
   */
  override removeEventListener(
    type: string,
    listener: ((event: Event) => void) | { handleEvent(event: Event): void } | null,
    options?: boolean | { capture?: boolean },
  ): void {
    if (listener === null) return;
    const guarded = this.#guards.get(listener)?.get(guardKey(type, options));
    if (guarded) super.removeEventListener(type, guarded, options);
  }

  #log(message: string, data?: Record<string, unknown>): void {
    try {
      this.#options.logger?.(message, data);
    } catch {
      // A logger that throws must not stop the client; there is nowhere left to report it.
    }
  }

  // -- calls ------------------------------------------------------------------------------------

  /**
   * Starts a call and waits for its outcome. Checks run inside, so bad input
   * rejects the promise (never throws synchronously) before anything is sent.
   */
  #call(
    fn: RealmFunction,
    params: () => Record<string, unknown>,
    opts: CallOptions | undefined,
  ): Promise<unknown> {
    try {
      return this.#start(fn, params(), false, opts).result;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #start(
    fn: RealmFunction,
    params: Record<string, unknown>,
    stream: boolean,
    opts: CallOptions | undefined,
    onToken?: (token: string) => void,
  ) {
    const callOptions = opts === undefined ? EMPTY : checkCallOptions(opts);
    const encoded = params === EMPTY ? NO_PARAMS : encodeParams(params);
    if ("problem" in encoded) {
      throw new RealmError(
        "INVALID_PARAMS",
        `The ${fn} call's parameters are not JSON (${encoded.problem}): pass only JSON ` +
          "values, without cycles.",
        { sent: false },
      );
    }
    const spec: CallSpec = {
      fn,
      paramsJson: encoded.json,
      stream,
      timeout: callOptions.timeout ?? this.#options.timeout,
      idleTimeout: callOptions.streamIdleTimeout ?? this.#options.streamIdleTimeout,
      maxRetries: callOptions.maxRetries ?? this.#options.maxRetries,
      signal: callOptions.signal,
      onToken,
      safeToRepeat: callOptions.safeToRepeat,
    };
    const call = this.#calls.create(spec, this.#callEnded);
    const traced = traceCall(call, params, this.#connector.tenantId, this.#options.urls[0]);
    this.#connector.dispatcher.dispatch(call, call.startedAt);
    traced?.();
    return call;
  }
}

/**
 * No call options, and the parameters of `health` and `metadata`: one empty object (and its
 * JSON) for all their calls.
 */
const EMPTY: CallOptions = {};
const NO_PARAMS = { json: "{}" };
const noParams = () => EMPTY as Record<string, unknown>;

/** Listeners are told apart by type and capture, as `EventTarget` does. */
function guardKey(type: string, options: boolean | { capture?: boolean } | undefined): string {
  const capture = typeof options === "boolean" ? options : options?.capture === true;
  return `${capture ? "c" : "b"}:${type}`;
}
