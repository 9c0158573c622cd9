/**
 * Calls to sockets and frames to calls: the queue of calls waiting for a
 * socket, sending on the least busy one, routing each frame by its id, the
 * rate-limit retry, and what a dropped socket means for the calls it carried
 * (re-sent when their answer has not begun, within one retry budget).
 *
 * @module
 */

import { retryDelay } from "./backoff.ts";
import type { Call, CallEnd, CallRegistry } from "./calls.ts";
import type { Connection } from "./connection.ts";
import { parseRetryAfter, RealmError } from "./errors.ts";
import { RetryBudget } from "./retry_budget.ts";
import {
  callBody,
  callFrame,
  readToken,
  type RealmFunction,
  type ServerFrame,
} from "./protocol.ts";

/** What the dispatcher needs from its owner. */
export interface DispatchContext {
  /**
   * The open socket with room to send on, if any; not one on the server `avoid` while another
   * server has a socket open.
   */
  pick(avoid?: string): Connection | undefined;
  /** Whether any socket is open (a call that finds none with room then waits for room). */
  connected(): boolean;
  /** Whether a call without a socket may wait for one (the client is connecting or running). */
  mayWait(): boolean;
  /** The most calls that may wait. */
  maxQueuedCalls: number;
  /** Reports what is not one call's outcome (as an `error` event). */
  report(error: RealmError): void;
  /** Closes a socket that failed to send. */
  dropSocket(connection: Connection): void;
  log(message: string, data?: Record<string, unknown>): void;
}

/**
 * Functions that change nothing on the server: one it may have been running when its socket
 * closed is re-sent. A pipeline's steps may act on the world: only one marked `safeToRepeat`.
 */
const READ_ONLY: ReadonlySet<RealmFunction> = new Set(["generate", "health", "metadata"]);

/**
 * Re-sends of one call after sockets closed under it: each server of a list of three once. A
 * call whose servers keep dying under it may be what kills them, and is not sent again.
 */
export const MAX_RESENDS = 3;

/** Re-sends and withheld retries, as `stats()` counts them. */
export interface RetryCounts {
  /** Calls re-sent after a socket closed under them. */
  resentCalls: number;
  /** Retries the budget withheld (the call failed with its own error). */
  retriesWithheld: number;
}

/** Routes calls and frames; owns the queue of calls waiting for a socket. */
export class Dispatcher {
  /** Calls waiting for a socket, oldest first (read-only outside this module). */
  readonly queue: Call[] = [];
  /** The client-wide budget of retries that add load (see `retry_budget.ts`). */
  readonly budget: RetryBudget = new RetryBudget();
  /** Re-sends and withheld retries by the server the call left: `""` for all servers. */
  readonly counts: Map<string, RetryCounts> = new Map();
  readonly #calls: CallRegistry;
  readonly #context: DispatchContext;

  constructor(calls: CallRegistry, context: DispatchContext) {
    this.#calls = calls;
    this.#context = context;
  }

  /**
   * Sends a call on the least busy socket, queues it, or fails it when it cannot wait; `now`
   * spares a clock read to a caller that has just read it.
   */
  dispatch(call: Call, now?: number): void {
    if (call.settled) return;
    const connection = this.#context.pick(call.avoid);
    if (connection) return this.#send(call, connection, now);
    const connected = this.#context.connected();
    if (!connected && !this.#context.mayWait()) {
      return call.fail(
        new RealmError(
          "NOT_CONNECTED",
          `Cannot call ${call.spec.fn}: not connected. Call \`await client.connect()\` first.`,
          { requestId: call.id, sent: false },
        ),
      );
    }
    if (!connected && this.queue.length >= this.#context.maxQueuedCalls) {
      return call.fail(
        new RealmError(
          "QUEUE_FULL",
          `${this.queue.length} calls already wait for a connection: raise ` +
            "`maxQueuedCalls`, or wait.",
          { requestId: call.id, sent: false },
        ),
      );
    }
    call.waitsForServer = !connected;
    this.queue.push(call);
  }

  /** How many calls wait for a socket. */
  get queued(): number {
    return this.queue.length;
  }

  /**
   * Sends what waits, oldest first, while sockets have room. A call that must avoid a server may
   * wait while younger calls go; a call that cannot go anywhere means none can.
   */
  flush(): void {
    for (let i = 0; i < this.queue.length;) {
      const call = this.queue[i];
      const connection = this.#context.pick(call.avoid);
      if (!connection) {
        if (call.avoid === undefined) return;
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      this.#send(call, connection);
    }
  }

  /** A call ended: a queued one leaves the queue; an abandoned one stops counting as listened to. */
  ended(call: Call, end: CallEnd): void {
    const connection = call.connection as Connection | undefined;
    if (call.sent && connection) {
      if (end === "abandoned") connection.abandon(call.id);
      return;
    }
    const queued = this.queue.indexOf(call);
    if (queued >= 0) this.queue.splice(queued, 1);
  }

  /** Fails every call that waits for a socket (the client stopped or gave up). */
  failQueued(error: RealmError): void {
    for (const call of this.queue.splice(0)) call.fail(withRequest(error, call));
  }

  #send(call: Call, connection: Connection, now?: number): void {
    const body = callBody(call.spec.fn, call.spec.paramsJson);
    const frame = callFrame(call.id, body, connection.callTail);
    try {
      connection.send(call.id, frame, now);
    } catch (cause) {
      // The socket is closing: treat it as closed; the call was not sent.
      connection.settled(call.id);
      this.#context.log("send failed; closing the socket", { error: String(cause) });
      this.#context.dropSocket(connection);
      return this.dispatch(call);
    }
    call.sent = true;
    call.connection = connection;
    call.waitsForServer = false;
    call.avoid = undefined;
    call.attempts++;
  }

  /**
   * A frame arrived on an open socket. Any other than a token may have ended a call on it, so
   * leaving room there (with `pipelining`): a call waiting for some goes now.
   */
  frame(connection: Connection, frame: ServerFrame): void {
    if (frame.kind === "streaming") return this.#token(connection, frame.id, frame.data);
    this.#route(connection, frame);
    if (this.queue.length > 0) this.flush();
  }

  #token(connection: Connection, id: string, data: unknown): void {
    const call = this.#callOn(connection, id);
    if (!call) return this.#lateFrame(connection, id, false);
    const token = readToken(data);
    if (token !== undefined) return call.token(token);
    call.fail(
      new RealmError(
        "PROTOCOL_ERROR",
        `The server sent call ${id} a token that is not a string.`,
        { requestId: call.id, sent: true },
      ),
      "abandoned",
    );
  }

  #route(connection: Connection, frame: ServerFrame): void {
    switch (frame.kind) {
      case "complete": {
        const call = this.#callOn(connection, frame.id);
        if (!call) return this.#lateFrame(connection, frame.id, true);
        connection.settled(frame.id);
        this.budget.succeeded();
        return call.complete(frame.data, connection.frameAt);
      }
      case "cancelled":
      case "error": {
        const error = frame.kind === "error" ? frame.error : {
          code: "CANCELLED",
          message: "The server cancelled the call.",
        };
        if (frame.id === "unknown") return this.#unattributedError(connection, error);
        const call = this.#callOn(connection, frame.id);
        if (!call) return this.#lateFrame(connection, frame.id, true);
        connection.settled(frame.id);
        return this.#failed(call, serverError(error, frame.id));
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

  /**
   * A socket closed: its calls learn it now, not at their timeouts. The server reads one frame
   * at a time per socket and serves it to its end, so only the oldest call on the wire may have
   * been running; the calls behind it were never read. With `resend` (the client runs on), a
   * call whose answer has not begun goes to the front of the queue for another socket, another
   * server if one is open: one never read always (it is free), the one that may have been
   * running if it changes nothing on the server and the retry budget allows. A call that
   * delivered tokens fails: it is never restarted behind the caller's back.
   */
  socketClosed(connection: Connection, code: number, resend: boolean): void {
    const again: Call[] = [];
    let head = true;
    for (const id of connection.takeCalls()) {
      const call = this.#callOn(connection, id);
      const mayHaveRun = head;
      head = false;
      if (!call) continue;
      call.mayHaveRun ||= mayHaveRun;
      const what = `${call.spec.fn} (call ${id})`;
      const closed = `The connection to ${connection.url} closed (code ${code})`;
      let failure: string | undefined;
      if (call.tokens > 0) {
        failure = `${closed} after ${call.tokens} token(s) of ${what}: a stream is not ` +
          "restarted; call again for a new answer.";
      } else if (!resend) {
        failure = `${closed} before ${what} finished.` +
          (call.mayHaveRun ? " The server may have run it." : "");
      } else if (call.resends >= MAX_RESENDS) {
        failure = `${closed} under ${what} ${MAX_RESENDS + 1} times: it is not sent again ` +
          "(it may be what stops the servers).";
      } else if (mayHaveRun && !READ_ONLY.has(call.spec.fn) && !call.spec.safeToRepeat) {
        failure = `${closed} while the server may have been running ${what}: not re-sent ` +
          "(pass `safeToRepeat: true` if it may run twice).";
      } else if (mayHaveRun && !this.#spend(connection.url)) {
        failure = `${closed} before ${what} finished. ${WITHHELD}`;
      }
      if (failure !== undefined) {
        call.fail(
          new RealmError("CONNECTION_CLOSED", failure, {
            requestId: id,
            sent: call.mayHaveRun,
            delivered: call.tokens > 0,
          }),
        );
        continue;
      }
      call.resends++;
      call.avoid = connection.url;
      call.waitsForServer = true;
      call.resetForRetry();
      this.#count(connection.url, "resentCalls");
      this.#context.log("re-sending a call", {
        requestId: id,
        url: connection.url,
        resends: call.resends,
      });
      again.push(call);
    }
    this.queue.unshift(...again);
  }

  /** A retry that adds load: counted, and whether the budget lets it go (else counted withheld). */
  #spend(url: string): boolean {
    if (this.budget.spend()) return true;
    this.#count(url, "retriesWithheld");
    this.#context.log("retry withheld", { url });
    return false;
  }

  #count(url: string, what: keyof RetryCounts): void {
    for (const key of [url, ""]) {
      let counts = this.counts.get(key);
      if (!counts) this.counts.set(key, counts = { resentCalls: 0, retriesWithheld: 0 });
      counts[what]++;
    }
  }

  /** The unsettled call with this id, if it was sent on this socket. */
  #callOn(connection: Connection, id: string): Call | undefined {
    const call = this.#calls.get(id);
    return call?.connection === connection ? call : undefined;
  }

  /**
   * A frame for a call that is no longer listened to is dropped silently,
   * and a terminal one frees its socket; a frame for an id this client never
   * gave out is reported.
   */
  #lateFrame(connection: Connection, id: string, terminal: boolean): void {
    if (connection.carries(id)) {
      if (terminal) connection.settled(id);
      else connection.seen(id);
      return;
    }
    if (this.#calls.issued(id)) return;
    this.#protocolError(`Ignored a frame for call id ${JSON.stringify(id)}, not pending.`);
  }

  /**
   * The server answers a frame it cannot parse with `id: "unknown"`. It
   * serves a socket's frames in order, so the error belongs to the oldest
   * call on that socket still waiting for its answer.
   */
  #unattributedError(
    connection: Connection,
    error: { code: string; message: string; details?: unknown },
  ): void {
    const id = connection.oldestListening();
    const realmError = serverError(error, id);
    this.#context.report(realmError);
    if (id === undefined) return;
    connection.settled(id);
    this.#callOn(connection, id)?.fail(realmError);
  }

  /**
   * A server error for a call: a rate limit is retried when the call has retries left, the wait
   * fits before its deadline (which no retry moves) and the retry budget allows; anything else
   * fails it.
   */
  #failed(call: Call, error: RealmError): void {
    if (error.code === "RATE_LIMIT_EXCEEDED" && call.retriesLeft > 0) {
      const limit = call.spec.maxRetries - call.retriesLeft + 1;
      const delay = retryDelay(error.retryAfter ?? 0, limit);
      if (performance.now() + delay < call.deadlineAt) {
        if (!this.#spend((call.connection as Connection).url)) {
          return call.fail(
            new RealmError(error.code, `${error.message} ${WITHHELD}`, {
              requestId: call.id,
              retryAfter: error.retryAfter,
              details: error.details,
              sent: true,
            }),
          );
        }
        call.retriesLeft--;
        call.resetForRetry();
        call.wake(delay, () => this.dispatch(call));
        // Logged once armed: a logger that stops the client then settles the call, and its wait.
        this.#context.log("rate limited; retrying", {
          requestId: call.id,
          delayMs: delay,
          retryAfter: error.retryAfter,
        });
        return;
      }
    }
    call.fail(error);
  }

  #protocolError(message: string): void {
    this.#context.log(message);
    this.#context.report(new RealmError("PROTOCOL_ERROR", message));
  }
}

const WITHHELD = "A retry was withheld: too many retries lately (the retry budget).";

/** The same error for one call: its request id and whether it was sent. */
export function withRequest(error: RealmError, call: Call): RealmError {
  return new RealmError(error.code, error.message, {
    requestId: call.id,
    sent: call.reachedServer,
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
