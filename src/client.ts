/**
 * `RealmWebSocketClient`: the public methods, composing the connection,
 * the calls registry and the token streams.
 *
 * @module
 */

import { reconnectDelay, retryDelay, sleep } from "./backoff.ts";
import { type Call, type CallEnd, CallRegistry, type CallSpec } from "./calls.ts";
import { type Connection, openConnection } from "./connection.ts";
import { parseRetryAfter, RealmError } from "./errors.ts";
import { encodeCall, readToken, type RealmFunction, type ServerFrame } from "./protocol.ts";
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
  WebSocketConstructor,
} from "./types.ts";
import {
  checkCallOptions,
  generationParams,
  pipelineParams,
  type ResolvedOptions,
  resolveOptions,
} from "./validate.ts";
import { resolveWebSocket, type WebSocketSource } from "./websocket.ts";

/** One socket of the client (one per `connections`), reconnecting on its own. */
interface Slot {
  index: number;
  connection?: Connection;
  /** Consecutive reconnect attempts since the last stable connection. */
  attempts: number;
  connectedAt: number;
  reconnecting: boolean;
}

/**
 * Counts of what the client holds right now. After `disconnect()` all are zero
 * but `listeners`, which counts the `on()` listeners until they are removed.
 *
 * @example
 * ```ts
 * import type { ClientStats } from "@realm-ai/ws-client";
 * const idle = (s: ClientStats) => s.pendingCalls === 0 && s.queuedCalls === 0;
 * ```
 */
export interface ClientStats {
  /** Calls without an outcome yet (queued or sent). */
  pendingCalls: number;
  /** Calls waiting for a connection. */
  queuedCalls: number;
  /** Sockets open and handshaken. */
  openConnections: number;
  /** Calls written to sockets whose last frame has not arrived (abandoned ones included). */
  callsOnTheWire: number;
  /** Event listeners added with `on()`. */
  listeners: number;
}

const IDEMPOTENT: ReadonlySet<RealmFunction> = new Set(["health", "metadata"]);

/**
 * A client of the Realm inference server over one WebSocket (or a few, with
 * `connections`). It is an `EventTarget`: `on()`/`off()` hand callbacks the
 * event's payload, `addEventListener()` receives a `CustomEvent` whose
 * `detail` is that payload. It prints nothing by itself.
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
  readonly #slots: Slot[];
  /** Calls waiting for a socket, oldest first. */
  readonly #queue: Call[] = [];
  readonly #listeners = new Map<string, Map<(payload: never) => void, EventListener>>();
  #tenantId: string;
  #serverVersion: string | undefined;
  #webSocket: { WebSocket: WebSocketConstructor; source: WebSocketSource } | undefined;
  /** Between `connect()` and `disconnect()` (or giving up): calls may wait for a socket. */
  #running = false;
  /** Aborted by `disconnect()`: cancels handshakes and reconnect waits. */
  #lifecycle = new AbortController();
  #connecting: Promise<void> | undefined;
  #openWaiters: { resolve: () => void; reject: (error: RealmError) => void }[] = [];

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
    this.#slots = Array.from(
      { length: this.#options.connections },
      (_, index) => ({ index, attempts: 0, connectedAt: 0, reconnecting: false }),
    );
  }

  /**
   * Opens the socket(s) and runs the handshake. On an authenticating server
   * it sends the API key and adopts the tenant the server assigns. Resolves
   * when every socket is ready. Calling it while connecting returns the same
   * promise; while reconnecting it resolves as soon as a socket is back; in a
   * pool it reopens the sockets that gave up reconnecting.
   *
   * @throws {RealmError} `UNAUTHORIZED` (key refused or missing), `TIMEOUT`
   * (no handshake within `connectTimeout`), `CONNECTION_CLOSED` (no server),
   * `ABORTED` (`disconnect()` was called meanwhile).
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
    if (!this.#running) {
      this.#running = true;
      this.#lifecycle = new AbortController();
      for (const slot of this.#slots) slot.attempts = 0;
      return this.#track(this.#connectAll());
    }
    // Sockets that gave up (a pool's others still up) are reopened now.
    const down = this.#slots.filter((slot) => !slot.connection?.open && !slot.reconnecting);
    if (down.length > 0) {
      const signal = this.#lifecycle.signal;
      for (const slot of down) slot.attempts = 0;
      return this.#track(
        Promise.all(down.map((slot) => this.#openSlot(slot, signal))).then(() => {}),
      );
    }
    if (this.isConnected()) return Promise.resolve();
    return new Promise((resolve, reject) => this.#openWaiters.push({ resolve, reject }));
  }

  /** Remembers a connect attempt so that concurrent `connect()` calls share it. */
  #track(attempt: Promise<void>): Promise<void> {
    const tracked = attempt.finally(() => {
      this.#connecting = undefined;
    });
    this.#connecting = tracked;
    return tracked;
  }

  async #connectAll(): Promise<void> {
    const signal = this.#lifecycle.signal;
    try {
      this.#webSocket ??= await resolveWebSocket(this.#options.WebSocket);
      if (signal.aborted) throw cancelledConnect();
      this.#emit("connecting", { attempt: 0 });
      const results = await Promise.allSettled(
        this.#slots.map((slot) => this.#openSlot(slot, signal)),
      );
      const failure = results.find((r) => r.status === "rejected");
      if (failure) throw (failure as PromiseRejectedResult).reason;
    } catch (error) {
      const realmError = error instanceof RealmError ? error : cancelledConnect();
      if (this.#lifecycle.signal === signal && this.#running) {
        // Leave nothing half-open: close the sockets that did open.
        this.#stop(realmError);
        await Promise.all(
          this.#slots.map((slot) => slot.connection?.close(1000, "connect failed")),
        );
      }
      throw realmError;
    }
  }

  /** Opens one slot's socket and puts it to work. */
  async #openSlot(slot: Slot, signal: AbortSignal): Promise<void> {
    const options = this.#options;
    const connection = await openConnection(
      {
        url: options.url,
        WebSocket: this.#webSocket!.WebSocket,
        apiKey: options.apiKey,
        tenantId: this.#tenantId,
        connectTimeout: options.connectTimeout,
        heartbeatInterval: options.heartbeatInterval,
        heartbeatTimeout: options.heartbeatTimeout,
        abandonedCallTtl: options.streamIdleTimeout,
        signal,
        log: options.logger,
      },
      {
        frame: (conn, frame) => this.#onFrame(conn, frame),
        closed: (conn, code, reason) => this.#onClosed(slot, conn, code, reason),
      },
    );
    if (signal.aborted) {
      await connection.close(1000, "disconnected");
      throw cancelledConnect();
    }
    slot.connection = connection;
    slot.connectedAt = performance.now();
    this.#tenantId = connection.tenantId;
    this.#serverVersion = connection.serverVersion;
    this.#emit("connected", {
      tenantId: connection.tenantId,
      version: connection.serverVersion,
      socket: slot.index,
    });
    for (const waiter of this.#openWaiters.splice(0)) waiter.resolve();
    this.#flushQueue();
  }

  /**
   * Closes every socket and stops reconnecting. Calls still waiting reject
   * with `CONNECTION_CLOSED`. The returned promise resolves once the sockets
   * have closed (awaiting it is optional) and never rejects.
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
    // Stop first, so the close handlers below see a client that must not reconnect.
    this.#stop(
      new RealmError("CONNECTION_CLOSED", "disconnect() was called before the call finished.", {
        sent: false,
      }),
    );
    const closing = this.#slots.map((slot) => slot.connection?.close(1000, "client disconnect"));
    return Promise.all(closing).then(() => {});
  }

  /** Ends the running state: cancels waits and rejects every waiting call. */
  #stop(reason: RealmError): void {
    this.#running = false;
    this.#lifecycle.abort(reason);
    for (const call of this.#queue.splice(0)) call.fail(withSent(reason, false, call.id));
    for (const waiter of this.#openWaiters.splice(0)) waiter.reject(reason);
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
    return this.#slots.some((slot) => slot.connection?.open === true);
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
   * Where the `WebSocket` implementation came from, once connected: the
   * `WebSocket` option, the runtime's global, or the fallback (`ws` in the
   * npm package on Node versions without a global `WebSocket`).
   *
   * @example
   * ```ts
   * import type { RealmWebSocketClient } from "@realm-ai/ws-client";
   * const usesWs = (client: RealmWebSocketClient) => client.getWebSocketSource() === "fallback";
   * ```
   */
  getWebSocketSource(): WebSocketSource | undefined {
    return this.#webSocket?.source;
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
    let onTheWire = 0;
    for (const slot of this.#slots) onTheWire += slot.connection?.inFlight.size ?? 0;
    return {
      pendingCalls: this.#calls.size,
      queuedCalls: this.#queue.length,
      openConnections: this.#slots.filter((slot) => slot.connection?.open).length,
      callsOnTheWire: onTheWire,
      listeners,
    };
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
    if (!stream) {
      const data = await this.#call("generate", () => params, false, opts);
      return toGenerationResult(data);
    }
    const parts: string[] = [];
    const onToken = options.onToken;
    const data = await this.#call("generate", () => params, true, opts, (token) => {
      parts.push(token);
      onToken?.(token);
    });
    return toGenerationResult(data, parts);
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
      call.result.then(() => sink.close(), (error) => sink.error(error));
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
    return this.#call("pipeline", () => pipelineParams(pipelineName, input), false, opts);
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
    return this.#call("health", () => ({}), false, opts) as Promise<HealthStatus>;
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
    return this.#call("metadata", () => ({}), false, opts) as Promise<RuntimeMetadata>;
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

  #emit<K extends keyof RealmEventMap>(type: K, detail: RealmEventMap[K]): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #log(message: string, data?: Record<string, unknown>): void {
    this.#options.logger?.(message, data);
  }

  /**
   * Starts a call and waits for its outcome. Checks run inside, so bad input
   * rejects the promise (never throws synchronously) before anything is sent.
   */
  #call(
    fn: RealmFunction,
    params: () => Record<string, unknown>,
    stream: boolean,
    opts: CallOptions | undefined,
    onToken?: (token: string) => void,
  ): Promise<unknown> {
    try {
      return this.#start(fn, params(), stream, opts, onToken).result;
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
  ): Call {
    const callOptions = checkCallOptions(opts);
    const spec: CallSpec = {
      fn,
      params,
      stream,
      timeout: callOptions.timeout ?? this.#options.timeout,
      idleTimeout: callOptions.streamIdleTimeout ?? this.#options.streamIdleTimeout,
      maxRetries: callOptions.maxRetries ?? this.#options.maxRetries,
      signal: callOptions.signal,
      onToken,
    };
    const call = this.#calls.create(spec, (ended, end) => this.#onCallEnd(ended, end));
    this.#dispatch(call);
    return call;
  }

  #onCallEnd(call: Call, end: CallEnd): void {
    const connection = call.connection as Connection | undefined;
    if (call.sent && connection) {
      if (end === "abandoned") connection.abandon(call.id);
      return;
    }
    const queued = this.#queue.indexOf(call);
    if (queued >= 0) this.#queue.splice(queued, 1);
  }

  /** Sends a call on the least busy socket, or queues it while (re)connecting. */
  #dispatch(call: Call): void {
    if (call.settled) return;
    const connection = this.#leastBusy();
    if (connection) return this.#send(call, connection);
    if (!this.#running) {
      return call.fail(
        new RealmError(
          "NOT_CONNECTED",
          `Cannot call ${call.spec.fn}: the client is not connected. Call \`await client.connect()\` first.`,
          { requestId: call.id, sent: false },
        ),
      );
    }
    if (this.#queue.length >= this.#options.maxQueuedCalls) {
      return call.fail(
        new RealmError(
          "QUEUE_FULL",
          `${this.#queue.length} calls are already waiting for a connection (maxQueuedCalls). ` +
            "Wait for the client to reconnect, or raise `maxQueuedCalls`.",
          { requestId: call.id, sent: false },
        ),
      );
    }
    this.#queue.push(call);
  }

  #leastBusy(): Connection | undefined {
    let best: Connection | undefined;
    let bestLoad = Infinity;
    for (const slot of this.#slots) {
      const connection = slot.connection;
      if (!connection?.open) continue;
      const load = this.#slots.length === 1 ? 0 : connection.busy;
      if (load < bestLoad) {
        best = connection;
        bestLoad = load;
      }
    }
    return best;
  }

  #send(call: Call, connection: Connection): void {
    const frame = encodeCall(call.id, call.spec.fn, call.spec.params, connection.tenantId);
    try {
      connection.send(call.id, frame);
    } catch (cause) {
      // The socket is closing: treat it as closed; the call was not sent.
      connection.settled(call.id);
      this.#log("send failed; closing the socket", { error: String(cause) });
      void connection.close(1006, "send failed", 0);
      return this.#dispatch(call);
    }
    call.sent = true;
    call.connection = connection;
  }

  #flushQueue(): void {
    while (this.#queue.length > 0 && this.#leastBusy()) this.#dispatch(this.#queue.shift()!);
  }

  #onFrame(connection: Connection, frame: ServerFrame): void {
    switch (frame.kind) {
      case "streaming": {
        const call = this.#callOn(connection, frame.id);
        if (call) {
          const token = readToken(frame.data);
          if (token !== undefined) return call.token(token);
          return this.#protocolError(`streaming frame without a token for call ${frame.id}`);
        }
        return this.#lateFrame(connection, frame.id, false);
      }
      case "complete": {
        const call = this.#callOn(connection, frame.id);
        if (call) {
          connection.settled(frame.id);
          return call.complete(frame.data);
        }
        return this.#lateFrame(connection, frame.id, true);
      }
      case "cancelled":
      case "error": {
        const error = frame.kind === "error" ? frame.error : {
          code: "CANCELLED",
          message: "The server cancelled the call.",
        };
        if (frame.id === "unknown") return this.#unattributedError(connection, error);
        const call = this.#callOn(connection, frame.id);
        if (call) {
          connection.settled(frame.id);
          return this.#callFailed(call, serverError(error, frame.id));
        }
        return this.#lateFrame(connection, frame.id, true);
      }
      case "bare_error":
        return this.#protocolError(`The server sent an error that names no call: ${frame.message}`);
      case "invalid":
        return this.#protocolError(`Ignored a frame the client cannot use (${frame.reason}).`);
      default:
        return this.#protocolError(
          `Ignored an unexpected ${frame.kind} frame after the handshake.`,
        );
    }
  }

  /** The unsettled call with this id, if it was sent on this socket (ids are per client). */
  #callOn(connection: Connection, id: string): Call | undefined {
    const call = this.#calls.get(id);
    return call?.connection === connection ? call : undefined;
  }

  /** A frame of an abandoned call is dropped silently; one of an unknown id is reported. */
  #lateFrame(connection: Connection, id: string, terminal: boolean): void {
    const entry = connection.inFlight.get(id);
    if (entry) {
      if (terminal) connection.settled(id);
      else entry.lastSeen = performance.now();
      return;
    }
    this.#protocolError(`Ignored a frame for call id ${JSON.stringify(id)}, which is not pending.`);
  }

  /**
   * The server answers a frame it cannot parse with `id: "unknown"`. It
   * serves a socket's frames in order, so the error belongs to the oldest
   * call on that socket without a terminal frame.
   */
  #unattributedError(
    connection: Connection,
    error: { code: string; message: string; details?: unknown },
  ): void {
    const oldest = connection.inFlight.keys().next();
    const id = oldest.done ? undefined : oldest.value;
    const realmError = serverError(error, id);
    this.#emit("error", realmError);
    if (id === undefined) return;
    connection.settled(id);
    this.#callOn(connection, id)?.fail(realmError);
  }

  #callFailed(call: Call, error: RealmError): void {
    if (error.code === "RATE_LIMIT_EXCEEDED" && call.retriesLeft > 0) {
      call.retriesLeft--;
      call.resetForRetry();
      const delay = retryDelay(error.retryAfter ?? 0);
      this.#log("rate limited; retrying", {
        requestId: call.id,
        delayMs: delay,
        retryAfter: error.retryAfter,
      });
      call.wake(delay, () => this.#dispatch(call));
      return;
    }
    call.fail(error);
  }

  #protocolError(message: string): void {
    this.#log(message);
    this.#emit("error", new RealmError("PROTOCOL_ERROR", message));
  }

  #onClosed(slot: Slot, connection: Connection, code: number, reason: string): void {
    if (slot.connection === connection) slot.connection = undefined;
    const willReconnect = this.#running && this.#options.reconnect;
    const resend: Call[] = [];
    // Calls on the dead socket learn it now, not at their timeout.
    for (const id of connection.inFlight.keys()) {
      const call = this.#callOn(connection, id);
      if (!call) continue;
      if (willReconnect && IDEMPOTENT.has(call.spec.fn) && !call.resentAfterDrop) {
        call.resentAfterDrop = true;
        call.resetForRetry();
        resend.push(call);
        continue;
      }
      call.fail(
        new RealmError(
          "CONNECTION_CLOSED",
          `The connection closed (code ${code}) before ${call.spec.fn} (call ${id}) finished. ` +
            "It was sent, so the server may have run it.",
          { requestId: id, sent: true },
        ),
      );
    }
    connection.inFlight.clear();
    this.#queue.unshift(...resend);
    this.#log("disconnected", { code, reason, willReconnect });
    this.#emit("disconnected", { code, reason, willReconnect, socket: slot.index });
    if (!this.#running) return;
    if (willReconnect) {
      // A connection that dropped soon after opening does not reset the backoff.
      if (performance.now() - slot.connectedAt >= 2 * this.#options.reconnectInterval) {
        slot.attempts = 0;
      }
      void this.#reconnect(slot);
    } else if (!this.isConnected()) {
      return this.#stop(
        new RealmError(
          "CONNECTION_CLOSED",
          `The connection closed (code ${code}) and \`reconnect\` is off. Call connect() again.`,
          { sent: false },
        ),
      );
    }
    // Other sockets of a pool take over what waits.
    this.#flushQueue();
  }

  /** Reopens one slot's socket with backoff until it works, a fatal error, or the attempt limit. */
  async #reconnect(slot: Slot): Promise<void> {
    if (slot.reconnecting) return;
    slot.reconnecting = true;
    const signal = this.#lifecycle.signal;
    const options = this.#options;
    try {
      while (!signal.aborted) {
        if (slot.attempts >= options.maxReconnectAttempts) {
          return this.#giveUp(
            slot,
            new RealmError(
              "CONNECTION_CLOSED",
              `Gave up reconnecting to ${options.url} after ${slot.attempts} attempts ` +
                "(maxReconnectAttempts). Call connect() to try again.",
              { sent: false },
            ),
          );
        }
        const attempt = ++slot.attempts;
        const delay = reconnectDelay(
          attempt,
          options.reconnectInterval,
          options.maxReconnectInterval,
        );
        this.#emit("reconnecting", { attempt, delay, socket: slot.index });
        this.#log("reconnecting", { attempt, delayMs: delay });
        await sleep(delay, signal);
        this.#emit("connecting", { attempt, socket: slot.index });
        try {
          await this.#openSlot(slot, signal);
          return;
        } catch (error) {
          if (signal.aborted) return;
          const realmError = error as RealmError;
          // A refused key or a bad URL will not fix itself: stop instead of looping.
          if (realmError.code === "UNAUTHORIZED" || realmError.code === "INVALID_OPTIONS") {
            return this.#giveUp(slot, realmError);
          }
          this.#log("reconnect failed", { attempt, error: realmError.message });
        }
      }
    } catch {
      // The wait was cancelled by disconnect().
    } finally {
      slot.reconnecting = false;
    }
  }

  /** One slot stops reconnecting; the client stops when no socket is left or coming. */
  #giveUp(slot: Slot, error: RealmError): void {
    this.#emit("error", error);
    const others = this.#slots.filter((other) => other !== slot);
    if (this.isConnected() || others.some((other) => other.reconnecting)) return;
    this.#stop(error);
  }
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

function cancelledConnect(): RealmError {
  return new RealmError("ABORTED", "The connection attempt was cancelled by disconnect().", {
    sent: false,
  });
}

function withSent(error: RealmError, sent: boolean, requestId: string): RealmError {
  return new RealmError(error.code, error.message, {
    requestId,
    sent,
    retryAfter: error.retryAfter,
    details: error.details,
  });
}

function serverError(
  error: { code: string; message: string; details?: unknown; retry_after?: unknown },
  requestId: string | undefined,
): RealmError {
  const retryAfter = error.code === "RATE_LIMIT_EXCEEDED" ? parseRetryAfter(error) ?? 0 : undefined;
  return new RealmError(error.code, error.message, {
    requestId,
    retryAfter,
    details: error.details,
    sent: true,
  });
}

/**
 * The result of a generation. A stream's `complete` frame carries only the
 * token count, so its text is the joined tokens.
 */
function toGenerationResult(data: unknown, streamed?: string[]): GenerationResult {
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
  return result;
}
