/**
 * `RealmWebSocketClient`: the public façade. It checks what the caller
 * passes, then hands the work to the modules that own it: the state machine
 * (`lifecycle.ts`), the sockets (`pool.ts`), the calls (`calls.ts`) and the
 * routing between them (`dispatch.ts`).
 *
 * @module
 */

import { watchBrowser } from "./browser.ts";
import { type Call, type CallEnd, CallRegistry, type CallSpec } from "./calls.ts";
import { cancelledConnect, type Connection } from "./connection.ts";
import { Dispatcher, withRequest } from "./dispatch.ts";
import { RealmError } from "./errors.ts";
import { type ConnectionState, Lifecycle, type SocketSummary } from "./lifecycle.ts";
import { FATAL, Pool, type Server, type Slot } from "./pool.ts";
import { encodeParams, type RealmFunction } from "./protocol.ts";
import { traceCall, traceConnection } from "./telemetry.ts";
import { TokenStream } from "./token_stream.ts";
import type {
  CallOptions,
  GenerationOptions,
  GenerationResult,
  HealthStatus,
  PipelineInput,
  RealmClientOptions,
  RealmEventMap,
  RuntimeMetadata,
} from "./types.ts";
import {
  checkCallOptions,
  generationParams,
  pipelineParams,
  type ResolvedOptions,
  resolveOptions,
} from "./validate.ts";
import { resolveWebSocket, type WebSocketSource } from "./websocket.ts";

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
}

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
  readonly #lifecycle: Lifecycle;
  readonly #pool: Pool;
  readonly #dispatcher: Dispatcher;
  readonly #listeners = new Map<string, Map<(payload: never) => void, EventListener>>();
  readonly #guards = new WeakMap<object, Guards>();
  #tenantId: string;
  #serverVersion: string | undefined;
  #webSocketSource: WebSocketSource | undefined;
  /** The running `connect()` of this run, shared by concurrent callers. */
  #connecting: Promise<void> | undefined;
  /** `connect()`/`reconnect()` callers waiting for a socket while reconnecting. */
  #openWaiters: {
    resolve: () => void;
    reject: (error: RealmError) => void;
    promise: Promise<void>;
  }[] = [];
  /** Removes the browser's network and page listeners. */
  #unwatchBrowser: (() => void) | undefined;
  /** Sockets are being closed on purpose (disconnect, failed connect): none reconnects. */
  #halting = false;
  /** Sockets are being dropped by `reconnect()`: they reconnect at once, even with `reconnect` off. */
  #reconnectingNow = false;
  /**
   * Events not dispatched yet, oldest first. Events go out one at a time in
   * the order they happened, even when a listener calls back into the
   * client; a teardown holds them back until it is done.
   */
  readonly #events: CustomEvent[] = [];
  #dispatching = false;
  #holding = false;
  /** Made once: every call's end goes to the dispatcher. */
  readonly #callEnded = (call: Call, end: CallEnd) => this.#dispatcher.ended(call, end);

  /**
   * Creates a client; nothing is opened until {@linkcode RealmWebSocketClient.connect}.
   *
   * @param options See {@linkcode RealmClientOptions}; `model` is required.
   * @throws {RealmError} `INVALID_OPTIONS` naming the bad option.
   */
  constructor(options: RealmClientOptions) {
    super();
    this.#options = resolveOptions(options);
    this.#tenantId = this.#options.tenantId ?? randomTenantId();
    this.#lifecycle = new Lifecycle((change) => this.#emit("statechange", change));
    this.#pool = new Pool(this.#options, {
      opened: (slot) => this.#onOpened(slot),
      accept: (slot, connection) => this.#accept(slot, connection),
      frame: (connection, frame) => this.#dispatcher.frame(connection, frame),
      closed: (slot, connection, code, reason) => this.#onClosed(slot, connection, code, reason),
      reconnecting: (slot, attempt, delay) => {
        this.#log("reconnecting", { attempt, delayMs: delay, socket: slot.index });
        this.#emit("reconnecting", { attempt, delay, ...where(slot) });
      },
      connecting: (slot, attempt) => this.#emit("connecting", { attempt, ...where(slot) }),
      attemptFailed: (slot, error) => {
        this.#log("reconnect failed", { socket: slot.index, error: error.message });
        if (this.#pool.openCount === 0) this.#rejectWaiters(error);
      },
      gaveUp: (slot, error) => this.#onGaveUp(error, slot.server.url),
      tenantId: () => this.#tenantId,
      log: (message, data) => this.#log(message, data),
    });
    this.#dispatcher = new Dispatcher(this.#calls, {
      pick: () => this.#pool.leastBusy(),
      mayWait: () => this.#lifecycle.running,
      maxQueuedCalls: this.#options.maxQueuedCalls,
      report: (error) => this.#emit("error", error),
      dropSocket: (connection) => {
        const slot = this.#pool.slots.find((candidate) => candidate.connection === connection);
        if (slot) this.#pool.drop(slot, 1006, "send failed");
      },
      log: (message, data) => this.#log(message, data),
    });
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
    return this.#lifecycle.state;
  }

  /**
   * Opens the socket(s) and runs the handshake. On an authenticating server
   * it sends the API key and adopts the tenant the server assigns. Resolves
   * when every socket is ready. What it does depends on the state:
   * - `"idle"` or `"closed"`: starts a new connection;
   * - `"connecting"`: returns the same promise;
   * - `"reconnecting"`: tries every socket now (the backoff is reset) and
   *   settles with the first outcome: a socket open, or that attempt's error;
   * - `"open"`: reopens the sockets of a pool that gave up, else resolves.
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
    if (this.#connecting) return this.#connecting;
    switch (this.#lifecycle.state) {
      case "idle":
      case "closed":
        return this.#startRun();
      case "reconnecting": {
        const open = this.#whenOpen();
        this.#pool.retryNow();
        return open;
      }
      default: {
        // Sockets of a pool that gave up (the others still up) are reopened now.
        const down = this.#pool.slots.filter((slot) => !slot.connection?.open && !slot.retrying);
        for (const slot of down) slot.attempts = 0;
        return Promise.all(down.map((slot) => this.#pool.open(slot))).then(() => {});
      }
    }
  }

  /**
   * Drops the sockets and reconnects now, with the backoff reset: what to
   * call after a network change. Calls in flight fail with
   * `CONNECTION_CLOSED` (`sent: true`; `health`/`metadata` are resent once),
   * queued calls wait for the new sockets. Resolves once a socket is open
   * again; from `"idle"` or `"closed"` it is {@linkcode RealmWebSocketClient.connect}.
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
    if (this.#connecting) return this.#connecting;
    const state = this.#lifecycle.state;
    if (state === "idle" || state === "closed") return this.connect();
    const open = this.#whenOpen();
    this.#pool.retryNow();
    this.#reconnectingNow = true;
    try {
      for (const slot of this.#pool.slots) {
        if (slot.connection) this.#pool.drop(slot, 1000, "client reconnect");
        else if (!slot.retrying && this.#lifecycle.running) void this.#pool.reconnect(slot, true);
      }
    } finally {
      this.#reconnectingNow = false;
    }
    return open;
  }

  /**
   * Closes every socket, stops reconnecting and settles every call the
   * client holds: calls in flight and waiting ones reject with
   * `CONNECTION_CLOSED`, a pending `connect()` with `ABORTED`. The state is
   * `"idle"` at once; the returned promise resolves once the sockets have
   * closed (awaiting it is optional) and never rejects.
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
    const error = new RealmError(
      "CONNECTION_CLOSED",
      "disconnect() was called before the call finished.",
      { sent: false },
    );
    this.#unwatchBrowser?.();
    this.#unwatchBrowser = undefined;
    // A connect() cancelled on purpose is no unhandled rejection if nobody awaits it.
    this.#connecting?.catch(() => {});
    this.#connecting = undefined;
    for (const waiter of this.#openWaiters) waiter.promise.catch(() => {});
    return this.#holdingEvents(() => {
      const closed = this.#halt();
      for (const call of this.#calls.pending()) call.fail(withRequest(error, call));
      this.#rejectWaiters(cancelledConnect());
      this.#lifecycle.stop();
      return closed;
    });
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
    return this.#pool.openCount > 0;
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
    return this.#tenantId;
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
    return this.#serverVersion;
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
    return this.#webSocketSource;
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
    const pool = this.#pool;
    const servers = pool.servers.map((server): ServerStats => ({
      url: server.url,
      state: pool.serverState(server),
      openConnections: 0,
      callsOnTheWire: 0,
      failures: server.failures,
    }));
    for (const slot of pool.slots) {
      const connection = slot.connection;
      if (!connection?.open) continue;
      connection.forgetAbandoned();
      const server = servers[pool.servers.indexOf(slot.server)];
      server.openConnections++;
      server.callsOnTheWire += connection.inFlight.size;
    }
    const stats: ClientStats = {
      pendingCalls: this.#calls.size,
      queuedCalls: this.#dispatcher.queue.length,
      openConnections: pool.openCount,
      callsOnTheWire: servers.reduce((sum, server) => sum + server.callsOnTheWire, 0),
      listeners,
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
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
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
          this.#log(`a "${type}" listener threw; the client went on`, { error: String(error) });
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
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void {
    if (listener === null) return;
    const guarded = this.#guards.get(listener)?.get(guardKey(type, options));
    if (guarded) super.removeEventListener(type, guarded, options);
  }

  #emit<K extends keyof RealmEventMap>(type: K, detail: RealmEventMap[K]): void {
    if (type !== "error") {
      traceConnection(type, detail, (detail as { url?: string }).url ?? this.#options.urls[0]);
    }
    this.#events.push(new CustomEvent(type, { detail }));
    if (!this.#dispatching && !this.#holding) this.#dispatchEvents();
  }

  #dispatchEvents(): void {
    this.#dispatching = true;
    try {
      let event: CustomEvent | undefined;
      while ((event = this.#events.shift()) !== undefined) this.dispatchEvent(event);
    } finally {
      this.#dispatching = false;
    }
  }

  /**
   * Runs a teardown with its events held back, then dispatches them: a
   * listener that calls `connect()` or `disconnect()` meets the client in its
   * end state, never half torn down.
   */
  #holdingEvents<T>(teardown: () => T): T {
    if (this.#holding || this.#dispatching) return teardown();
    this.#holding = true;
    try {
      return teardown();
    } finally {
      this.#holding = false;
      this.#dispatchEvents();
    }
  }

  #log(message: string, data?: Record<string, unknown>): void {
    try {
      this.#options.logger?.(message, data);
    } catch {
      // A logger that throws must not stop the client; there is nowhere left to report it.
    }
  }

  // -- connecting and reconnecting --------------------------------------------------------------

  #startRun(): Promise<void> {
    const run = this.#lifecycle.start();
    for (const slot of this.#pool.slots) slot.attempts = 0;
    this.#unwatchBrowser ??= watchBrowser({
      offline: () => {
        for (const slot of this.#pool.slots) this.#pool.drop(slot, 1001, "browser offline");
      },
      online: () => this.#pool.retryNow(),
      wake: () => {
        for (const connection of this.#pool.connections()) connection.probe();
        this.#pool.retryNow();
      },
    });
    const connecting: Promise<void> = this.#openAll(run).then(
      () => {
        if (this.#connecting === connecting) this.#connecting = undefined;
      },
      (error) => {
        if (this.#connecting === connecting) this.#connecting = undefined;
        throw error;
      },
    );
    return this.#connecting = connecting;
  }

  /** Opens every socket of a new run; on any failure closes them all and gives up. */
  async #openAll(run: number): Promise<void> {
    let failure: unknown;
    try {
      if (!this.#pool.WebSocket) {
        const { WebSocket, source } = await resolveWebSocket(this.#options.WebSocket);
        this.#pool.WebSocket = WebSocket;
        this.#webSocketSource = source;
      }
      if (run !== this.#lifecycle.run) throw cancelledConnect();
      this.#emit("connecting", { attempt: 0 });
      if (run !== this.#lifecycle.run) throw cancelledConnect();
      const results = await Promise.allSettled(
        this.#pool.slots.map((slot) => this.#pool.open(slot)),
      );
      failure = results.find((r) => r.status === "rejected")?.reason;
      if (failure !== undefined && run === this.#lifecycle.run && this.#pool.servers.length > 1) {
        failure = this.#spareUnreachable(results);
      }
    } catch (error) {
      failure = error;
    }
    if (run !== this.#lifecycle.run) throw cancelledConnect();
    if (failure === undefined) {
      const dropped = new RealmError(
        "CONNECTION_CLOSED",
        "The connection closed while connect() was opening the others, and `reconnect` is off. " +
          "Call connect() again.",
        { sent: false },
      );
      // A socket that dropped meanwhile with `reconnect` off may have left none.
      const sockets = this.#sockets();
      if (sockets.open === 0 && sockets.retrying === 0) this.#dispatcher.failQueued(dropped);
      return this.#lifecycle.started(sockets, dropped);
    }
    const error = failure instanceof RealmError ? failure : cancelledConnect();
    // Leave nothing half-open, and settle what waited, before anyone hears of the failure.
    await this.#holdingEvents(() => {
      const closed = this.#halt("connect failed");
      this.#dispatcher.failQueued(error);
      this.#lifecycle.giveUp(error);
      return closed;
    });
    throw error;
  }

  /**
   * With a list of servers, `connect()` fails only if no server can be
   * reached: a server that cannot is reported, and its sockets (and any other
   * socket that failed) keep trying in the background. Returns the failure
   * when there is no server to use.
   */
  #spareUnreachable(results: PromiseSettledResult<void>[]): unknown {
    const slots = this.#pool.slots;
    const reached = new Set(
      slots.filter((_, i) => results[i].status === "fulfilled").map((slot) => slot.server),
    );
    if (reached.size === 0) {
      return (results.find((r) => r.status === "rejected") as PromiseRejectedResult).reason;
    }
    const reported = new Set<Server>();
    results.forEach((result, i) => {
      if (result.status === "fulfilled") return;
      const slot = slots[i];
      const error = result.reason instanceof RealmError ? result.reason : cancelledConnect();
      const retry = this.#options.reconnect && !FATAL.has(error.code);
      if (!reached.has(slot.server) && !reported.has(slot.server)) {
        reported.add(slot.server);
        this.#emit(
          "error",
          new RealmError(
            error.code,
            `The server at ${slot.server.url} could not be used: ${error.message}` +
              (retry ? " It is retried in the background." : ""),
            { details: { url: slot.server.url }, cause: error },
          ),
        );
      }
      if (retry) void this.#pool.reconnect(slot);
    });
    return undefined;
  }

  /** Closes every socket on purpose: none reconnects, their calls fail as sent. */
  #halt(reason = "client disconnect"): Promise<void> {
    this.#halting = true;
    try {
      return this.#pool.closeAll(1000, reason);
    } finally {
      this.#halting = false;
    }
  }

  /** Resolves when a socket opens; rejects when an attempt fails with none open, or on a stop. */
  #whenOpen(): Promise<void> {
    let resolve!: () => void, reject!: (error: RealmError) => void;
    const promise = new Promise<void>((yes, no) => {
      resolve = yes;
      reject = no;
    });
    this.#openWaiters.push({ resolve, reject, promise });
    return promise;
  }

  #rejectWaiters(error: RealmError): void {
    for (const waiter of this.#openWaiters.splice(0)) waiter.reject(error);
  }

  #sockets(): SocketSummary {
    return { open: this.#pool.openCount, retrying: this.#pool.retryingCount };
  }

  /**
   * Every call carries one tenant: a server that assigns another one than
   * the open sockets use is not used.
   */
  #accept(slot: Slot, connection: Connection): RealmError | undefined {
    if (connection.tenantId === this.#tenantId || this.#pool.openCount === 0) return undefined;
    return new RealmError(
      "TENANT_MISMATCH",
      `The server at ${slot.server.url} assigned the tenant ${connection.tenantId}, but the ` +
        `client's other servers use ${this.#tenantId}, and every call carries one tenant. ` +
        "It is not used: give every server the same key-to-tenant map.",
      { details: { url: slot.server.url } },
    );
  }

  #onOpened(slot: Slot): void {
    const connection = slot.connection!;
    this.#tenantId = connection.tenantId;
    this.#serverVersion = connection.serverVersion;
    this.#lifecycle.update(this.#sockets());
    if (!connection.open) return; // a statechange listener disconnected
    this.#emit("connected", {
      tenantId: connection.tenantId,
      version: connection.serverVersion,
      ...where(slot),
    });
    if (!connection.open) return;
    for (const waiter of this.#openWaiters.splice(0)) waiter.resolve();
    this.#dispatcher.flush();
  }

  #onClosed(slot: Slot, connection: Connection, code: number, reason: string): void {
    const running = this.#lifecycle.running && !this.#halting;
    const now = this.#reconnectingNow;
    const willReconnect = running && (this.#options.reconnect || now);
    this.#dispatcher.socketClosed(connection, code, willReconnect);
    if (willReconnect) void this.#pool.reconnect(slot, now);
    this.#log("disconnected", { code, reason, willReconnect, socket: slot.index });
    if (running) {
      this.#settleState(
        new RealmError(
          "CONNECTION_CLOSED",
          `The connection closed (code ${code}) and \`reconnect\` is off. Call connect() again.`,
          { sent: false },
        ),
      );
    }
    this.#emit("disconnected", { code, reason, willReconnect, ...where(slot) });
    // Other sockets of a pool take over what waits.
    if (this.#lifecycle.running) this.#dispatcher.flush();
  }

  /** A socket stopped reconnecting; the client gives up when no socket is left or coming. */
  #onGaveUp(error: RealmError, url: string): void {
    traceConnection("gave_up", { "error.type": error.code, error }, url);
    this.#emit("error", error);
    this.#settleState(error);
  }

  /** After a socket closed or gave up: the state from the sockets, and giving up if none is left. */
  #settleState(reason: RealmError): void {
    if (!this.#lifecycle.running || this.#lifecycle.starting) return;
    const sockets = this.#sockets();
    if (sockets.open === 0 && sockets.retrying === 0) {
      this.#dispatcher.failQueued(reason);
      this.#rejectWaiters(reason);
    }
    this.#lifecycle.update(sockets, reason);
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
        `The ${fn} call's parameters cannot be sent as JSON (${encoded.problem}). Pass only ` +
          "strings, finite numbers, booleans, null, arrays and plain objects, without cycles.",
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
    };
    const call = this.#calls.create(spec, this.#callEnded);
    const traced = traceCall(call, params, this.#tenantId, this.#options.urls[0]);
    this.#dispatcher.dispatch(call, call.startedAt);
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

/** Which socket and server an event is about. */
function where(slot: Slot): { socket: number; url: string } {
  return { socket: slot.index, url: slot.server.url };
}

/** Listeners are told apart by type and capture, as `EventTarget` does. */
function guardKey(type: string, options: boolean | EventListenerOptions | undefined): string {
  const capture = typeof options === "boolean" ? options : options?.capture === true;
  return `${capture ? "c" : "b"}:${type}`;
}

/**
 * A random UUID v4. `crypto.randomUUID` exists only in secure contexts in
 * browsers (not on a plain-http page), `getRandomValues` everywhere.
 */
function randomTenantId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
    hex.slice(20)
  }`;
}

/**
 * The result of a generation, with the call's id and timings. A stream's
 * `complete` frame carries only the token count, so its text is the joined tokens.
 */
function toGenerationResult(data: unknown, call: Call, streamed?: string[]): GenerationResult {
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
