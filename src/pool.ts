/**
 * The client's sockets: one slot per `connections`, spread over the servers,
 * each opening and reopening its own socket with backoff; ejection of a server
 * that keeps failing; the least-busy pick. The pool decides which socket
 * carries a call and how a slot gets its socket back; whether the client runs
 * is its owner's decision (`connector.ts`), told through {@linkcode PoolReports}.
 *
 * A slot has at most one opener at a time (the first attempt of a run, or its
 * reconnect loop), so the pool never holds more than `connections` sockets. A
 * slot's state is complete before its report goes out: an owner that calls
 * back from a report finds the slot settled.
 *
 * @module
 */

import { reconnectDelay } from "./backoff.ts";
import {
  cancelledConnect,
  type CloseCause,
  type Connection,
  type ConnectionHandlers,
  openConnection,
} from "./connection.ts";
import { RealmError } from "./errors.ts";
import type { ServerFrame } from "./protocol.ts";
import { newPromise, settlers } from "./settlers.ts";
import type { ResolvedOptions } from "./validate.ts";
import type { ServerStats, WebSocketConstructor } from "./types.ts";

/**
 * One server of the list. After {@linkcode EJECT_AFTER} failed attempts in a
 * row over its sockets, a server of a list is ejected: none of its sockets
 * tries again until the ejection ends, and each ejection in a row lasts twice
 * the one before. An explicit request (`connect()`, `reconnect()`, the
 * browser's `online`) ends every ejection.
 */
interface Server {
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

/** A socket of the pool as its reports name it: the `socket` and `url` of events. */
export interface SocketRef {
  /** Its index among `connections`, from 0. */
  readonly index: number;
  /** The server it connects to. */
  readonly url: string;
}

/** One socket of the pool. Only this module reads or changes it. */
interface Slot extends SocketRef {
  readonly server: Server;
  /** The open, handshaken socket, if any. */
  connection: Connection | undefined;
  /** An attempt is under way (the handshake), from a run's start or from its loop. */
  opening: boolean;
  /** Its reconnect loop runs (waiting out a backoff or an ejection, or attempting). */
  looping: boolean;
  /** Attempts of its loop since the last stable connection, for the backoff and the limit. */
  attempts: number;
  /** When its socket last opened, to tell a stable connection from a flapping one. */
  connectedAt: number;
  /** Asked to try now: the loop skips its next wait, wherever it is when asked. */
  now: boolean;
  /** Ends the current wait early. */
  wakeUp: (() => void) | undefined;
  /** Its handshakes in progress, for `closeAll()` to cancel. */
  readonly handshakes: Set<AbortController>;
  /** Rounds waiting for the outcome of this slot's next attempt (see {@linkcode Pool.round}). */
  readonly rounds: Set<Round>;
}

/** "Try every socket now": settles with the first socket open, or once every attempt failed. */
interface Round {
  readonly promise: Promise<void>;
  /** Slots whose next attempt's outcome the round still waits for. */
  readonly waiting: Set<Slot>;
  resolve(value?: unknown): void;
  reject(error: unknown): void;
}

/** What the pool tells its owner. Each report is made once the slot's state is complete. */
export interface PoolReports {
  /** A socket completed its handshake and was accepted. */
  opened(socket: SocketRef, connection: Connection): void;
  /** Whether a freshly handshaken socket may be used; an error closes it (a tenant mismatch). */
  accept(socket: SocketRef, connection: Connection): RealmError | undefined;
  /** A frame arrived on an open socket. */
  frame(connection: Connection, frame: ServerFrame): void;
  /** An open socket closed, and why. */
  closed(
    socket: SocketRef,
    connection: Connection,
    code: number,
    reason: string,
    cause: CloseCause,
  ): void;
  /** A reconnect attempt is scheduled after `delay` ms. */
  reconnecting(socket: SocketRef, attempt: number, delay: number): void;
  /** A reconnect attempt starts now. */
  connecting(socket: SocketRef, attempt: number): void;
  /** An attempt failed (a run's first one, or a reconnect). */
  failed(socket: SocketRef, error: RealmError): void;
  /** A slot stopped reconnecting: its attempts are used up, or the error is fatal. */
  gaveUp(socket: SocketRef, error: RealmError): void;
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
 * The sockets. Each pool generation (from one {@linkcode Pool.closeAll} to
 * the next) owns its attempts: one that finishes after `closeAll()` closes its
 * socket instead of keeping it, and reports nothing.
 */
export class Pool {
  readonly #slots: readonly Slot[];
  readonly #servers: readonly Server[];
  readonly #options: ResolvedOptions;
  readonly #reports: PoolReports;
  readonly #connectionHandlers: ConnectionHandlers;
  /** Rounds not settled yet, wherever they wait (on a slot, or on an attempt under way). */
  readonly #rounds = new Set<Round>();
  /** Sockets still closing, each with its generation, so that `settled()` can wait for them. */
  readonly #closing = new Map<Promise<void>, number>();
  #generation = 0;
  /** The implementation sockets are opened with; set by the owner before the first attempt. */
  WebSocket: WebSocketConstructor | undefined;

  constructor(options: ResolvedOptions, reports: PoolReports) {
    this.#options = options;
    this.#reports = reports;
    this.#servers = options.urls.map((url) => ({
      url,
      failures: 0,
      ejections: 0,
      ejectedUntil: 0,
    }));
    this.#slots = Array.from({ length: options.connections }, (_, index) => {
      const server = this.#servers[index % this.#servers.length];
      return {
        index,
        server,
        url: server.url,
        connection: undefined,
        opening: false,
        looping: false,
        attempts: 0,
        connectedAt: 0,
        now: false,
        wakeUp: undefined,
        handshakes: new Set(),
        rounds: new Set(),
      };
    });
    this.#connectionHandlers = {
      frame: (connection, frame) => reports.frame(connection, frame),
      closed: (connection, code, reason, cause) => this.#onClosed(connection, code, reason, cause),
    };
  }

  /** Sockets open and handshaken. */
  get openCount(): number {
    let open = 0;
    for (const slot of this.#slots) if (slot.connection?.open) open++;
    return open;
  }

  /** Slots whose reconnect loop runs: a socket is coming back. */
  get retryingCount(): number {
    let retrying = 0;
    for (const slot of this.#slots) if (slot.looping) retrying++;
    return retrying;
  }

  /** The open sockets, in slot order. */
  *connections(): Iterable<Connection> {
    for (const slot of this.#slots) if (slot.connection?.open) yield slot.connection;
  }

  /**
   * The open socket with the fewest calls keeping the server busy and room
   * for one more (under `pipelining`); ties are broken at random, so equal
   * sockets share the load. Not one on the server `avoid` (where a call's
   * socket just closed) while another server has a socket open.
   */
  leastBusy(avoid?: string): Connection | undefined {
    const slots = this.#slots;
    const room = this.#options.pipelining;
    if (slots.length === 1) {
      const only = slots[0].connection;
      return only?.open && (room === Infinity || only.busy < room) ? only : undefined;
    }
    if (avoid !== undefined && !slots.some((s) => s.url !== avoid && s.connection?.open)) {
      avoid = undefined;
    }
    let best: Connection | undefined;
    let bestLoad = Infinity;
    let ties = 0;
    for (const slot of slots) {
      const connection = slot.connection;
      if (!connection?.open || slot.url === avoid) continue;
      const load = connection.busy;
      if (load >= room || load > bestLoad) continue;
      if (load < bestLoad) {
        best = connection;
        bestLoad = load;
        ties = 1;
      } else if (Math.random() * ++ties < 1) best = connection;
    }
    return best;
  }

  /** Each server with its sockets and calls, in the order given, for `stats()`. */
  summary(): Omit<ServerStats, "resentCalls" | "retriesWithheld">[] {
    const now = performance.now();
    return this.#servers.map((server) => {
      let openConnections = 0, callsOnTheWire = 0;
      for (const slot of this.#slots) {
        const connection = slot.connection;
        if (slot.server !== server || !connection?.open) continue;
        openConnections++;
        connection.forgetAbandoned();
        callsOnTheWire += connection.busy;
      }
      const state: ServerStats["state"] = openConnections > 0
        ? "up"
        : server.ejectedUntil > now
        ? "ejected"
        : "down";
      return { url: server.url, state, openConnections, callsOnTheWire, failures: server.failures };
    });
  }

  /**
   * A run begins: every slot starts with a clean record (no attempts, no
   * ejection) and makes one attempt, whose outcome is reported (`opened` or
   * `failed`). Returns how many attempts it started.
   */
  openAll(): number {
    let started = 0;
    for (const server of this.#servers) this.#forgive(server);
    for (const slot of this.#slots) {
      slot.attempts = 0;
      if (slot.connection?.open || slot.opening || slot.looping) continue;
      started++;
      this.#attempt(slot).catch(() => {});
    }
    return started;
  }

  /**
   * Every slot without a socket gets it back: a loop starts where none runs,
   * with no first delay when `now`. Slots already reopening are left alone.
   */
  reopenDown(now: boolean): void {
    for (const slot of this.#slots) this.#reconnect(slot, now);
  }

  /**
   * Tries every socket now (`connect()` or `reconnect()` while reconnecting,
   * the browser's `online`): ejections end, attempt counts reset, every wait
   * ends at once, and a slot in the middle of an attempt tries again at once
   * if it fails. Resolves when a socket is open (at once if one is); rejects
   * with the last error once each slot's next attempt has failed.
   */
  round(): Promise<void> {
    for (const server of this.#servers) this.#forgive(server);
    for (const slot of this.#slots) slot.attempts = 0;
    if (this.openCount > 0) {
      this.reopenDown(true);
      return Promise.resolve();
    }
    const promise = newPromise<void>();
    const round: Round = { promise, waiting: new Set(this.#slots), ...settlers };
    this.#rounds.add(round);
    for (const slot of this.#slots) {
      slot.rounds.add(round);
      this.#reconnect(slot, true);
    }
    return promise;
  }

  /** Closes every open socket for `reconnect()`: each reopens at once. */
  dropAll(): void {
    for (const slot of this.#slots) {
      const connection = slot.connection;
      if (connection) this.#track(connection.close(1000, "client reconnect", 0, "reconnect"));
    }
  }

  /** Closes every open socket as dead (the browser went offline): each reconnects with backoff. */
  dropAllDead(code: number, reason: string): void {
    for (const connection of [...this.connections()]) this.drop(connection, code, reason);
  }

  /** Closes one socket as dead (a failed send): its slot reconnects with backoff. */
  drop(connection: Connection, code: number, reason: string): void {
    this.#track(connection.close(code, reason, 0, "dropped"));
  }

  /**
   * Closes every socket and cancels every handshake, wait and round; the
   * sockets' `closed` reports run before it returns. Rounds reject with
   * `error`, or with `ABORTED` when none is given (a `disconnect()`: a
   * cancellation nobody awaits is no unhandled rejection). Resolves once the
   * sockets have closed (or their close grace ran out).
   */
  closeAll(reason: string, error?: RealmError): Promise<void> {
    const ended = this.#generation++;
    for (const slot of this.#slots) {
      const connection = slot.connection;
      slot.looping = slot.opening = slot.now = false;
      slot.wakeUp?.();
      slot.wakeUp = undefined;
      for (const handshake of slot.handshakes) handshake.abort();
      slot.rounds.clear();
      if (connection) this.#track(connection.close(1000, reason, undefined, "halt"), ended);
    }
    for (const round of this.#rounds) {
      if (!error) round.promise.catch(() => {});
      round.reject(error ?? cancelledConnect());
    }
    this.#rounds.clear();
    // Only what this generation closes: the next run's closes (a stalled server's handshakes,
    // closed one after another) must not keep a disconnect() waiting.
    return this.settled(ended);
  }

  /**
   * Resolves once every socket the pool closed has finished closing: of every generation, or of
   * those up to `generation`.
   */
  async settled(generation = Infinity): Promise<void> {
    for (;;) {
      const closing = [...this.#closing].filter(([, g]) => g <= generation).map(([p]) => p);
      if (closing.length === 0) return;
      await Promise.all(closing);
    }
  }

  /**
   * One attempt for a slot: opens a socket, runs the handshake, asks the owner
   * to accept it, and keeps it. The slot is complete before `opened` or
   * `failed` is reported. Rejects with the attempt's `RealmError` (nothing is
   * reported for an attempt made stale by `closeAll()`).
   */
  async #attempt(slot: Slot): Promise<void> {
    const generation = this.#generation;
    const handshake = new AbortController();
    // This attempt answers the rounds asked for so far, and any "now".
    const rounds = [...slot.rounds];
    slot.rounds.clear();
    slot.now = false;
    slot.opening = true;
    slot.handshakes.add(handshake);
    const options = this.#options;
    let connection: Connection;
    try {
      connection = await openConnection(
        {
          url: slot.url,
          WebSocket: this.WebSocket!,
          apiKey: options.apiKey,
          tenantId: this.#reports.tenantId(),
          connectTimeout: options.connectTimeout,
          heartbeatInterval: options.heartbeatInterval,
          heartbeatTimeout: options.heartbeatTimeout,
          abandonedCallTtl: options.streamIdleTimeout,
          signal: handshake.signal,
          log: (message, data) => this.#reports.log(message, data),
          closing: (closed) => this.#track(closed, generation),
        },
        this.#connectionHandlers,
      );
      slot.handshakes.delete(handshake);
      if (generation !== this.#generation) {
        this.#track(connection.close(1000, "client disconnect"), generation);
        throw cancelledConnect();
      }
      const refusal = this.#reports.accept(slot, connection);
      if (refusal) {
        this.#track(connection.close(1000, "not used"));
        throw refusal;
      }
    } catch (cause) {
      slot.handshakes.delete(handshake);
      const error = cause instanceof RealmError ? cause : cancelledConnect();
      if (generation !== this.#generation) throw error;
      slot.opening = false;
      this.#failed(slot.server);
      this.#roundsFailed(rounds, slot, error);
      this.#reports.failed(slot, error);
      // A round asked for during a run's first attempt: that attempt did not answer it, so the
      // slot tries again now (its loop, when it has one, does so by itself).
      if (generation === this.#generation && slot.now) this.#reconnect(slot, true);
      throw error;
    }
    slot.opening = slot.looping = slot.now = false;
    slot.connection = connection;
    slot.connectedAt = performance.now();
    this.#forgive(slot.server);
    // Rounds are answered before the report: one a listener starts from it waits for its own.
    this.#resolveRounds();
    this.#reports.opened(slot, connection);
    // The server is back: its other sockets waiting out a backoff or an ejection try now.
    for (const other of this.#slots) if (other.server === slot.server) other.wakeUp?.();
  }

  /**
   * Reopens a slot with backoff until it opens, a fatal error, the attempt
   * limit, or {@linkcode Pool.closeAll}; with `now`, the first attempt has no
   * delay. Does nothing when the slot is open or already being reopened (a
   * `now` then only asks its loop to hurry).
   */
  #reconnect(slot: Slot, now: boolean): void {
    if (slot.connection?.open) return;
    if (now) {
      slot.now = true;
      slot.wakeUp?.();
    }
    if (slot.looping || slot.opening) return;
    slot.looping = true;
    void this.#loop(slot, this.#generation);
  }

  async #loop(slot: Slot, generation: number): Promise<void> {
    const options = this.#options;
    const current = () => generation === this.#generation && slot.looping;
    // Started after the caller's own reports (a drop is reported before its retry).
    await undefined;
    while (current()) {
      // An ejected server is not tried until its ejection ends; waiting it out is no attempt.
      const ejected = slot.server.ejectedUntil - performance.now();
      if (ejected > 0 && !slot.now) {
        await this.#wait(slot, ejected);
        continue;
      }
      if (slot.attempts >= options.maxReconnectAttempts) {
        return this.#giveUp(
          slot,
          new RealmError(
            "CONNECTION_CLOSED",
            `Gave up reconnecting to ${slot.url} after ${slot.attempts} attempts ` +
              "(maxReconnectAttempts). Call connect() to try again.",
            { sent: false },
          ),
        );
      }
      const attempt = ++slot.attempts;
      const delay = slot.now
        ? 0
        : reconnectDelay(attempt, options.reconnectInterval, options.maxReconnectInterval);
      this.#reports.reconnecting(slot, attempt, delay);
      // A listener may have stopped the pool, or asked for now, meanwhile.
      if (!current()) return;
      if (delay > 0 && !slot.now) {
        await this.#wait(slot, delay);
        if (!current()) return;
        if (slot.server.ejectedUntil > performance.now() && !slot.now) continue;
      }
      this.#reports.connecting(slot, attempt);
      if (!current()) return;
      try {
        // Its success ends the loop (the slot is complete before `opened` is reported).
        return await this.#attempt(slot);
      } catch (error) {
        if (!current()) return;
        if (FATAL.has((error as RealmError).code)) return this.#giveUp(slot, error as RealmError);
      }
    }
  }

  #giveUp(slot: Slot, error: RealmError): void {
    slot.looping = slot.now = false;
    this.#roundsFailed([...slot.rounds], slot, error);
    slot.rounds.clear();
    this.#reports.gaveUp(slot, error);
  }

  /** Counts a failed attempt; a server of a list that keeps failing is ejected. */
  #failed(server: Server): void {
    if (++server.failures < EJECT_AFTER || this.#servers.length === 1) return;
    server.failures = 0;
    const options = this.#options;
    const period = Math.min(
      options.maxReconnectInterval,
      Math.max(options.reconnectInterval, 1) * 2 ** Math.min(++server.ejections, 30),
    );
    server.ejectedUntil = performance.now() + period;
    this.#reports.log("server ejected", { url: server.url, ms: period });
  }

  #forgive(server: Server): void {
    server.failures = server.ejections = server.ejectedUntil = 0;
  }

  /** A slot's attempt failed: each round it answered for stops waiting for it. */
  #roundsFailed(rounds: Round[], slot: Slot, error: RealmError): void {
    for (const round of rounds) {
      round.waiting.delete(slot);
      if (round.waiting.size === 0 && this.openCount === 0) {
        this.#dropRound(round);
        round.reject(error);
      }
    }
  }

  /** A socket is open: every round still waiting is answered. */
  #resolveRounds(): void {
    for (const round of this.#rounds) round.resolve();
    this.#rounds.clear();
    for (const slot of this.#slots) slot.rounds.clear();
  }

  #dropRound(round: Round): void {
    this.#rounds.delete(round);
    for (const slot of this.#slots) slot.rounds.delete(round);
  }

  #track(closed: Promise<void>, generation = this.#generation): void {
    this.#closing.set(closed, generation);
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

  #onClosed(connection: Connection, code: number, reason: string, cause: CloseCause): void {
    const slot = this.#slots.find((candidate) => candidate.connection === connection);
    if (!slot) return;
    slot.connection = undefined;
    // A connection that dropped soon after opening does not reset the backoff.
    if (performance.now() - slot.connectedAt >= 2 * this.#options.reconnectInterval) {
      slot.attempts = 0;
    }
    this.#reports.closed(slot, connection, code, reason, cause);
  }

  /**
   * Starts a slot's reconnect loop after its socket closed (the owner decides
   * whether it should); with `now`, no first delay.
   */
  reconnect(socket: SocketRef, now: boolean): void {
    this.#reconnect(this.#slots[socket.index], now);
  }
}
