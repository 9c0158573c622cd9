/**
 * The token frame's fast path: a `streaming` frame in the exact layout the
 * server writes is read without `JSON.parse`, which otherwise costs about a
 * third of a token's time. Anything else (escapes, whitespace, other keys or
 * key orders, numbers not in plain integer form) is left to `JSON.parse`.
 *
 * @module
 */

/** A `streaming` frame's data: the token and its place in the stream, keys in the frame's order. */
export type TokenData =
  | { index: number; is_final: boolean; text: string }
  | { text: string; index: number; is_final: boolean };

/** A token frame read by {@linkcode readTokenFrame}: what `decodeFrame` returns for it. */
export interface TokenFrame {
  kind: "streaming";
  id: string;
  data: TokenData;
}

const HEAD = '{"id":"';
const STATUS = ',"status":"streaming","data":{"';
const INDEX = 'index":';
const IS_FINAL = ',"is_final":';
const TEXT = 'text":"';
const TAIL = "}}";
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * Reads a `streaming` frame written in the server's layout, or returns
 * `undefined` for any other text, which the caller must then parse with
 * `JSON.parse`. Accepts exactly
 * `{"id":"…","status":"streaming","data":{"index":N,"is_final":B,"text":"…"}}`
 * (the real server's serde order) and the same with `"text"` first (the stub's
 * order), with no whitespace, strings without escapes or control characters,
 * and `N` a non-negative integer in plain form; for those it returns what
 * `JSON.parse` would (the data's keys in the frame's order).
 *
 * @example
 * ```ts
 * import { readTokenFrame } from "./token_frame.ts";
 *
 * const frame = readTokenFrame(
 *   '{"id":"7","status":"streaming","data":{"index":0,"is_final":false,"text":"Paris "}}',
 * );
 * console.log(frame); // { kind: "streaming", id: "7", data: { index: 0, is_final: false, text: "Paris " } }
 * console.log(readTokenFrame('{"id": "7"}')); // undefined: not the fixed layout
 * ```
 */
export function readTokenFrame(text: string): TokenFrame | undefined {
  if (!text.startsWith(HEAD)) return undefined;
  const idEnd = stringEnd(text, HEAD.length);
  if (idEnd < 0 || !text.startsWith(STATUS, idEnd + 1)) return undefined;
  const id = text.slice(HEAD.length, idEnd);
  let at = idEnd + 1 + STATUS.length;
  let data: TokenData;
  if (text.startsWith(INDEX, at)) {
    // {"index":N,"is_final":B,"text":"…"}
    at += INDEX.length;
    const index = integerAt(text, at);
    if (index < 0) return undefined;
    at = integerEnd;
    const isFinal = booleanAfterKey(text, at);
    if (isFinal === undefined) return undefined;
    at = booleanEnd;
    if (text.charCodeAt(at) !== 0x2c || text.charCodeAt(at + 1) !== QUOTE) return undefined;
    if (!text.startsWith(TEXT, at + 2)) return undefined;
    at += 2 + TEXT.length;
    const textEnd = stringEnd(text, at);
    if (textEnd < 0) return undefined;
    data = { index, is_final: isFinal, text: text.slice(at, textEnd) };
    at = textEnd + 1;
  } else if (text.startsWith(TEXT, at)) {
    // {"text":"…","index":N,"is_final":B}
    at += TEXT.length;
    const textEnd = stringEnd(text, at);
    if (textEnd < 0) return undefined;
    const token = text.slice(at, textEnd);
    at = textEnd + 1;
    if (text.charCodeAt(at) !== 0x2c || text.charCodeAt(at + 1) !== QUOTE) return undefined;
    if (!text.startsWith(INDEX, at + 2)) return undefined;
    const index = integerAt(text, at + 2 + INDEX.length);
    if (index < 0) return undefined;
    const isFinal = booleanAfterKey(text, integerEnd);
    if (isFinal === undefined) return undefined;
    data = { text: token, index, is_final: isFinal };
    at = booleanEnd;
  } else return undefined;
  if (at + TAIL.length !== text.length || !text.endsWith(TAIL)) return undefined;
  return { kind: "streaming", id, data };
}

/**
 * The position of the quote closing a JSON string whose contents start at
 * `from`, or -1 when the string has an escape or a control character (which
 * `JSON.parse` must handle) or no end.
 */
function stringEnd(text: string, from: number): number {
  for (let i = from; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) return i;
    if (c === BACKSLASH || c < 0x20) return -1;
  }
  return -1;
}

/** Where the last `integerAt` or `booleanAfterKey` stopped: no object allocated per token. */
let integerEnd = 0;
let booleanEnd = 0;

/**
 * A non-negative integer in plain JSON form (`0`, or no leading zero) of at most
 * 15 digits, so that it is exact; -1 for anything else. Sets `integerEnd`.
 */
function integerAt(text: string, from: number): number {
  let value = 0;
  let i = from;
  for (; i < text.length && i - from < 16; i++) {
    const digit = text.charCodeAt(i) - 0x30;
    if (digit < 0 || digit > 9) break;
    value = value * 10 + digit;
  }
  const digits = i - from;
  if (digits === 0 || digits > 15 || (digits > 1 && text.charCodeAt(from) === 0x30)) return -1;
  integerEnd = i;
  return value;
}

/** `,"is_final":true` or `…false` at `from`; sets `booleanEnd`. */
function booleanAfterKey(text: string, from: number): boolean | undefined {
  if (!text.startsWith(IS_FINAL, from)) return undefined;
  const at = from + IS_FINAL.length;
  if (text.startsWith("false", at)) {
    booleanEnd = at + 5;
    return false;
  }
  if (text.startsWith("true", at)) {
    booleanEnd = at + 4;
    return true;
  }
  return undefined;
}
