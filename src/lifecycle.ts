/**
 * The client's one connection state and the only place it changes. Every
 * other module reports what happened (a socket opened, all sockets are down,
 * `disconnect()` was called); this module decides the state, checks the move
 * against {@linkcode STATE_EDGES}, and announces it.
 *
 * @module
 */

import type { RealmError } from "./errors.ts";

/**
 * Where the client is in its life, as `client.state` reports it. Every change
 * fires `statechange` with `{ from, to, reason? }`; the moves allowed are
 * {@linkcode STATE_EDGES}.
 *
 * | state | means | entered with |
 * | --- | --- | --- |
 * | `idle` | Never connected, or `disconnect()` was called. | `disconnected` for each socket that was open |
 * | `connecting` | `connect()` is opening the sockets. | `connecting` (`attempt: 0`) |
 * | `open` | At least one socket is open and handshaken. | `connected` |
 * | `reconnecting` | Every socket dropped and at least one is being reopened with backoff; calls made now wait. | `disconnected` (`willReconnect: true`), then `reconnecting` |
 * | `closed` | Gave up: `connect()` failed, reconnect attempts ran out, a key was refused, or a drop with `reconnect` off. `connect()` starts over. | `error` with the reason (also `statechange`'s `reason`) |
 *
 * A method called from a listener of any of these events runs once the step
 * that fired the event is complete, so it meets a settled client.
 *
 * @example
 * ```ts
 * import type { ConnectionState } from "@realm-ai/ws-client";
 * const usable = (state: ConnectionState) => state === "open" || state === "reconnecting";
 * ```
 */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/**
 * The payload of the `statechange` event: the state left, the state entered,
 * and the error that caused the move when one did (a drop, a refusal).
 *
 * @example
 * ```ts
 * import type { StateChange } from "@realm-ai/ws-client";
 * const line = ({ from, to, reason }: StateChange) => `${from} → ${to} ${reason?.code ?? ""}`;
 * ```
 */
export interface StateChange {
  /** The state left. */
  from: ConnectionState;
  /** The state entered. */
  to: ConnectionState;
  /** Why, when an error caused the move. */
  reason?: RealmError;
}

/**
 * Every allowed move, by the state it leaves. `disconnect()` returns any
 * state to `"idle"`; only `connect()` (or `reconnect()`) leaves `"idle"` or
 * `"closed"`.
 *
 * @example
 * ```ts
 * import { STATE_EDGES } from "@realm-ai/ws-client";
 * STATE_EDGES.open.includes("reconnecting"); // true
 * ```
 */
export const STATE_EDGES: Readonly<Record<ConnectionState, readonly ConnectionState[]>> = Object
  .freeze({
    idle: to("connecting"),
    connecting: to("open", "reconnecting", "closed", "idle"),
    open: to("reconnecting", "closed", "idle"),
    reconnecting: to("open", "closed", "idle"),
    closed: to("connecting", "idle"),
  });

/** A frozen list of the states one may move to. */
function to(...states: ConnectionState[]): readonly ConnectionState[] {
  return Object.freeze(states);
}

/** What the sockets look like now, as the lifecycle needs to know it. */
export interface SocketSummary {
  /** Sockets open and handshaken. */
  open: number;
  /** Sockets being reopened (waiting out a backoff or handshaking). */
  retrying: number;
}

/**
 * The state machine. Async work started in one run (between `connect()` and
 * `disconnect()`) carries that run's number, {@linkcode Lifecycle.run}, and
 * checks it when it resumes: work of an older run is stale and must not
 * touch the client.
 */
export class Lifecycle {
  #state: ConnectionState = "idle";
  #run = 0;
  /** `connect()` is opening the sockets of a new run. */
  #connecting = false;
  readonly #announce: (change: StateChange) => void;

  /** @param announce Told of every move, after it is made. */
  constructor(announce: (change: StateChange) => void) {
    this.#announce = announce;
  }

  /** The current state. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** The current run's number; it changes on every start and stop. */
  get run(): number {
    return this.#run;
  }

  /** Between a start and a stop or a give-up: calls may wait for a socket, sockets reconnect. */
  get running(): boolean {
    return this.#state === "connecting" || this.#state === "open" ||
      this.#state === "reconnecting";
  }

  /** `connect()` is opening the sockets of a new run (the state may already be `"open"`). */
  get starting(): boolean {
    return this.#connecting;
  }

  /** `connect()` from `"idle"` or `"closed"`: a new run begins. */
  start(): number {
    this.#connecting = true;
    this.#run++;
    this.#move("connecting");
    return this.#run;
  }

  /** `connect()` finished opening the sockets (whether or not it succeeded). */
  started(sockets: SocketSummary, reason?: RealmError): void {
    this.#connecting = false;
    this.update(sockets, reason);
  }

  /** `disconnect()`: back to `"idle"`, and every piece of the old run is stale. */
  stop(): void {
    this.#connecting = false;
    this.#run++;
    this.#move("idle");
  }

  /** Gives up for good: `"closed"` until the next `connect()`. */
  giveUp(reason: RealmError): void {
    if (!this.running) return;
    this.#connecting = false;
    this.#run++;
    this.#move("closed", reason);
  }

  /**
   * Re-derives the state from the sockets after a socket opened, dropped or
   * gave up. While `connect()` is starting the state stays `"connecting"`:
   * `"open"` comes with the start's outcome, so it always means a socket is open.
   */
  update(sockets: SocketSummary, reason?: RealmError): void {
    if (!this.running || this.#connecting) return;
    if (sockets.open > 0) return this.#move("open");
    if (sockets.retrying > 0) return this.#move("reconnecting", reason);
    this.#run++;
    this.#move("closed", reason);
  }

  #move(to: ConnectionState, reason?: RealmError): void {
    const from = this.#state;
    if (from === to) return;
    if (!STATE_EDGES[from].includes(to)) {
      // A move outside the table is a bug in the client, not in the caller's code.
      throw new Error(`Realm client bug: state ${from} cannot move to ${to}`);
    }
    this.#state = to;
    this.#announce(reason ? { from, to, reason } : { from, to });
  }
}
