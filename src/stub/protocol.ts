/**
 * The frames the stub server sends, as `protocol.rs` of `realm-server` encodes them
 * (`FunctionResponse::streaming`, `::complete`, `::error`): the stub's counterpart of that module.
 *
 * @module
 */

/**
 * A `complete` frame (`FunctionResponse::complete`); `undefined` data is sent as `null`.
 *
 * @example
 * ```ts
 * import { complete } from "./protocol.ts";
 *
 * const frame = complete("1", { status: "healthy" });
 * // '{"id":"1","status":"complete","data":{"status":"healthy"}}'
 * ```
 */
export const complete = (id: string, data: unknown): string =>
  JSON.stringify({ id, status: "complete", data: data === undefined ? null : data });

/**
 * An `error` frame (`FunctionResponse::error` with an `ErrorInfo` of no details).
 *
 * @example
 * ```ts
 * import { errorFrame } from "./protocol.ts";
 *
 * const frame = errorFrame("1", "DISPATCH_ERROR", "Unknown function: nope");
 * ```
 */
export const errorFrame = (id: string, code: string, message: string): string =>
  JSON.stringify({ id, status: "error", error: { code, message } });

/**
 * A `streaming` frame carrying one token (`FunctionResponse::streaming` with `TokenData`, whose
 * token field is named `text`).
 *
 * @example
 * ```ts
 * import { streaming } from "./protocol.ts";
 *
 * const frame = streaming("1", "Paris ", 0, true);
 * // '{"id":"1","status":"streaming","data":{"text":"Paris ","index":0,"is_final":true}}'
 * ```
 */
export const streaming = (id: string, text: string, index: number, isFinal: boolean): string =>
  JSON.stringify({ id, status: "streaming", data: { text, index, is_final: isFinal } });
