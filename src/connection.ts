/**
 * One socket's life: open, the handshake (welcome or `auth_required` →
 * `auth` → `auth_success`), the frames in between, the heartbeat, the close.
 *
 * @module
 */

import { RealmError } from "./errors.ts";
import {
  callBody,
  callFrame,
  callTail,
  decodeFrame,
  encodeAuth,
  type ServerFrame,
  TENANT_ID_PATTERN,
} from "./protocol.ts";
import type { RealmLogger, WebSocketConstructor } from "./types.ts";

/** What opening a socket needs. */
export interface ConnectionParams {
  url: string;
  WebSocket: WebSocketConstructor;
  apiKey?: string;
  /** The tenant id to use when the server does not assign one. */
  tenantId: string;
  connectTimeout: number;
  heartbeatInterval: number;
  heartbeatTimeout: number;
  /** How long an abandoned call still counts as keeping the server busy, in ms. */
  abandonedCallTtl: number;
  /** Aborting it (a `disconnect()` during the handshake) ends the attempt. */
  signal?: AbortSignal;
  log?: RealmLogger;
  /** Told of a socket given up during the handshake, with a promise of its end. */
  closing?: (closed: Promise<void>) => void;
}

/**
 * Why a socket closed, as its report carries it: the client stopped (`"halt"`: no reconnect),
 * `reconnect()` asked (`"reconnect"`: reopen at once), the client found it dead (`"dropped"`: a
 * failed send, an unanswered heartbeat, the browser offline), or it closed by itself
 * (`"server"`: the server or the network).
 */
export type CloseCause = "halt" | "reconnect" | "dropped" | "server";

/** Where an open connection reports its frames and its end. */
export interface ConnectionHandlers {
  /** A response frame (or a frame that belongs to no call) arrived. */
  frame(connection: Connection, frame: ServerFrame): void;
  /** The socket closed or was declared dead; called once. */
  closed(connection: Connection, code: number, reason: string, cause: CloseCause): void;
}

const HEARTBEAT_ID_PREFIX = "heartbeat-";

/**
 * An open, handshaken socket. Tracks which calls it carries, in the order the
 * server will answer them.
 */
export class Connection {
  readonly tenantId: string;
  readonly serverVersion: string;
  /** The end of every call frame on this socket (see {@linkcode callTail}): made once. */
  readonly callTail: string;
  /**
   * Calls sent on this socket with no terminal frame yet, oldest first, and when each was sent
   * (or, once abandoned, when its last frame arrived): a number, no object per call.
   */
  readonly #inFlight: Map<string, number> = new Map();
  /**
   * Ids of the `inFlight` calls nobody listens to any more (timeout, abort, `break`), so that
   * `busy` scans these few instead of every call in flight (a pool asks it for every call it
   * sends). Ids that left `inFlight` meanwhile are dropped as found.
   */
  readonly #abandoned = new Set<string>();
  #socket: WebSocket;
  #params: ConnectionParams;
  #handlers: ConnectionHandlers;
  #closed = false;
  /** Why it closes, once `close()` was asked; a close nobody asked for is the server's. */
  #cause: CloseCause = "server";
  #heartbeatTimer: ReturnType<typeof setTimeout> | undefined;
  #heartbeatId: string | undefined;
  #heartbeatCount = 0;
  #lastActivity = performance.now();
  /** Resolves once the socket has closed, or its close grace ran out. */
  #ended: Promise<void> | undefined;
  #socketClosed = false;
  #onSocketClosed: (() => void) | undefined;
  readonly #heartbeatOn: boolean;
  /** When the last frame other than a token arrived (tokens too with a heartbeat). */
  frameAt = 0;

  constructor(
    socket: WebSocket,
    handshake: { tenantId: string; version: string },
    params: ConnectionParams,
    handlers: ConnectionHandlers,
  ) {
    this.#socket = socket;
    this.tenantId = handshake.tenantId;
    this.callTail = callTail(handshake.tenantId);
    this.serverVersion = handshake.version;
    this.#params = params;
    this.#handlers = handlers;
    this.#heartbeatOn = params.heartbeatInterval > 0;
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onclose = (event) => {
      this.#socketClosed = true;
      // Deno says 0 for a connection that died; the standard's code for it is 1006.
      this.#finish(event.code || 1006, event.reason);
      this.#onSocketClosed?.();
    };
    socket.onerror = ignore;
    this.#scheduleHeartbeat();
  }

  /** The server's address, as given to the socket. */
  get url(): string {
    return this.#params.url;
  }

  /** Whether the socket can carry calls. */
  get open(): boolean {
    return !this.#closed;
  }

  /**
   * Calls that keep the server busy: those still listened to, plus abandoned
   * ones whose frames were seen recently (the server is still producing them).
   */
  get busy(): number {
    if (this.#abandoned.size > 0) this.forgetAbandoned();
    return this.#inFlight.size;
  }

  /** Whether a call with this id was sent here and has had no terminal frame. */
  carries(id: string): boolean {
    return this.#inFlight.has(id);
  }

  /**
   * The ids of the calls on the wire, in the order they were sent (so the order the server
   * serves them), and forgets them all: the socket closed and whoever owns the calls decides.
   */
  takeCalls(): string[] {
    const ids = [...this.#inFlight.keys()];
    this.#inFlight.clear();
    this.#abandoned.clear();
    return ids;
  }

  /**
   * Forgets the abandoned calls quiet for `abandonedCallTtl`: the server
   * stopped producing them (a stream can end with no final frame), so they
   * are no longer on the wire. Their late frames, if any, are dropped.
   */
  forgetAbandoned(now: number = performance.now()): void {
    for (const id of this.#abandoned) {
      const lastSeen = this.#inFlight.get(id);
      if (lastSeen === undefined) this.#abandoned.delete(id);
      else if (now - lastSeen >= this.#params.abandonedCallTtl) {
        this.#inFlight.delete(id);
        this.#abandoned.delete(id);
      }
    }
  }

  /** The oldest call in flight that somebody still listens to. */
  oldestListening(): string | undefined {
    for (const id of this.#inFlight.keys()) if (!this.#abandoned.has(id)) return id;
    return undefined;
  }

  /** A frame arrived for an abandoned call: the server is still producing it. */
  seen(id: string, now: number = performance.now()): void {
    if (this.#inFlight.has(id)) this.#inFlight.set(id, now);
  }

  /** Writes a call frame and remembers it as in flight; `now` spares a clock read. */
  send(id: string, text: string, now: number = performance.now()): void {
    this.#inFlight.set(id, now);
    if (this.#abandoned.size > 0) {
      this.#abandoned.delete(id);
      // Each send sweeps them too: with one socket and no heartbeat nothing else reads `busy`,
      // and every stream the server dropped without a final frame would stay here until close.
      this.forgetAbandoned(now);
    }
    this.#lastActivity = now;
    this.#socket.send(text);
  }

  /** The caller stopped listening to a call; its late frames will be dropped. */
  abandon(id: string): void {
    if (this.#inFlight.has(id)) this.#abandoned.add(id);
  }

  /** Forgets a call whose terminal frame arrived. */
  settled(id: string): void {
    this.#inFlight.delete(id);
    if (this.#abandoned.size > 0) this.#abandoned.delete(id);
  }

  /**
   * Closes the socket. The connection counts as closed at once: the real
   * server answers a close frame only after its current stream ends.
   * Resolves when the socket has closed, or after `graceMs`.
   */
  close(
    code = 1000,
    reason = "",
    graceMs: number = CLOSE_GRACE_MS,
    cause: CloseCause = "halt",
  ): Promise<void> {
    if (!this.#closed) this.#cause = cause;
    this.#finish(code, reason);
    if (this.#socketClosed) return Promise.resolve();
    return this.#ended ??= closeSocket(this.#socket, code, reason, graceMs, (wake) => {
      this.#onSocketClosed = wake;
    });
  }

  #onMessage(data: unknown): void {
    if (this.#closed) return;
    const frame = decodeFrame(data);
    // The heartbeat reads it, and a call's end (as `frameAt`): one clock read for both. Not per
    // token without a heartbeat: the clock costs about 0.1 µs, a tenth of a token's cost.
    if (this.#heartbeatOn || frame.kind !== "streaming") {
      this.frameAt = this.#lastActivity = performance.now();
    }
    if (this.#heartbeatId !== undefined && "id" in frame && frame.id === this.#heartbeatId) {
      if (frame.kind !== "streaming") this.#heartbeatAnswered();
      return;
    }
    this.#handlers.frame(this, frame);
  }

  #finish(code: number, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#heartbeatTimer !== undefined) clearTimeout(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
    this.#socket.onmessage = null;
    this.#handlers.closed(this, code, reason, this.#cause);
  }

  #scheduleHeartbeat(delay = this.#params.heartbeatInterval): void {
    if (!this.#heartbeatOn || this.#closed) return;
    this.#heartbeatTimer = setTimeout(() => this.#heartbeatTick(), delay);
  }

  /**
   * Sends a `health` call after a quiet spell. Never while a call is in
   * flight: the server serves one call at a time, so a heartbeat behind a long
   * stream would look like a dead server.
   */
  #heartbeatTick(now = false): void {
    this.#heartbeatTimer = undefined;
    const quiet = performance.now() - this.#lastActivity;
    if (!now && (quiet < this.#params.heartbeatInterval || this.busy > 0)) {
      this.#scheduleHeartbeat(Math.max(this.#params.heartbeatInterval - quiet, 50));
      return;
    }
    const id = `${HEARTBEAT_ID_PREFIX}${++this.#heartbeatCount}`;
    this.#heartbeatId = id;
    try {
      this.#socket.send(callFrame(id, callBody("health", "{}"), this.callTail));
    } catch {
      // A socket that cannot send is as dead as one that does not answer.
    }
    this.#heartbeatTimer = setTimeout(() => {
      this.#heartbeatTimer = undefined;
      this.#params.log?.("heartbeat unanswered", {
        timeoutMs: this.#params.heartbeatTimeout,
      });
      void this.close(4000, "heartbeat timeout", 0, "dropped");
    }, this.#params.heartbeatTimeout);
  }

  /**
   * Checks the socket now (a page back from the background, where timers
   * were throttled): a heartbeat unless one is out or calls are in flight.
   */
  probe(): void {
    if (this.#closed || this.#heartbeatId !== undefined || this.busy > 0) return;
    if (this.#heartbeatTimer !== undefined) clearTimeout(this.#heartbeatTimer);
    this.#heartbeatTick(true);
  }

  #heartbeatAnswered(): void {
    this.#heartbeatId = undefined;
    if (this.#heartbeatTimer !== undefined) clearTimeout(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
    this.#lastActivity = performance.now();
    this.#scheduleHeartbeat();
  }
}

/** How long a close waits for the peer's close frame before the socket is torn down. */
const CLOSE_GRACE_MS = 2000;

/**
 * Closes a socket; resolves when it has closed or after `graceMs`. A peer
 * that never answers the close handshake is then torn down where the
 * implementation can (`ws`'s `terminate()`); the runtimes' own WebSockets
 * cannot, and keep waiting for the peer in the background.
 */
function closeSocket(
  socket: WebSocket,
  code: number,
  reason: string,
  graceMs: number,
  onClosed: (wake: () => void) => void,
): Promise<void> {
  const close = () => {
    try {
      socket.close(code, reason);
    } catch {
      try {
        socket.close();
      } catch { /* an implementation that cannot close is left to its own end */ }
    }
  };
  // Deno leaves the server's end open when a socket is closed while still connecting:
  // close it once it opens instead (or at the end of the grace).
  const connecting = socket.readyState === 0;
  if (connecting) socket.onopen = close;
  else close();
  if (socket.readyState === 3) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      if (socket.readyState === 0) close();
      const terminate = (socket as { terminate?: () => void }).terminate;
      if (typeof terminate === "function") {
        try {
          terminate.call(socket);
        } catch { /* already gone */ }
      }
      done();
    }, graceMs);
    function done() {
      clearTimeout(timer);
      resolve();
    }
    onClosed(done);
  });
}

const ABORTED = Symbol("aborted");
const ignore = () => {};

/** A connection attempt that `disconnect()` (or a newer attempt) made pointless. */
export function cancelledConnect(): RealmError {
  return new RealmError("ABORTED", "The connection attempt was cancelled by disconnect().", {
    sent: false,
  });
}

/**
 * Opens a socket and runs the handshake. The server's first frame decides the
 * mode: the welcome frame means an open server (no `auth` frame is sent, even
 * with a key: an open server would answer it with an error), `auth_required`
 * means send the key now.
 *
 * Rejects with `UNAUTHORIZED` when the key is refused or missing (fatal: a
 * retry cannot help), `TIMEOUT` after `connectTimeout`, `CONNECTION_CLOSED`
 * when the socket closes first, `INVALID_OPTIONS` for a URL the
 * implementation refuses, `ABORTED` when `signal` aborts.
 */
export function openConnection(
  params: ConnectionParams,
  handlers: ConnectionHandlers,
): Promise<Connection> {
  return new Promise((resolve, reject) => {
    let socket: WebSocket;
    try {
      socket = new params.WebSocket(params.url);
    } catch (cause) {
      reject(
        new RealmError(
          "INVALID_OPTIONS",
          `Cannot open a WebSocket to ${params.url}: ${(cause as Error)?.message ?? cause}`,
          { cause, sent: false },
        ),
      );
      return;
    }
    let done = false;
    let authTenant: string | undefined;
    let authFailure: RealmError | undefined;
    /** The socket reported an error or a close: nothing is left to close. */
    let dead = false;

    const fail = (error: RealmError | typeof ABORTED) => {
      if (done) return;
      done = true;
      cleanup();
      if (!dead) {
        let wake: (() => void) | undefined;
        socket.onclose = () => wake?.();
        // Closed whether or not anyone is told: `params.closing?.(closeSocket(…))` would skip it.
        const closed = closeSocket(socket, 1000, "", CLOSE_GRACE_MS, (w) => wake = w);
        params.closing?.(closed);
      }
      reject(error === ABORTED ? cancelledConnect() : error);
    };
    const unreachable = (detail: string, event?: ErrorEvent) =>
      new RealmError(
        "CONNECTION_CLOSED",
        `Could not connect to ${params.url}${detail}: is a server running there?`,
        { sent: false, cause: event?.error ?? event },
      );
    const timer = Number.isFinite(params.connectTimeout)
      ? setTimeout(() =>
        fail(
          new RealmError(
            "TIMEOUT",
            `No handshake from ${params.url} within ${params.connectTimeout} ms: is it a Realm ` +
              "server, and answering? Else raise `connectTimeout`.",
            { sent: false },
          ),
        ), params.connectTimeout)
      : undefined;
    const onAbort = () => fail(ABORTED);
    params.signal?.addEventListener("abort", onAbort, { once: true });
    const cleanup = () => {
      clearTimeout(timer);
      params.signal?.removeEventListener("abort", onAbort);
      socket.onmessage = null;
      socket.onopen = null;
      // Never none: `ws` emits `error` when a socket is closed while still connecting, and an
      // `error` nobody listens to ends the process.
      socket.onerror = ignore;
    };
    if (params.signal?.aborted) return fail(ABORTED);

    socket.onerror = (event) => {
      // Node 22's WebSocket fires `error` and never `close` when it cannot
      // connect, so an error before the handshake ends the attempt now.
      dead = true;
      if (authFailure) return fail(authFailure);
      // Something that is no WebSocket server may have answered. Only the error's message tells,
      // where the runtime tells at all: "Unexpected server response: 404" (`ws`), "… status code:
      // 404" (Deno, Bun); Node 22's WebSocket and browsers say nothing.
      const status = /(?:response|code): (\d{3})/.exec((event as ErrorEvent)?.message)?.[1];
      fail(unreachable(status ? ` (an HTTP server answered ${status})` : "", event as ErrorEvent));
    };
    socket.onclose = (event) => {
      dead = true;
      if (done) return;
      if (authFailure) return fail(authFailure);
      fail(unreachable(` (close code ${event.code}${event.reason ? `: ${event.reason}` : ""})`));
    };
    socket.onmessage = (event) => {
      if (done) return;
      const frame = decodeFrame(event.data);
      switch (frame.kind) {
        case "welcome": {
          const tenantId = authTenant ?? frame.tenantId ?? params.tenantId;
          if (frame.tenantId !== null && !TENANT_ID_PATTERN.test(frame.tenantId)) {
            return fail(badTenant(params.url, frame.tenantId));
          }
          done = true;
          cleanup();
          params.log?.("connected", { url: params.url, tenantId, version: frame.version });
          resolve(new Connection(socket, { tenantId, version: frame.version }, params, handlers));
          return;
        }
        case "auth_required":
          if (params.apiKey === undefined) {
            return fail(
              new RealmError(
                "UNAUTHORIZED",
                `The server at ${params.url} requires an API key: pass \`apiKey\`.`,
              ),
            );
          }
          try {
            socket.send(encodeAuth(params.apiKey));
          } catch {
            fail(unreachable(" (the socket closed during the handshake)"));
          }
          return;
        case "auth_success":
          // The key decides the tenant; the welcome frame follows.
          if (!TENANT_ID_PATTERN.test(frame.tenantId)) {
            return fail(badTenant(params.url, frame.tenantId));
          }
          authTenant = frame.tenantId;
          return;
        case "auth_failed":
          // The server closes next (code 1005); report its reason, not the close.
          authFailure = new RealmError(
            "UNAUTHORIZED",
            `Authentication failed: ${frame.reason}. Check the \`apiKey\` option.`,
          );
          return fail(authFailure);
        default:
          return fail(
            new RealmError(
              "PROTOCOL_ERROR",
              `Unexpected first frame from ${params.url}; is it a Realm server? ` +
                (frame.kind === "invalid" ? frame.reason : frame.kind),
            ),
          );
      }
    };
  });
}

function badTenant(url: string, tenantId: string): RealmError {
  return new RealmError(
    "PROTOCOL_ERROR",
    `The server at ${url} assigned the tenant id ${
      JSON.stringify(tenantId.slice(0, 80))
    }, against its own rule (3 to 64 letters, digits, '-', '_'): is it a Realm server?`,
  );
}
