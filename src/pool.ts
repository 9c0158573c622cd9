/**
 * The client's sockets: one slot per `connections`, each opening and
 * reopening its own socket with backoff, and the least-busy pick. The pool
 * decides which socket carries a call; whether the client runs, and so
 * whether a dropped socket is reopened, is the caller's decision.
 *
 * @module
 */

import { reconnectDelay } from "./backoff.ts";
import {
  cancelledConnect,
  type Connection,
  type ConnectionHandlers,
  openConnection,
} from "./connection.ts";
import { RealmError } from "./errors.ts";
import type { ServerFrame } from "./protocol.ts";
import type { ResolvedOptions } from "./validate.ts";
import type { WebSocketConstructor } from "./types.ts";

/**
 * One Realm server of the list. Its sockets reconnect on their own; after
 * {@linkcode EJECT_AFTER} failed attempts in a row over its sockets, a server
 * of a list is ejected: none of its sockets tries again until the ejection
 * ends, and each ejection in a row lasts twice the one before.
 */
export interface Server {
  readonly url: string;
  /** Failed attempts in a row, over its sockets. */
  failures: number;
  /** Ejections in a row, to grow the next one. */
  ejections: number;
  /** Until when (`performance.now()`) it is ejected; 0 when it is not. */
  ejectedUntil: number;
}

/** Failed attempts in a row after which a server of a list is ejected. */
export const EJECT_AFTER = 3;

/** One socket of the pool, reopened on its own after a drop. */
export interface Slot {
  /** Its index among `connections`, from 0: the `socket` of events. */
  readonly index: number;
  /** The server it connects to (slots go round the servers in turn). */
  readonly server: Server;
  /** The open, handshaken socket, if any. */
  connection: Connection | undefined;
  /** Consecutive reconnect attempts since the last stable connection. */
  attempts: number;
  /** When its socket last opened, to tell a stable connection from a flapping one. */
  connectedAt: number;
  /** Reopening: waiting out a backoff delay or handshaking. */
  retrying: boolean;
  /**
   * Asked to reconnect while already at it: a listener of the `connected` event of the socket
   * its loop just opened dropped it (`reconnect()`) before the loop ended; `"now"` skips the
   * backoff.
   */
  reopen: "now" | "later" | undefined;
  /** Ends the current backoff wait early (`connect()` while reconnecting, `online`). */
  wakeUp: (() => void) | undefined;
  /** Its handshakes in progress (two when `connect()` runs twice), for `closeAll()` to cancel. */
  readonly handshakes: Set<AbortController>;
}

/** What the pool tells its owner. */
export interface PoolHandlers {
  /** A slot's socket completed its handshake. */
  opened(slot: Slot): void;
  /** Whether a freshly handshaken socket may be used; an error closes it (a tenant mismatch). */
  accept(slot: Slot, connection: Connection): RealmError | undefined;
  /** A frame arrived on an open socket. */
  frame(connection: Connection, frame: ServerFrame): void;
  /** An open socket closed; `slot.connection` is already cleared. */
  closed(slot: Slot, connection: Connection, code: number, reason: string): void;
  /** A reconnect attempt is scheduled after `delay` ms. */
  reconnecting(slot: Slot, attempt: number, delay: number): void;
  /** A reconnect attempt starts now. */
  connecting(slot: Slot, attempt: number): void;
  /** A reconnect attempt failed; `fatal` when retrying cannot help. */
  attemptFailed(slot: Slot, error: RealmError, fatal: boolean): void;
  /** A slot stopped reconnecting (attempts used up, or a fatal error). */
  gaveUp(slot: Slot, error: RealmError): void;
  /** The tenant id to use on an open server. */
  tenantId(): string;
  /** Debug lines. */
  log(message: string, data?: Record<string, unknown>): void;
}

/** Errors a reconnect cannot fix: a refused key, a URL the implementation refuses, ... */
export const FATAL: ReadonlySet<string> = new Set([
  "UNAUTHORIZED",
  "INVALID_OPTIONS",
  "PROTOCOL_ERROR",
  "TENANT_MISMATCH",
]);

/**
 * The sockets. Each pool generation (from {@linkcode Pool.closeAll} to the
 * next) owns its attempts: an attempt that finishes after `closeAll()` closes
 * its socket instead of adding it, so the pool never holds more than
 * `connections` sockets.
 */
export class Pool {
  readonly slots: readonly Slot[];
  readonly servers: readonly Server[];
  readonly #options: ResolvedOptions;
  readonly #handlers: PoolHandlers;
  readonly #connectionHandlers: ConnectionHandlers;
  /** Sockets still closing, so that `closeAll()` can wait for them. */
  readonly #closing = new Set<Promise<void>>();
  #generation = 0;
  WebSocket: WebSocketConstructor | undefined;

  constructor(options: ResolvedOptions, handlers: PoolHandlers) {
    this.#options = options;
    this.#handlers = handlers;
    this.servers = options.urls.map((url) => ({ url, failures: 0, ejections: 0, ejectedUntil: 0 }));
    this.slots = Array.from({ length: options.connections }, (_, index) => ({
      index,
      server: this.servers[index % this.servers.length],
      connection: undefined,
      attempts: 0,
      connectedAt: 0,
      retrying: false,
      reopen: undefined,
      wakeUp: undefined,
      handshakes: new Set(),
    }));
    this.#connectionHandlers = {
      frame: (connection, frame) => handlers.frame(connection, frame),
      closed: (connection, code, reason) => this.#onClosed(connection, code, reason),
    };
  }

  /** Sockets open and handshaken. */
  get openCount(): number {
    let open = 0;
    for (const slot of this.slots) if (slot.connection?.open) open++;
    return open;
  }

  /** Slots being reopened. */
  get retryingCount(): number {
    let retrying = 0;
    for (const slot of this.slots) if (slot.retrying) retrying++;
    return retrying;
  }

  /** The open sockets, in slot order. */
  *connections(): Iterable<Connection> {
    for (const slot of this.slots) if (slot.connection?.open) yield slot.connection;
  }

  /**
   * The open socket with the fewest calls keeping the server busy; the first
   * on a tie. With one socket nothing is counted.
   */
  leastBusy(): Connection | undefined {
    const slots = this.slots;
    if (slots.length === 1) {
      const only = slots[0].connection;
      return only?.open ? only : undefined;
    }
    let best: Connection | undefined;
    let bestLoad = Infinity;
    for (const slot of slots) {
      const connection = slot.connection;
      if (!connection?.open) continue;
      const load = connection.busy;
      if (load < bestLoad) {
        best = connection;
        bestLoad = load;
        if (load === 0) break;
      }
    }
    return best;
  }

  /**
   * Opens one slot's socket (one attempt). Resolves once it is handshaken and
   * in the slot; rejects with the attempt's `RealmError`, or `ABORTED` when
   * {@linkcode Pool.closeAll} came first.
   */
  async open(slot: Slot): Promise<void> {
    const generation = this.#generation;
    const attempt = new AbortController();
    slot.handshakes.add(attempt);
    const options = this.#options;
    try {
      const connection = await openConnection(
        {
          url: slot.server.url,
          WebSocket: this.WebSocket!,
          apiKey: options.apiKey,
          tenantId: this.#handlers.tenantId(),
          connectTimeout: options.connectTimeout,
          heartbeatInterval: options.heartbeatInterval,
          heartbeatTimeout: options.heartbeatTimeout,
          abandonedCallTtl: options.streamIdleTimeout,
          signal: attempt.signal,
          log: (message, data) => this.#handlers.log(message, data),
          closing: (closed) => this.#track(closed),
        },
        this.#connectionHandlers,
      );
      if (generation !== this.#generation || slot.connection?.open) {
        // closeAll() came first, or the slot was filled meanwhile: this socket is surplus.
        this.#track(connection.close(1000, "client disconnect"));
        throw cancelledConnect();
      }
      const refusal = this.#handlers.accept(slot, connection);
      if (refusal) {
        this.#track(connection.close(1000, "not used"));
        throw refusal;
      }
      const server = slot.server;
      server.failures = server.ejections = server.ejectedUntil = 0;
      slot.connection = connection;
      slot.connectedAt = performance.now();
      this.#handlers.opened(slot);
    } catch (error) {
      const aborted = (error as RealmError)?.code === "ABORTED";
      if (generation === this.#generation && !aborted) this.#failed(slot.server);
      throw error;
    } finally {
      slot.handshakes.delete(attempt);
    }
    // The server is back: its other sockets waiting out a backoff or an ejection try now.
    for (const other of this.slots) if (other.server === slot.server) other.wakeUp?.();
  }

  /** The server's state, for `stats()`. */
  serverState(server: Server): "up" | "down" | "ejected" {
    if (this.slots.some((slot) => slot.server === server && slot.connection?.open)) return "up";
    return server.ejectedUntil > performance.now() ? "ejected" : "down";
  }

  /** Counts a failed attempt; a server of a list that keeps failing is ejected. */
  #failed(server: Server): void {
    if (++server.failures < EJECT_AFTER || this.servers.length === 1) return;
    server.failures = 0;
    const options = this.#options;
    const period = Math.min(
      options.maxReconnectInterval,
      Math.max(options.reconnectInterval, 1) * 2 ** Math.min(++server.ejections, 30),
    );
    server.ejectedUntil = performance.now() + period;
    this.#handlers.log("server ejected", { url: server.url, ms: period });
  }

  /**
   * Reopens a slot with backoff until it opens, a fatal error, the attempt
   * limit, or {@linkcode Pool.closeAll}; with `now`, the first attempt has no
   * delay. Already at it, it only notes the request: a socket it opened that
   * drops before it ends (a `connected` listener called `reconnect()`) is reopened.
   */
  async reconnect(slot: Slot, now = false): Promise<void> {
    if (slot.connection?.open) return;
    if (slot.retrying) {
      slot.reopen = now || slot.reopen === "now" ? "now" : "later";
      return;
    }
    slot.retrying = true;
    const generation = this.#generation;
    const options = this.#options;
    const current = () => generation === this.#generation;
    // Claimed now, started after the caller's own events (a drop is reported before its retry).
    await undefined;
    try {
      while (current()) {
        // An ejected server is not tried until its ejection ends; waiting it out is no attempt.
        const ejected = slot.server.ejectedUntil - performance.now();
        if (ejected > 0) {
          await this.#wait(slot, ejected);
          continue;
        }
        if (slot.attempts >= options.maxReconnectAttempts) {
          slot.retrying = false;
          return this.#handlers.gaveUp(
            slot,
            new RealmError(
              "CONNECTION_CLOSED",
              `Gave up reconnecting to ${slot.server.url} after ${slot.attempts} attempts ` +
                "(maxReconnectAttempts). Call connect() to try again.",
              { sent: false },
            ),
          );
        }
        const attempt = ++slot.attempts;
        const delay = now ? 0 : reconnectDelay(
          attempt,
          options.reconnectInterval,
          options.maxReconnectInterval,
        );
        now = false;
        this.#handlers.reconnecting(slot, attempt, delay);
        await this.#wait(slot, delay);
        if (!current()) return;
        if (slot.server.ejectedUntil > performance.now()) continue;
        this.#handlers.connecting(slot, attempt);
        try {
          slot.reopen = undefined;
          await this.open(slot);
          const reopen = slot.reopen;
          slot.reopen = undefined;
          // Its socket dropped before this loop ended, and asked for a new one.
          if (reopen !== undefined && !slot.connection?.open && current()) {
            now = reopen === "now";
            continue;
          }
          slot.retrying = false;
          return;
        } catch (error) {
          if (!current()) return;
          const realmError = error instanceof RealmError ? error : cancelledConnect();
          const fatal = FATAL.has(realmError.code);
          this.#handlers.attemptFailed(slot, realmError, fatal);
          if (fatal) {
            slot.retrying = false;
            return this.#handlers.gaveUp(slot, realmError);
          }
        }
      }
    } finally {
      if (current()) slot.retrying = false;
    }
  }

  /** Ends every backoff wait now, with the attempt counts reset (`connect()`, `online`). */
  retryNow(): void {
    for (const slot of this.slots) {
      slot.attempts = 0;
      slot.wakeUp?.();
    }
  }

  /**
   * Closes every socket and cancels every handshake and reconnect wait; the
   * sockets' `closed` handlers run before it returns. Resolves once the
   * sockets have closed (or their close grace ran out).
   */
  closeAll(code = 1000, reason = "client disconnect"): Promise<void> {
    this.#generation++;
    for (const slot of this.slots) {
      const connection = slot.connection;
      slot.retrying = false;
      slot.wakeUp?.();
      slot.wakeUp = undefined;
      for (const handshake of slot.handshakes) handshake.abort();
      if (connection) this.#track(connection.close(code, reason));
    }
    return this.settled();
  }

  /** Closes one slot's socket as dead (a failed send, a browser gone offline). */
  drop(slot: Slot, code: number, reason: string): void {
    const connection = slot.connection;
    if (connection) this.#track(connection.close(code, reason, 0));
  }

  /** Resolves once every socket the pool closed has finished closing. */
  async settled(): Promise<void> {
    while (this.#closing.size > 0) await Promise.all(this.#closing);
  }

  #track(closed: Promise<void>): void {
    this.#closing.add(closed);
    void closed.then(() => this.#closing.delete(closed));
  }

  #wait(slot: Slot, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        slot.wakeUp = undefined;
        resolve();
      }
      slot.wakeUp = done;
    });
  }

  #onClosed(connection: Connection, code: number, reason: string): void {
    const slot = this.slots.find((candidate) => candidate.connection === connection);
    if (!slot) return;
    slot.connection = undefined;
    // A connection that dropped soon after opening does not reset the backoff.
    if (performance.now() - slot.connectedAt >= 2 * this.#options.reconnectInterval) {
      slot.attempts = 0;
    }
    this.#handlers.closed(slot, connection, code, reason);
  }
}
