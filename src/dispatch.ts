/**
 * Calls to sockets and frames to calls: the queue of calls waiting for a
 * socket, sending on the least busy one, routing each frame by its id, the
 * rate-limit retry, and what a dropped socket means for the calls it carried.
 *
 * @module
 */

import { retryDelay } from "./backoff.ts";
import type { Call, CallEnd, CallRegistry } from "./calls.ts";
import type { Connection } from "./connection.ts";
import { parseRetryAfter, RealmError } from "./errors.ts";
import {
  callBody,
  callFrame,
  readToken,
  type RealmFunction,
  type ServerFrame,
} from "./protocol.ts";

/** What the dispatcher needs from its owner. */
export interface DispatchContext {
  /** The open socket to send on, if any. */
  pick(): Connection | undefined;
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

/** `health` and `metadata` change nothing on the server, so a dropped one is resent once. */
const IDEMPOTENT: ReadonlySet<RealmFunction> = new Set(["health", "metadata"]);

/** Routes calls and frames; owns the queue of calls waiting for a socket. */
export class Dispatcher {
  /** Calls waiting for a socket, oldest first (read-only outside this module). */
  readonly queue: Call[] = [];
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
    const connection = this.#context.pick();
    if (connection) return this.#send(call, connection, now);
    if (!this.#context.mayWait()) {
      return call.fail(
        new RealmError(
          "NOT_CONNECTED",
          `Cannot call ${call.spec.fn}: the client is not connected. Call \`await client.connect()\` first.`,
          { requestId: call.id, sent: false },
        ),
      );
    }
    if (this.queue.length >= this.#context.maxQueuedCalls) {
      return call.fail(
        new RealmError(
          "QUEUE_FULL",
          `${this.queue.length} calls are already waiting for a connection (maxQueuedCalls). ` +
            "Wait for the client to reconnect, or raise `maxQueuedCalls`.",
          { requestId: call.id, sent: false },
        ),
      );
    }
    this.queue.push(call);
  }

  /** How many calls wait for a socket. */
  get queued(): number {
    return this.queue.length;
  }

  /** Sends what waits, while a socket is open. */
  flush(): void {
    while (this.queue.length > 0 && this.#context.pick()) this.dispatch(this.queue.shift()!);
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
  }

  /** A frame arrived on an open socket. */
  frame(connection: Connection, frame: ServerFrame): void {
    switch (frame.kind) {
      case "streaming": {
        const call = this.#callOn(connection, frame.id);
        if (!call) return this.#lateFrame(connection, frame.id, false);
        const token = readToken(frame.data);
        if (token !== undefined) return call.token(token);
        return call.fail(
          new RealmError(
            "PROTOCOL_ERROR",
            `The server sent a token for call ${frame.id} whose text is not a string.`,
            { requestId: call.id, sent: true },
          ),
          "abandoned",
        );
      }
      case "complete": {
        const call = this.#callOn(connection, frame.id);
        if (!call) return this.#lateFrame(connection, frame.id, true);
        connection.settled(frame.id);
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
   * A socket closed: its calls learn it now, not at their timeout. With a
   * reconnect coming, `health`/`metadata` go back to the queue once.
   */
  socketClosed(connection: Connection, code: number, willReconnect: boolean): void {
    const resend: Call[] = [];
    for (const id of connection.takeCalls()) {
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
    this.queue.unshift(...resend);
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
    this.#protocolError(`Ignored a frame for call id ${JSON.stringify(id)}, which is not pending.`);
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
   * A server error for a call: a rate limit is retried when the call has
   * retries left and the wait fits before its deadline; anything else fails it.
   */
  #failed(call: Call, error: RealmError): void {
    if (error.code === "RATE_LIMIT_EXCEEDED" && call.retriesLeft > 0) {
      const delay = retryDelay(error.retryAfter ?? 0);
      if (performance.now() + delay < call.deadlineAt) {
        call.retriesLeft--;
        call.resetForRetry();
        this.#context.log("rate limited; retrying", {
          requestId: call.id,
          delayMs: delay,
          retryAfter: error.retryAfter,
        });
        call.wake(delay, () => this.dispatch(call));
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

/** The same error for one call: its request id and whether it was sent. */
export function withRequest(error: RealmError, call: Call): RealmError {
  return new RealmError(error.code, error.message, {
    requestId: call.id,
    sent: call.sent,
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
