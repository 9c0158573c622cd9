/**
 * Wire format: decoding every server frame into a checked shape, encoding calls.
 * Pure functions, no I/O.
 *
 * @module
 */

import { readTokenFrame } from "./token_frame.ts";

/** The server's function names. */
export type RealmFunction = "generate" | "health" | "metadata" | "pipeline";

/** An `error` object of a response frame. */
export interface WireError {
  code: string;
  message: string;
  details?: unknown;
  retry_after?: unknown;
}

/** A server frame, decoded and checked. */
export type ServerFrame =
  | { kind: "welcome"; version: string; tenantId: string | null }
  | { kind: "auth_required"; message: string }
  | { kind: "auth_success"; tenantId: string }
  | { kind: "auth_failed"; reason: string }
  | { kind: "streaming"; id: string; data: unknown }
  | { kind: "complete"; id: string; data: unknown }
  | { kind: "error"; id: string; error: WireError }
  | { kind: "cancelled"; id: string }
  /** `{"error": "..."}` with no id: the server's reply to a binary frame. */
  | { kind: "bare_error"; message: string }
  /** Anything else: not JSON, not an object, unknown shape. */
  | { kind: "invalid"; reason: string };

type Json = Record<string, unknown>;

/**
 * Decodes one text frame. Never throws: a frame the client cannot use comes
 * back as `{ kind: "invalid" }` with the reason.
 */
export function decodeFrame(text: unknown): ServerFrame {
  // The server sends text frames only; a binary one is unusable like any other bad frame.
  if (typeof text !== "string") return { kind: "invalid", reason: "binary frame from the server" };
  // Most frames are tokens in the server's fixed layout: read those without a full parse. Their
  // status follows the id (`{"id":"…","status":"s`): a frame whose does not skips the pattern.
  const token = text.charCodeAt(text.indexOf('"', 7) + 12) === 115
    ? readTokenFrame(text)
    : undefined;
  if (token !== undefined) return token;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: "invalid", reason: `not JSON: ${preview(text)}` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { kind: "invalid", reason: `not a JSON object: ${preview(text)}` };
  }
  const frame = value as Json;
  if (typeof frame.id === "string") return decodeResponse(frame, text);
  if (typeof frame.type === "string") return decodeHandshake(frame, text);
  if (frame.status === "connected") {
    return {
      kind: "welcome",
      version: typeof frame.version === "string" ? frame.version : "unknown",
      tenantId: typeof frame.tenant_id === "string" ? frame.tenant_id : null,
    };
  }
  if (typeof frame.error === "string") return { kind: "bare_error", message: frame.error };
  return { kind: "invalid", reason: `unrecognised frame: ${preview(text)}` };
}

function decodeResponse(frame: Json, text: string): ServerFrame {
  const id = frame.id as string;
  switch (frame.status) {
    case "streaming":
      return { kind: "streaming", id, data: frame.data };
    case "complete":
      return { kind: "complete", id, data: frame.data };
    case "cancelled":
      return { kind: "cancelled", id };
    case "error": {
      const error = frame.error;
      if (typeof error === "object" && error !== null) {
        const e = error as Json;
        return {
          kind: "error",
          id,
          error: {
            code: typeof e.code === "string" ? e.code : "INTERNAL_ERROR",
            message: typeof e.message === "string" ? e.message : "The server reported an error",
            details: e.details,
            retry_after: e.retry_after ?? frame.retry_after,
          },
        };
      }
      return {
        kind: "error",
        id,
        error: {
          code: "INTERNAL_ERROR",
          message: typeof error === "string" ? error : "The server reported an error",
        },
      };
    }
    default:
      return { kind: "invalid", reason: `unknown status in frame: ${preview(text)}` };
  }
}

function decodeHandshake(frame: Json, text: string): ServerFrame {
  switch (frame.type) {
    case "auth_required":
      return {
        kind: "auth_required",
        message: typeof frame.message === "string" ? frame.message : "",
      };
    case "auth_success":
      if (typeof frame.tenant_id === "string") {
        return { kind: "auth_success", tenantId: frame.tenant_id };
      }
      return { kind: "invalid", reason: `auth_success without tenant_id: ${preview(text)}` };
    case "auth_failed":
      return {
        kind: "auth_failed",
        reason: typeof frame.error === "string" ? frame.error : "Authentication failed",
      };
    default:
      return { kind: "invalid", reason: `unknown frame type: ${preview(text)}` };
  }
}

function preview(text: string): string {
  return text.length > 120 ? `${text.slice(0, 120)}…` : text;
}

/**
 * A call frame from its parts: the hot path makes the tail once per socket ({@linkcode callTail})
 * and the body of a call without params once per function. Each join of long strings leaves a
 * piece that the socket then copies into one, so fewer joins are less garbage per call. `id` is
 * one the client made (digits, or `heartbeat-<n>`): nothing in it needs escaping.
 */
export function callFrame(id: string, body: string, tail: string): string {
  return '{"id":"' + id + body + tail;
}

/** What follows a call frame's id: its function and params. */
export function callBody(fn: RealmFunction, paramsJson: string): string {
  // Made once for a call without params (`health`, `metadata`), on every call otherwise.
  return paramsJson === "{}"
    ? NO_PARAMS_BODY[fn] ??= `","function":"${fn}","params":{}`
    : `","function":"${fn}","params":${paramsJson}`;
}

const NO_PARAMS_BODY: Partial<Record<RealmFunction, string>> = {};

/** What ends every call frame on a socket: its tenant id. */
export function callTail(tenantId: string): string {
  return `,"tenant_id":${JSON.stringify(tenantId)}}`;
}

/**
 * A call's params as JSON, or the reason they cannot be sent as JSON (a
 * `BigInt`, a cycle, a `toJSON` that throws).
 */
export function encodeParams(
  params: Record<string, unknown>,
): { json: string } | { problem: string } {
  try {
    const json = JSON.stringify(params);
    if (typeof json === "string" && json.startsWith("{")) return { json };
    return { problem: "they do not turn into a JSON object" };
  } catch (error) {
    return { problem: error instanceof Error ? error.message : String(error) };
  }
}

/** Encodes the authentication frame. */
export function encodeAuth(apiKey: string): string {
  return JSON.stringify({ type: "auth", api_key: apiKey });
}

/**
 * The token of a `streaming` frame's data. The server sends it as `text`;
 * the SDK README called it `token`, so both are read. A frame with neither
 * (a bare `is_final` marker) carries the empty token. `undefined` when the
 * data is not an object or the token is not a string. On the per-token path,
 * so it allocates nothing.
 */
export function readToken(data: unknown): string | undefined {
  if (typeof data !== "object" || data === null) return undefined;
  const d = data as Json;
  const text = d.text;
  if (typeof text === "string") return text;
  if (text !== undefined) return undefined;
  const token = d.token;
  if (typeof token === "string") return token;
  return token === undefined ? "" : undefined;
}

/**
 * The tenant id rule the server applies (`RuntimeManager::validate_tenant_id`): letters and digits
 * of any script (Rust's `char::is_alphanumeric`), `-`, `_`; a key's tenant such as `équipe-1` is
 * valid. The server counts 3 to 64 bytes of UTF-8, this 3 to 64 characters (a byte count costs
 * more of the size budget): the same for ASCII; in other scripts an id of 1 or 2 characters that
 * the server would take is refused here, and one past 64 bytes is left to the server to refuse.
 */
export const TENANT_ID_PATTERN: RegExp = /^[\p{Alphabetic}\p{N}_-]{3,64}$/u;
