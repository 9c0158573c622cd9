import assert from "node:assert/strict";
import { readTokenFrame } from "../src/token_frame.ts";
import { decodeFrame } from "../src/protocol.ts";

/** The frames compared per run; `REALM_FUZZ_FRAMES` and `REALM_FUZZ_SEED` replay or widen a run. */
const FRAMES = Number(env("REALM_FUZZ_FRAMES") ?? 100_000);
const SEED = Number(env("REALM_FUZZ_SEED") ?? 0x5eed10);

/** An environment variable, or `undefined` when it is unset or cannot be read (no --allow-env). */
function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** mulberry32: a small seeded generator, so that a failing frame can be replayed from its seed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Source pieces of a JSON string's contents: fine raw, escapes, and what JSON forbids raw. */
const PLAIN = ["a", "Paris ", "7", " ", "é", "日本", "😀", "\u2028", "\x7f", "}", "{", ",", ":"];
const SPECIAL = [
  "\\n",
  "\\t",
  '\\"',
  "\\\\",
  "\\/",
  "\\u00e9",
  "\\u0000",
  "\\ud83d\\ude00", // an escaped surrogate pair
  "\\ud800", // an escaped lone high surrogate
  "\\udc00x", // an escaped lone low surrogate
  "\ud800", // a raw lone high surrogate: JSON.parse keeps it
  "\udfff", // a raw lone low surrogate
  "\ud83d", // half of an emoji
  "\x01", // a raw control character: JSON.parse rejects it
  "\n",
  "\t",
  '"', // an unescaped quote
  "\\", // a lone backslash
  "\\x41", // not a JSON escape
  "\\u12", // a short \u escape
];
const NUMBERS = [
  "0",
  "1",
  "42",
  "9999",
  "123456789012345", // 15 digits: exact
  "9007199254740993", // beyond 2^53: JSON.parse rounds
  "123456789012345678901",
  "007",
  "00",
  "-0",
  "-1",
  "1.5",
  "0.0",
  "1e3",
  "1E+3",
  "2e-1",
  ".5",
  "1.",
  "+1",
  "",
  "0x10",
  "Infinity",
  "NaN",
  '"3"',
  "null",
];
const BOOLEANS = ["true", "false", "true", "false", "null", '"true"', "tru", "falsey", "0", ""];
const WHITESPACE = [" ", "\t", "\n", "\r", "  ", "\u00a0", "\v"];
const STATUSES = ["streaming", "streaming", "streaming", "complete", "Streaming", "streaming "];

function pick<T>(rng: () => number, list: readonly T[]): T {
  return list[Math.floor(rng() * list.length)];
}

function stringBody(rng: () => number, special: boolean): string {
  let out = "";
  const length = Math.floor(rng() * 6);
  for (let i = 0; i < length; i++) {
    out += special && rng() < 0.3 ? pick(rng, SPECIAL) : pick(rng, PLAIN);
  }
  return out;
}

function shuffle<T>(rng: () => number, list: T[]): T[] {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [list[i], list[j]] = [list[j], list[i]];
  }
  return list;
}

/**
 * One frame's source text and whether it is in the server's layout with plain values, which the
 * fast path must take. Most frames are perturbed in one or more ways.
 */
function generate(rng: () => number): { text: string; clean: boolean } {
  const plain = rng() < 0.35;
  const special = !plain && rng() < 0.5;
  const id = stringBody(rng, special) || "1";
  const token = stringBody(rng, special);
  const index = plain || rng() < 0.5 ? String(Math.floor(rng() * 100_000)) : pick(rng, NUMBERS);
  const isFinal = plain || rng() < 0.6 ? (rng() < 0.5 ? "true" : "false") : pick(rng, BOOLEANS);
  const status = plain || rng() < 0.8 ? "streaming" : pick(rng, STATUSES);
  let data: [string, string][] = [
    ["index", index],
    ["is_final", isFinal],
    ["text", `"${token}"`],
  ];
  if (rng() < 0.4) data = [data[2], data[0], data[1]]; // the stub's order
  let top: [string, string][] = [["id", `"${id}"`], ["status", `"${status}"`], ["data", ""]];
  let clean = plain;
  if (!plain) {
    const r = rng();
    if (r < 0.1) data = shuffle(rng, data);
    else if (r < 0.15) data.push(["logprob", pick(rng, ["-0.5", "0", "null"])]);
    else if (r < 0.2) data.splice(Math.floor(rng() * 3), 1);
    else if (r < 0.25) data.push(["text", '"again"']); // duplicate key: the last one wins
    else if (r < 0.3) top = shuffle(rng, top);
    else if (r < 0.35) top.push(["error", "null"]);
    else if (r < 0.38) top[0] = ["id", pick(rng, ["1", "null", "[]"])];
  }
  const ws = () => (!plain && rng() < 0.04 ? pick(rng, WHITESPACE) : "");
  const object = (pairs: [string, string][], inner: string) =>
    `${ws()}{${
      pairs.map(([key, value]) => `${ws()}"${key}"${ws()}:${ws()}${value || inner}${ws()}`).join(
        ",",
      )
    }}${ws()}`;
  let text = object(top, object(data, ""));
  if (!plain) {
    const r = rng();
    const at = Math.floor(rng() * (text.length + 1));
    if (r < 0.1) text = text.slice(0, at); // truncated
    else if (r < 0.15) {
      text = text.slice(0, at) + pick(rng, ['"', "}", ",", "x", "\\"]) + text.slice(at);
    } else if (r < 0.18) text += pick(rng, ["}", " ", "x", "\n"]);
    else if (r < 0.2) text = text.slice(0, at) + text.slice(at + 1);
  }
  // Whether the fast path must take it: the layout exactly, and values it reads itself.
  if (!plain) {
    clean = LAYOUT.test(text);
  }
  return { text, clean };
}

/** The server's layout (either data key order) with values the fast path reads itself. */
const STRING = String.raw`"[^"\\\x00-\x1f]*"`;
const INTEGER = String.raw`(0|[1-9]\d*)`;
const BOOLEAN = "(true|false)";
const LAYOUT = new RegExp(
  String.raw`^\{"id":${STRING},"status":"streaming","data":\{(` +
    `"index":${INTEGER},"is_final":${BOOLEAN},"text":${STRING}|` +
    String.raw`"text":${STRING},"index":${INTEGER},"is_final":${BOOLEAN})\}\}$`,
);

/** What decodeFrame gave before the fast path, for a streaming frame: JSON.parse's values. */
function parsedStreaming(text: string): { id: string; data: unknown } | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const frame = value as Record<string, unknown>;
  if (typeof frame.id !== "string" || frame.status !== "streaming") return undefined;
  return { id: frame.id, data: frame.data };
}

/** Deep equality that also compares key order and tells 0 from -0 (what JSON.stringify shows). */
function sameJson(actual: unknown, expected: unknown, text: string): void {
  assert.deepStrictEqual(actual, expected, `frame ${JSON.stringify(text)}`);
  assert.equal(JSON.stringify(actual), JSON.stringify(expected), `frame ${JSON.stringify(text)}`);
  if (typeof actual === "object" && actual !== null) {
    for (const key of Object.keys(actual)) {
      const a = (actual as Record<string, unknown>)[key];
      const e = (expected as Record<string, unknown>)[key];
      if (typeof a === "number") assert.ok(Object.is(a, e), `${key} in ${JSON.stringify(text)}`);
    }
  }
}

Deno.test(`readTokenFrame gives what JSON.parse gives, on ${FRAMES} generated frames (seed ${SEED})`, () => {
  const rng = random(SEED);
  let fast = 0;
  let clean = 0;
  for (let n = 0; n < FRAMES; n++) {
    const frame = generate(rng);
    const read = readTokenFrame(frame.text);
    const parsed = parsedStreaming(frame.text);
    const where = `frame ${n} of seed ${SEED}: ${JSON.stringify(frame.text)}`;
    if (frame.clean) {
      clean++;
      assert.ok(read !== undefined, `the fast path refused ${where}`);
    }
    if (read !== undefined) {
      fast++;
      assert.ok(parsed !== undefined, `the fast path took what JSON.parse does not: ${where}`);
      assert.equal(read.id, parsed.id, where);
      sameJson(read.data, parsed.data, frame.text);
      assert.deepEqual(Object.keys(read.data), Object.keys(parsed.data as object), where);
    }
    // The decoder as a whole: the same streaming frame either way.
    const decoded = decodeFrame(frame.text);
    if (parsed !== undefined) {
      assert.equal(decoded.kind, "streaming", where);
      if (decoded.kind === "streaming") {
        assert.equal(decoded.id, parsed.id, where);
        sameJson(decoded.data, parsed.data, frame.text);
      }
    } else assert.notEqual(decoded.kind, "streaming", where);
  }
  // The generator must exercise both paths, or the comparison proves little.
  assert.ok(clean >= FRAMES * 0.35, `only ${clean} frames in the server's layout`);
  assert.ok(fast === clean, `${fast} taken, ${clean} in the layout`);
  assert.ok(FRAMES - fast >= FRAMES * 0.4, `only ${FRAMES - fast} frames left to JSON.parse`);
});

Deno.test("readTokenFrame reads both layouts and leaves the rest to JSON.parse", () => {
  assert.deepEqual(
    readTokenFrame(
      '{"id":"12","status":"streaming","data":{"index":3,"is_final":true,"text":"Paris."}}',
    ),
    { kind: "streaming", id: "12", data: { index: 3, is_final: true, text: "Paris." } },
  );
  const stub = readTokenFrame(
    '{"id":"a-1","status":"streaming","data":{"text":"","index":0,"is_final":false}}',
  );
  assert.deepEqual(stub, {
    kind: "streaming",
    id: "a-1",
    data: { text: "", index: 0, is_final: false },
  });
  assert.deepEqual(Object.keys(stub!.data), ["text", "index", "is_final"]);
  for (
    const text of [
      '{"id":"1","status":"streaming","data":{"index":0,"is_final":false,"text":"a\\"b"}}',
      '{"id":"1","status":"streaming","data":{"index":1.0,"is_final":false,"text":"a"}}',
      '{"id":"1","status":"streaming","data":{"index":01,"is_final":false,"text":"a"}}',
      '{"id":"1","status":"streaming","data":{"index":0,"is_final":false,"text":"a"}} ',
      '{"id":"1","status":"streaming","data":{"index":0,"is_final":false,"text":"a","logprob":0}}',
      '{"id":"1","status":"complete","data":{"index":0,"is_final":false,"text":"a"}}',
      '{"id":"1","status":"streaming","data":{"index":0,"is_final":false,"text":"a"}',
      '{"id":"1","status":"streaming","data":{"index":0,"is_final":false,"text":"a\n"}}',
    ]
  ) {
    assert.equal(readTokenFrame(text), undefined, text);
  }
});
