/**
 * The frames the stub server sends, as `protocol.rs` of `realm-server` encodes them
 * (`FunctionResponse::streaming`, `::complete`, `::error`): the stub's counterpart of that module.
 *
 * The order of the fields follows the server's. A Rust struct keeps its field order
 * (`id`, `status`, `data`, `error`; `code`, `message`), but the server builds every `data`, and
 * its handshake frames, as a `serde_json::Value`, whose objects are sorted maps (serde_json
 * without `preserve_order`): their keys come out in code point order, nested ones included.
 *
 * @module
 */

/**
 * The JSON of a value as serde_json writes a `serde_json::Value`: object keys sorted by code point
 * (a `BTreeMap<String, _>`'s order, in which `"10"` comes before `"9"`), at every depth. For
 * values the stub does not build itself, such as a pipeline's output. Throws what
 * `JSON.stringify` throws (a cycle, a BigInt); `undefined` when it gives nothing (`undefined`, a
 * function).
 *
 * @example
 * ```ts
 * import { serdeJson } from "./protocol.ts";
 *
 * const text = serdeJson({ version: "0.1.0", status: "connected", "9": 1, "10": 2 });
 * // '{"10":2,"9":1,"status":"connected","version":"0.1.0"}'
 * ```
 */
export function serdeJson(value: unknown): string | undefined {
  const text = JSON.stringify(value);
  return text === undefined ? undefined : write(JSON.parse(text));
}

/** Writes plain JSON data (as JSON.parse gives it) with sorted keys. */
function write(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(write).join(",")}]`;
  if (typeof value !== "object" || value === null) return JSON.stringify(value);
  const record = value as Record<string, unknown>;
  const fields = Object.keys(record).sort(byCodePoint).map((key) =>
    `${JSON.stringify(key)}:${write(record[key])}`
  );
  return `{${fields.join(",")}}`;
}

/** Code point order, which is UTF-8 byte order (UTF-16 code units differ above U+D7FF). */
function byCodePoint(a: string, b: string): number {
  const left = [...a];
  const right = [...b];
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const difference = left[i].codePointAt(0)! - right[i].codePointAt(0)!;
    if (difference !== 0) return difference;
  }
  return left.length - right.length;
}

/**
 * A `complete` frame (`FunctionResponse::complete`); `undefined` data is sent as `null`. The keys
 * of `data` are written in the order given: build it in the server's order (sorted, see
 * {@linkcode serdeJson}).
 *
 * @example
 * ```ts
 * import { complete } from "./protocol.ts";
 *
 * const frame = complete("1", { status: "healthy", uptime_seconds: 0, version: "0.1.0" });
 * // '{"id":"1","status":"complete","data":{"status":"healthy","uptime_seconds":0,"version":"0.1.0"}}'
 * ```
 */
export const complete = (id: string, data: unknown): string =>
  JSON.stringify({ id, status: "complete", data: data === undefined ? null : data });

/**
 * A `complete` frame whose `data` is given as JSON text (from {@linkcode serdeJson}); `undefined`
 * is sent as `null`.
 *
 * @example
 * ```ts
 * import { completeJson, serdeJson } from "./protocol.ts";
 *
 * const frame = completeJson("1", serdeJson({ b: 1, a: 2 }));
 * // '{"id":"1","status":"complete","data":{"a":2,"b":1}}'
 * ```
 */
export const completeJson = (id: string, data: string | undefined): string =>
  `{"id":${JSON.stringify(id)},"status":"complete","data":${data ?? "null"}}`;

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
 * // '{"id":"1","status":"streaming","data":{"index":0,"is_final":true,"text":"Paris "}}'
 * ```
 */
export const streaming = (id: string, text: string, index: number, isFinal: boolean): string =>
  JSON.stringify({ id, status: "streaming", data: { index, is_final: isFinal, text } });
