/**
 * The run: `connect()`, `reconnect()` and `disconnect()`, opening every socket
 * of a run, reopening them, giving up, the browser's hooks, and the events
 * that tell of it all.
 *
 * It works in steps, one at a time, each to completion: a public method, or a
 * report of the pool (a socket opened, failed, closed, gave up). A step that a
 * listener or the `logger` starts while another runs waits for it; events are
 * dispatched only once the step that caused them is complete. So a listener
 * that calls back into the client meets it settled, and every promise a
 * method returns answers the step that method asked for.
 *
 * @module
 */

import { watchBrowser } from "./browser.ts";
import type { CallRegistry } from "./calls.ts";
import { cancelledConnect, type CloseCause, type Connection } from "./connection.ts";
import { Dispatcher, withRequest } from "./dispatch.ts";
import { RealmError } from "./errors.ts";
import { type ConnectionState, Lifecycle, type SocketSummary } from "./lifecycle.ts";
import { FATAL, Pool, type SocketRef } from "./pool.ts";
import { newPromise, settlers } from "./settlers.ts";
import { traceConnection } from "./telemetry.ts";
import type { RealmEventMap, ServerStats } from "./types.ts";
import type { ResolvedOptions } from "./validate.ts";
import { resolveWebSocket, type WebSocketSource } from "./websocket.ts";

/** What the connector needs from the client. */
export interface ConnectorHooks {
  /** Dispatches one of the client's events. */
  dispatch(event: Event): void;
  /** Debug lines (the `logger`, guarded). */
  log(message: string, data?: Record<string, unknown>): void;
}

/**
 * A run's `connect()`: one promise for every caller, settled once every
 * socket's first attempt has its outcome.
 */
interface Start {
  readonly run: number;
  readonly promise: Promise<void>;
  resolve(value?: unknown): void;
  reject(error: unknown): void;
  /** First attempts started; 0 until the `WebSocket` implementation is known. */
  expected: number;
  /** Each socket's first outcome: its error, or none when it opened. */
  readonly outcomes: Map<SocketRef, RealmError | undefined>;
}

/** Owns the run; see the module doc. */
export class Connector {
  /** Routes calls to sockets and frames to calls; the client sends its calls through it. */
  readonly dispatcher: Dispatcher;
  /** The tenant every call carries: the option, a random UUID, or the server's. */
  tenantId: string;
  /** The server's version from its welcome frame, once connected. */
  serverVersion: string | undefined;
  /** Where the `WebSocket` implementation came from, once picked. */
  webSocketSource: WebSocketSource | undefined;
  readonly #options: ResolvedOptions;
  readonly #calls: CallRegistry;
  readonly #hooks: ConnectorHooks;
  readonly #lifecycle: Lifecycle;
  readonly #pool: Pool;
  #start: Start | undefined;
  #unwatchBrowser: (() => void) | undefined;
  /** A step is running; steps asked for meanwhile wait in `#later`. */
  #inStep = false;
  readonly #later: (() => void)[] = [];
  /** Events not dispatched yet, oldest first. */
  readonly #events: CustomEvent[] = [];
  #dispatching = false;

  constructor(
    options: ResolvedOptions,
    calls: CallRegistry,
    tenantId: string,
    hooks: ConnectorHooks,
  ) {
    this.#options = options;
    this.#calls = calls;
    this.#hooks = hooks;
    this.tenantId = tenantId;
    this.#lifecycle = new Lifecycle((change) => this.emit("statechange", change));
    const log = hooks.log;
    this.#pool = new Pool(options, {
      opened: (socket, connection) => this.#inline(() => this.#opened(socket, connection)),
      accept: (socket, connection) => this.#accept(socket, connection),
      frame: (connection, frame) => this.dispatcher.frame(connection, frame),
      closed: (socket, connection, code, reason, cause) =>
        this.#inline(() => this.#closed(socket, connection, code, reason, cause)),
      reconnecting: (socket, attempt, delay) =>
        this.#inline(() => {
          log("reconnecting", { attempt, delayMs: delay, socket: socket.index });
          this.emit("reconnecting", { attempt, delay, ...where(socket) });
        }),
      connecting: (socket, attempt) =>
        this.#inline(() => this.emit("connecting", { attempt, ...where(socket) })),
      failed: (socket, error) => this.#inline(() => this.#failed(socket, error)),
      gaveUp: (socket, error) => this.#inline(() => this.#gaveUp(socket, error)),
      tenantId: () => this.tenantId,
      log,
    });
    this.dispatcher = new Dispatcher(calls, {
      pick: (avoid) => this.#pool.leastBusy(avoid),
      connected: () => this.#pool.openCount > 0,
      mayWait: () => this.#lifecycle.running,
      maxQueuedCalls: options.maxQueuedCalls,
      report: (error) => this.emit("error", error),
      dropSocket: (connection) => this.#pool.drop(connection, 1006, "send failed"),
      log,
    });
  }

  /** The connection state. */
  get state(): ConnectionState {
    return this.#lifecycle.state;
  }

  /** Sockets open and handshaken. */
  get openCount(): number {
    return this.#pool.openCount;
  }

  /** Each server of the list, for `stats()`. */
  servers(): ServerStats[] {
    const counts = this.dispatcher.counts;
    return this.#pool.summary().map((server) => ({
      ...server,
      resentCalls: 0,
      retriesWithheld: 0,
      ...counts.get(server.url),
    }));
  }

  /** See `RealmWebSocketClient.connect()`. */
  connect(): Promise<void> {
    return this.#command(() => this.#open(false));
  }

  /** See `RealmWebSocketClient.reconnect()`. */
  reconnect(): Promise<void> {
    return this.#command(() => this.#open(true));
  }

  /**
   * `connect()`, or with `drop` `reconnect()`: from idle or closed a new run; while connecting,
   * that run's outcome. Open or reconnecting: every socket tries now (`reconnect()` drops them
   * first); resolves at once while one is open, else with the first socket open, and rejects
   * once every socket's attempt failed.
   */
  #open(drop: boolean): Promise<void> {
    switch (this.#lifecycle.state) {
      case "idle":
      case "closed":
        return this.#startRun();
      case "connecting":
        return this.#start!.promise;
      default:
        if (drop) this.#pool.dropAll();
        return this.#pool.round();
    }
  }

  /** See `RealmWebSocketClient.disconnect()`. */
  disconnect(): Promise<void> {
    return this.#command(() => {
      this.#unwatch();
      const start = this.#start;
      this.#start = undefined;
      // Cancelled on purpose: no unhandled rejection for a promise nobody awaits.
      start?.promise.catch(() => {});
      const closed = this.#pool.closeAll("client disconnect");
      const error = new RealmError(
        "CONNECTION_CLOSED",
        "disconnect() was called before the call finished.",
        { sent: false },
      );
      for (const call of this.#calls.pending()) call.fail(withRequest(error, call));
      start?.reject(cancelledConnect());
      this.#lifecycle.stop();
      return closed;
    });
  }

  /**
   * Queues one of the client's events; it goes out once the current step is
   * complete (at once outside a step), in the order events happened.
   */
  emit<K extends keyof RealmEventMap>(type: K, detail: RealmEventMap[K]): void {
    if (type !== "error") {
      traceConnection(type, detail, (detail as { url?: string }).url ?? this.#options.urls[0]);
    }
    this.#events.push(new CustomEvent(type, { detail }));
    if (!this.#inStep) this.#flush();
  }

  // -- steps ------------------------------------------------------------------------------------

  /** Runs a step now, or after the running one; then dispatches the events of what ran. */
  #step(body: () => void): void {
    if (this.#inStep) {
      this.#later.push(body);
      return;
    }
    this.#inStep = true;
    try {
      body();
      for (let next = this.#later.shift(); next; next = this.#later.shift()) next();
    } finally {
      this.#inStep = false;
    }
    this.#flush();
  }

  /** A report of the pool made during a step is part of that step; otherwise it is one. */
  #inline(body: () => void): void {
    if (this.#inStep) body();
    else this.#step(body);
  }

  /** A public method as a step: its promise answers that step, even when it runs later. */
  #command(body: () => Promise<void>): Promise<void> {
    if (this.#inStep) {
      return new Promise((resolve, reject) => this.#later.push(() => body().then(resolve, reject)));
    }
    let result!: Promise<void>;
    this.#step(() => result = body());
    return result;
  }

  #flush(): void {
    if (this.#dispatching) return;
    this.#dispatching = true;
    try {
      for (let event = this.#events.shift(); event; event = this.#events.shift()) {
        this.#hooks.dispatch(event);
      }
    } finally {
      this.#dispatching = false;
    }
  }

  // -- the run ----------------------------------------------------------------------------------

  #startRun(): Promise<void> {
    const run = this.#lifecycle.start();
    const promise = newPromise<void>();
    this.#start = { run, promise, ...settlers, expected: 0, outcomes: new Map() };
    this.#unwatchBrowser ??= watchBrowser({
      offline: () => this.#whileRunning(() => this.#pool.dropAllDead(1001, "browser offline")),
      online: () => this.#whileRunning(() => void this.#pool.round().catch(() => {})),
      wake: () =>
        this.#whileRunning(() => {
          for (const connection of this.#pool.connections()) connection.probe();
          void this.#pool.round().catch(() => {});
        }),
    });
    void this.#openAll(run);
    return promise;
  }

  /** Opens every socket of a new run (the outcomes are reported, see `#firstOutcome`). */
  async #openAll(run: number): Promise<void> {
    if (!this.#pool.WebSocket) {
      try {
        const { WebSocket, source } = await resolveWebSocket(this.#options.WebSocket);
        this.#pool.WebSocket = WebSocket;
        this.webSocketSource = source;
      } catch (error) {
        return this.#step(() => {
          if (this.#start?.run === run) this.#giveUp(error as RealmError);
        });
      }
    }
    this.#inline(() => {
      const start = this.#start;
      if (start?.run !== run) return;
      this.emit("connecting", { attempt: 0 });
      start.expected = this.#pool.openAll();
    });
  }

  /** An attempt's outcome; the start ends with the last socket's first one. */
  #firstOutcome(socket: SocketRef, error?: RealmError): void {
    const start = this.#start;
    if (!start || start.outcomes.has(socket)) return;
    start.outcomes.set(socket, error);
    if (start.outcomes.size === start.expected) this.#startEnded(start);
  }

  /**
   * Every socket's first attempt has its outcome. With no server reached, the
   * client gives up. Otherwise a server that could not be reached is reported
   * (an `error` event), and each socket that failed keeps trying in the
   * background (with `reconnect` on), so that the pool fills up again.
   */
  #startEnded(start: Start): void {
    const outcomes = [...start.outcomes].sort(([a], [b]) => a.index - b.index);
    const reached = new Set(outcomes.filter(([, error]) => !error).map(([socket]) => socket.url));
    if (reached.size === 0) return this.#giveUp(outcomes[0][1]!);
    const reported = new Set<string>();
    for (const [socket, error] of outcomes) {
      if (!error) continue;
      const fatal = FATAL.has(error.code);
      const retry = this.#options.reconnect && !fatal;
      const used = reached.has(socket.url);
      // A server nobody reached is reported once; a socket that cannot open where others did,
      // only when retrying cannot help.
      if (used ? fatal : !reported.has(socket.url)) {
        reported.add(socket.url);
        this.emit(
          "error",
          new RealmError(
            error.code,
            `The server at ${socket.url} could not be used${
              used ? ` by socket ${socket.index}` : ""
            }: ${error.message}${retry ? " Retried in the background." : ""}`,
            { details: { url: socket.url, socket: socket.index }, cause: error },
          ),
        );
      }
      if (retry) this.#pool.reconnect(socket, false);
    }
    const sockets = this.#sockets();
    if (sockets.open === 0 && sockets.retrying === 0) {
      return this.#giveUp(
        new RealmError(
          "CONNECTION_CLOSED",
          "The sockets closed while connect() ran, and `reconnect` is off: call connect() again.",
          { sent: false },
        ),
      );
    }
    // A server was reached: the run is on, `"reconnecting"` if what opened has dropped since.
    this.#start = undefined;
    this.#lifecycle.started(
      sockets,
      new RealmError(
        "CONNECTION_CLOSED",
        "The sockets closed while connect() ran; reconnecting.",
        { sent: false },
      ),
    );
    start.resolve();
    this.dispatcher.flush();
  }

  /**
   * The client gives up: what is left is closed in the background (a
   * `connect()` that failed does not wait for its sockets' close), calls that
   * wait fail with the reason, and the state is `"closed"` until `connect()`.
   */
  #giveUp(reason: RealmError): void {
    const start = this.#start;
    this.#start = undefined;
    this.#unwatch();
    void this.#pool.closeAll("connect failed", reason);
    this.dispatcher.failQueued(reason);
    this.#lifecycle.giveUp(reason);
    start?.reject(reason);
  }

  /** Runs a browser hook as a step, only while the client runs. */
  #whileRunning(body: () => void): void {
    this.#step(() => {
      if (this.#lifecycle.running) body();
    });
  }

  #unwatch(): void {
    this.#unwatchBrowser?.();
    this.#unwatchBrowser = undefined;
  }

  #sockets(): SocketSummary {
    return { open: this.#pool.openCount, retrying: this.#pool.retryingCount };
  }

  // -- the pool's reports -----------------------------------------------------------------------

  /**
   * Every call carries one tenant: a server that assigns another one than
   * the open sockets use is not used.
   */
  #accept(socket: SocketRef, connection: Connection): RealmError | undefined {
    if (connection.tenantId === this.tenantId || this.#pool.openCount === 0) return undefined;
    return new RealmError(
      "TENANT_MISMATCH",
      `The server at ${socket.url} assigned tenant ${connection.tenantId}, the others ` +
        `${this.tenantId}: not used. Map the key to one tenant on every server.`,
      { details: { url: socket.url } },
    );
  }

  #opened(socket: SocketRef, connection: Connection): void {
    this.tenantId = connection.tenantId;
    this.serverVersion = connection.serverVersion;
    this.#lifecycle.update(this.#sockets());
    this.#firstOutcome(socket);
    this.emit("connected", {
      tenantId: connection.tenantId,
      version: connection.serverVersion,
      ...where(socket),
    });
    this.dispatcher.flush();
  }

  #closed(
    socket: SocketRef,
    connection: Connection,
    code: number,
    reason: string,
    cause: CloseCause,
  ): void {
    const running = this.#lifecycle.running && cause !== "halt";
    const willReconnect = running && (cause === "reconnect" || this.#options.reconnect);
    // Calls whose answer has not begun go to another socket, unless the client stopped.
    this.dispatcher.socketClosed(connection, code, cause !== "halt");
    if (willReconnect) this.#pool.reconnect(socket, cause === "reconnect");
    this.#hooks.log("disconnected", { code, reason, willReconnect, socket: socket.index });
    if (running && !this.#start) {
      const sockets = this.#sockets();
      if (sockets.open === 0 && sockets.retrying === 0) {
        this.#giveUp(
          new RealmError(
            "CONNECTION_CLOSED",
            `The connection closed (code ${code}) and \`reconnect\` is off. Call connect() again.`,
            { sent: false },
          ),
        );
      } else {
        this.#lifecycle.update(
          sockets,
          new RealmError(
            "CONNECTION_CLOSED",
            `The connection to ${socket.url} closed (code ${code}${
              reason ? `: ${reason}` : ""
            }); reconnecting.`,
            { sent: false },
          ),
        );
      }
    }
    this.emit("disconnected", { code, reason, willReconnect, ...where(socket) });
    // Other sockets of a pool take over what waits.
    if (this.#lifecycle.running) this.dispatcher.flush();
  }

  #failed(socket: SocketRef, error: RealmError): void {
    const first = this.#start && !this.#start.outcomes.has(socket);
    if (!first) this.#hooks.log("reconnect failed", { socket: socket.index, error: error.message });
    this.#firstOutcome(socket, error);
  }

  /** A socket stopped reconnecting; the client gives up when no socket is left or coming. */
  #gaveUp(socket: SocketRef, error: RealmError): void {
    traceConnection("gave_up", { "error.type": error.code, error }, socket.url);
    this.emit("error", error);
    // During a start, its end decides (the other sockets' first attempts may still succeed).
    if (!this.#lifecycle.running || this.#start) return;
    const sockets = this.#sockets();
    if (sockets.open === 0 && sockets.retrying === 0) this.#giveUp(error);
  }
}

/** Which socket and server an event is about. */
function where(socket: SocketRef): { socket: number; url: string } {
  return { socket: socket.index, url: socket.url };
}
