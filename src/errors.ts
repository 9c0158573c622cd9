/**
 * The one error type of the SDK, its codes, and the `retryAfter` rule.
 *
 * @module
 */

/**
 * Codes a {@linkcode RealmError} can carry. Server codes pass through
 * unchanged, including any code a newer server invents (hence the
 * `string & {}` member, which keeps editor completion for the known ones).
 * "Retry?" says whether the same call may succeed if made again unchanged.
 *
 * | code | from | means | retry? |
 * | --- | --- | --- | --- |
 * | `RATE_LIMIT_EXCEEDED` | server | The tenant's rate limit; `retryAfter` is always set (seconds, may be 0). | After `retryAfter`; `maxRetries` does it for you |
 * | `UNAUTHORIZED` | server | The API key was refused, or the server requires one and none was given. | No: fix the key |
 * | `DISPATCH_ERROR` | server | The server refused the call: unknown function or pipeline, bad parameters, no orchestrator. | No: fix the call |
 * | `INTERNAL_ERROR` | server | The server failed while running the call, or could not parse a frame (`id: "unknown"`). | Maybe: the server's fault |
 * | `CANCELLED` | server | The server cancelled the call (in the protocol; today's server never sends it). | Maybe |
 * | `INVALID_OPTIONS` | client | A constructor option is missing or out of range; the message names it. | No: fix the option |
 * | `INVALID_PARAMS` | client | A call's parameter or option is wrong, or cannot be sent as JSON; nothing was sent. | No: fix the call |
 * | `NOT_CONNECTED` | client | A call before `connect()`, after `disconnect()`, or after the client gave up. | After `connect()` |
 * | `CONNECTION_CLOSED` | client | The socket closed before the call finished, or `connect()` found no server; `sent` says whether it reached a socket. | Yes when `sent` is `false`; else only if the call is safe to run twice |
 * | `TIMEOUT` | client | No answer within `timeout`, a stream silent for `streamIdleTimeout`, or no handshake within `connectTimeout`. | Maybe, with a longer timeout |
 * | `ABORTED` | client | The call's `signal` aborted, or `disconnect()` cancelled `connect()`/`reconnect()`. | No: it was asked for |
 * | `PROTOCOL_ERROR` | client | A frame the client cannot use (an `error` event; other calls go on), a bad token, or a tenant id the server's rule refuses. | No: not a Realm server, or a bug |
 * | `QUEUE_FULL` | client | `maxQueuedCalls` calls already wait for a connection. | After a wait |
 * | `TENANT_MISMATCH` | client | With a list of servers: one assigned another tenant than the others (an `error` event); it is not used. | No: give every server the same key-to-tenant map |
 *
 * @example Branch on a code
 * ```ts
 * import type { RealmErrorCode } from "@realm-ai/ws-client";
 * const retryable = (code: RealmErrorCode) => code === "RATE_LIMIT_EXCEEDED";
 * retryable("TIMEOUT"); // false
 * ```
 */
export type RealmErrorCode =
  // Sent by the server.
  | "RATE_LIMIT_EXCEEDED"
  | "UNAUTHORIZED"
  | "DISPATCH_ERROR"
  | "INTERNAL_ERROR"
  | "CANCELLED"
  // Raised by the client.
  | "INVALID_OPTIONS"
  | "INVALID_PARAMS"
  | "NOT_CONNECTED"
  | "CONNECTION_CLOSED"
  | "TIMEOUT"
  | "ABORTED"
  | "PROTOCOL_ERROR"
  | "QUEUE_FULL"
  | "TENANT_MISMATCH"
  | (string & Record<never, never>);

/**
 * Extra facts an error may carry; every field is optional.
 *
 * @example
 * ```ts
 * import { RealmError, type RealmErrorInit } from "@realm-ai/ws-client";
 * const init: RealmErrorInit = { requestId: "42", sent: true };
 * new RealmError("TIMEOUT", "No answer within 1000 ms", init);
 * ```
 */
export interface RealmErrorInit {
  /** The id of the call the error belongs to, when it belongs to one. */
  requestId?: string;
  /** Seconds to wait before retrying (rate limits). */
  retryAfter?: number;
  /** Extra data from the server's `error.details`. */
  details?: unknown;
  /**
   * Whether the server may have seen the call. `false` means it never did, so
   * retrying cannot run it twice.
   */
  sent?: boolean;
  /** Whether any of the call's answer (a token) had arrived before it failed. */
  delivered?: boolean;
  /** The underlying error, when there is one. */
  cause?: unknown;
}

/**
 * Every failure the SDK reports: a server error frame, a refused option, a
 * timeout, an abort or a dropped connection. Branch on {@linkcode RealmError.code}.
 *
 * @example Handle a rate limit
 * ```ts
 * import { RealmError } from "@realm-ai/ws-client";
 *
 * function describe(error: unknown): string {
 *   if (error instanceof RealmError && error.code === "RATE_LIMIT_EXCEEDED") {
 *     return `retry in ${error.retryAfter} s`;
 *   }
 *   return String(error);
 * }
 * describe(new RealmError("RATE_LIMIT_EXCEEDED", "Rate limit exceeded", { retryAfter: 2 }));
 * ```
 */
export class RealmError extends Error {
  /** What went wrong, as a stable string to branch on. */
  readonly code: RealmErrorCode;
  /** The id of the call the error belongs to, when known. */
  readonly requestId?: string;
  /** Seconds to wait before retrying; always set on `RATE_LIMIT_EXCEEDED`. */
  readonly retryAfter?: number;
  /** The server's `error.details`, when it sent any. */
  readonly details?: unknown;
  /**
   * Whether the server may have seen the call: `false` means it never did
   * (never written to a socket, or written behind another call on a socket
   * that closed before the server read it), so making it again cannot run it
   * twice. When `true`, the server may have run it.
   */
  readonly sent?: boolean;
  /**
   * On `CONNECTION_CLOSED`: whether any of the call's answer had arrived (a
   * stream's tokens). Such a call is never re-sent by the client.
   */
  readonly delivered?: boolean;

  /**
   * Creates an error; the SDK makes these, you rarely need to.
   *
   * @param code A {@linkcode RealmErrorCode}.
   * @param message What happened and what to do about it.
   * @param init Optional facts: request id, retryAfter, details, sent, cause.
   */
  constructor(code: RealmErrorCode, message: string, init: RealmErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "RealmError";
    this.code = code;
    // Only the facts given: an absent one is no property at all.
    for (const key of ["requestId", "retryAfter", "details", "sent", "delivered"] as const) {
      if (init[key] !== undefined) (this as Record<typeof key, unknown>)[key] = init[key];
    }
  }
}

const RETRY_IN_SECONDS = /try again in (\d+(?:\.\d+)?) seconds?/i;

/**
 * Seconds to wait after a rate-limit error. The real server sends no
 * `retry_after` field, only the message "Rate limit exceeded. Try again in N
 * seconds." (N may be 0), so this reads `retry_after`, then
 * `details.retry_after`, then the number in the message.
 *
 * @param error The `error` object of a server frame.
 * @returns Seconds (0 or more), or `undefined` when none can be found.
 *
 * @example
 * ```ts
 * import { parseRetryAfter } from "@realm-ai/ws-client";
 * parseRetryAfter({ message: "Rate limit exceeded. Try again in 3 seconds." }); // 3
 * ```
 */
export function parseRetryAfter(
  error: { message?: unknown; retry_after?: unknown; details?: unknown },
): number | undefined {
  const direct = asSeconds(error.retry_after);
  if (direct !== undefined) return direct;
  const details = error.details;
  if (typeof details === "object" && details !== null) {
    const nested = asSeconds((details as Record<string, unknown>).retry_after);
    if (nested !== undefined) return nested;
  }
  if (typeof error.message === "string") {
    const match = RETRY_IN_SECONDS.exec(error.message);
    if (match) return Number(match[1]);
  }
  return undefined;
}

function asSeconds(value: unknown): number | undefined {
  if (typeof value === "number" && Number.isFinite(value) && value >= 0) return value;
  if (typeof value === "string" && value.trim() !== "") {
    const parsed = Number(value);
    if (Number.isFinite(parsed) && parsed >= 0) return parsed;
  }
  return undefined;
}
