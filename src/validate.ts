/**
 * Checks of options and call parameters, so bad input fails with a typed
 * error naming the field and the allowed values before anything is sent.
 *
 * @module
 */

import { RealmError } from "./errors.ts";
import { TENANT_ID_PATTERN } from "./protocol.ts";
import type { CallOptions, GenerationOptions, RealmClientOptions } from "./types.ts";

/** The client's options with every default filled in. */
export interface ResolvedOptions {
  model: string;
  /** The servers, in the order given; one for a single `url`. */
  urls: string[];
  /** `url` was given as a list (even of one): `stats()` then lists the servers. */
  serverList: boolean;
  apiKey?: string;
  tenantId?: string;
  reconnect: boolean;
  reconnectInterval: number;
  maxReconnectInterval: number;
  maxReconnectAttempts: number;
  timeout: number;
  streamIdleTimeout: number;
  connectTimeout: number;
  heartbeatInterval: number;
  heartbeatTimeout: number;
  maxRetries: number;
  maxQueuedCalls: number;
  connections: number;
  pipelining: number;
  allowInsecureAuth: boolean;
  WebSocket?: RealmClientOptions["WebSocket"];
  logger?: RealmClientOptions["logger"];
}

/** Every refusal here comes before anything is sent. */
const NOT_SENT = { sent: false };

function invalidOption(message: string): RealmError {
  return new RealmError("INVALID_OPTIONS", message, NOT_SENT);
}

function invalidParam(message: string): RealmError {
  return new RealmError("INVALID_PARAMS", message, NOT_SENT);
}

/** The per-call options, the last argument of every call. */
export const CALL_OPTIONS = [
  "signal",
  "timeout",
  "streamIdleTimeout",
  "maxRetries",
  "safeToRepeat",
] as const satisfies readonly (keyof CallOptions)[];

/**
 * Refuses a key of `input` that is not in `known`, naming the known key it most likely meant:
 * one that differs but for case and one short run of letters (`maxTokens` for `max_tokens`,
 * `timout` for `timeout`, `maxRetry` for `maxRetries`). TypeScript catches these at compile
 * time, JavaScript only here: the server ignores fields it does not know, so a misspelt key
 * would change nothing, in silence.
 */
function checkKeys(
  input: object,
  known: readonly string[],
  what: string,
  refuse: (message: string) => RealmError,
): void {
  const key = Object.keys(input).find((key) => !known.includes(key));
  if (key === undefined) return;
  const near = known.find((name) => isNear(key.toLowerCase(), name.toLowerCase()));
  throw refuse(
    `Unknown ${what} \`${key}\`${
      near ? `: did you mean \`${near}\`?` : `; use ${known.join(", ")}.`
    }`,
  );
}

/**
 * Whether `a` and `b` differ only in one run of letters, after a common start and before a common
 * end: two letters long at most, or a third of the longer word.
 */
function isNear(a: string, b: string): boolean {
  const longest = Math.max(a.length, b.length);
  let start = 0;
  let end = 0;
  while (a[start] && a[start] === b[start]) start++;
  while (end < a.length - start && end < b.length - start && a.at(~end) === b.at(~end)) end++;
  return longest - start - end <= Math.max(2, longest / 3);
}

const MS = "a number of milliseconds";
/** The longest delay timers honour (2^31-1 ms, about 24.8 days); a longer one fires at once. */
const MAX_DELAY = 2 ** 31 - 1;
const UP_TO = `up to ${MAX_DELAY}`;
const OR_NO_LIMIT = `${UP_TO}, or Infinity for no limit`;
const delay = (v: number) => v <= MAX_DELAY;
const delayOrNoLimit = (v: number) => v <= MAX_DELAY || v === Infinity;
const integerOrInfinity = (v: number) => v === Infinity || Number.isInteger(v);

/**
 * Every option of the constructor with its default: the one place a default is stated. The
 * options' JSDoc shows them as `@default` (a test keeps the two equal). `undefined` marks an
 * option without a fixed default: required (`model`), none (`apiKey`, `logger`), or computed when
 * the client is made (`tenantId`: a random UUID; `connections`: one per server; `WebSocket`: the
 * runtime's). `maxReconnectInterval` never goes below `reconnectInterval`.
 */
export const OPTION_DEFAULTS = {
  model: undefined,
  url: "ws://localhost:8080",
  apiKey: undefined,
  tenantId: undefined,
  reconnect: true,
  reconnectInterval: 5000,
  maxReconnectInterval: 60_000,
  maxReconnectAttempts: Infinity,
  timeout: 30_000,
  streamIdleTimeout: 30_000,
  connectTimeout: 10_000,
  heartbeatInterval: 0,
  heartbeatTimeout: 10_000,
  maxRetries: 0,
  maxQueuedCalls: 1000,
  connections: undefined,
  pipelining: 4,
  allowInsecureAuth: false,
  WebSocket: undefined,
  logger: undefined,
} as const satisfies Record<keyof RealmClientOptions, unknown>;

/** The numeric options: name, the rule as the error states it, the check. */
const NUMERIC_OPTIONS: [name: NumericOption, rule: string, ok: Check][] = [
  ["reconnectInterval", `${MS} ≥ 0, ${UP_TO}`, (v) => v >= 0 && delay(v)],
  ["maxReconnectAttempts", "an integer ≥ 0 or Infinity", (v) => v >= 0 && integerOrInfinity(v)],
  ["timeout", `${MS} > 0, ${OR_NO_LIMIT}`, (v) => v > 0 && delayOrNoLimit(v)],
  ["streamIdleTimeout", `${MS} > 0, ${OR_NO_LIMIT}`, (v) => v > 0 && delayOrNoLimit(v)],
  ["connectTimeout", `${MS} > 0, ${OR_NO_LIMIT}`, (v) => v > 0 && delayOrNoLimit(v)],
  ["heartbeatInterval", `${MS} ≥ 0 (0 turns it off), ${UP_TO}`, (v) => v >= 0 && delay(v)],
  ["heartbeatTimeout", `${MS} > 0, ${UP_TO}`, (v) => v > 0 && delay(v)],
  ["maxRetries", "an integer ≥ 0", (v) => v >= 0 && Number.isInteger(v)],
  ["maxQueuedCalls", "an integer ≥ 0 or Infinity", (v) => v >= 0 && integerOrInfinity(v)],
  ["connections", "an integer from 1 to 64", (v) => v >= 1 && v <= 64 && Number.isInteger(v)],
  ["pipelining", "an integer ≥ 1 or Infinity", (v) => v >= 1 && integerOrInfinity(v)],
];

type NumericOption =
  | "reconnectInterval"
  | "maxReconnectAttempts"
  | "timeout"
  | "streamIdleTimeout"
  | "connectTimeout"
  | "heartbeatInterval"
  | "heartbeatTimeout"
  | "maxRetries"
  | "maxQueuedCalls"
  | "connections"
  | "pipelining";

type Check = (value: number) => boolean;

function numberOption(value: unknown, name: string, fallback: number, rule: string, ok: Check) {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || Number.isNaN(value) || !ok(value)) {
    throw invalidOption(`\`${name}\` must be ${rule}; got ${describe(value)}.`);
  }
  return value;
}

function describe(value: unknown): string {
  if (typeof value === "string") {
    // Never what may be a URL's user and password.
    const text = value.replace(/.*@/s, "…@");
    return JSON.stringify(text.length > 40 ? text.slice(0, 40) + "…" : text);
  }
  if (typeof value === "number" || typeof value === "boolean" || value == null) {
    return String(value);
  }
  return typeof value;
}

/**
 * Hosts that are certainly this machine, as a parsed URL spells them: `localhost`, `127.0.0.0/8`
 * and `[::1]`. Not a name under `.localhost`: a runtime may resolve it through DNS.
 */
const LOOPBACK = /^(localhost|127(\.\d+){3}|\[::1\])$/;

/** Checks one server address: one that every WebSocket accepts, without credentials. */
function checkUrl(url: unknown): URL {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url as string);
  } catch { /* refused below */ }
  const scheme = parsed?.protocol;
  if (typeof url !== "string" || (scheme !== "ws:" && scheme !== "wss:") || url.includes("#")) {
    throw invalidOption(
      `\`url\` must be a ws:// or wss:// URL without a #fragment; got ${describe(url)}.` +
        (scheme === "http:" || scheme === "https:"
          ? ` Use ${scheme === "https:" ? "wss" : "ws"}://${parsed!.host}${parsed!.pathname}.`
          : ""),
    );
  }
  if (parsed!.username || parsed!.password) {
    throw invalidOption("`url` must hold no user:password@: pass the key as `apiKey`.");
  }
  return parsed!;
}

/** Checks the constructor's options and fills in the defaults. */
export function resolveOptions(input: RealmClientOptions): ResolvedOptions {
  if (typeof input !== "object" || input === null) {
    throw invalidOption(
      'RealmWebSocketClient needs an options object, e.g. `{ model: "llama-2-7b" }`.',
    );
  }
  const options = input as unknown as Record<string, unknown>;
  checkKeys(input, Object.keys(OPTION_DEFAULTS), "option", invalidOption);
  if (typeof input.model !== "string" || input.model.trim() === "") {
    throw invalidOption(
      '`model` is required: a model name, file path or URL, e.g. `{ model: "llama-2-7b" }`.',
    );
  }
  const urls = Array.isArray(input.url) ? input.url : [input.url ?? OPTION_DEFAULTS.url];
  if (urls.length === 0) {
    throw invalidOption("`url` must name at least one server: a ws:// or wss:// URL, or a list.");
  }
  // `""` is what an empty environment variable (`REALM_API_KEY=`) gives: no key, as before.
  const apiKey = input.apiKey === "" ? undefined : input.apiKey;
  if (apiKey !== undefined && typeof apiKey !== "string") {
    throw invalidOption('`apiKey` must be a string when given ("" counts as no key).');
  }
  const seen = new Set<string>();
  for (const url of urls) {
    const parsed = checkUrl(url);
    if (seen.has(parsed.href)) {
      throw invalidOption(`\`url\` lists ${parsed.href} twice; name each server once.`);
    }
    seen.add(parsed.href);
    if (
      apiKey !== undefined && parsed.protocol === "ws:" && !LOOPBACK.test(parsed.hostname) &&
      input.allowInsecureAuth !== true
    ) {
      throw invalidOption(
        `Refusing to send the API key over unencrypted ws:// to ${parsed.hostname}: anyone on ` +
          "the network could read it. Use a wss:// URL, or set `allowInsecureAuth: true` if you " +
          "accept the risk.",
      );
    }
  }
  if (
    input.tenantId !== undefined &&
    (typeof input.tenantId !== "string" || !TENANT_ID_PATTERN.test(input.tenantId))
  ) {
    throw invalidOption(
      `\`tenantId\` must be 3 to 64 letters, digits, '-' or '_' (the server's rule); got ${
        describe(input.tenantId)
      }.`,
    );
  }
  for (const flag of ["reconnect", "allowInsecureAuth"] as const) {
    if (input[flag] !== undefined && typeof input[flag] !== "boolean") {
      throw invalidOption(`\`${flag}\` must be true or false; got ${describe(input[flag])}.`);
    }
  }
  if (input.WebSocket !== undefined && typeof input.WebSocket !== "function") {
    throw invalidOption("`WebSocket` must be a WebSocket constructor.");
  }
  if (input.logger !== undefined && typeof input.logger !== "function") {
    throw invalidOption("`logger` must be a function `(message, data) => void`.");
  }
  const resolved = {
    model: input.model,
    urls: urls as string[],
    serverList: Array.isArray(input.url),
    apiKey,
    tenantId: input.tenantId,
    reconnect: input.reconnect ?? OPTION_DEFAULTS.reconnect,
    allowInsecureAuth: input.allowInsecureAuth ?? OPTION_DEFAULTS.allowInsecureAuth,
    WebSocket: input.WebSocket,
    logger: input.logger,
  } as ResolvedOptions;
  for (const [name, rule, ok] of NUMERIC_OPTIONS) {
    // One socket per server by default; fewer sockets than servers would leave one unused.
    const fallback = name === "connections" ? urls.length : OPTION_DEFAULTS[name];
    resolved[name] = numberOption(options[name], name, fallback, rule, ok);
  }
  if (resolved.connections < urls.length) {
    throw invalidOption(
      `\`connections\` (${resolved.connections}) is less than the number of servers in \`url\` ` +
        `(${urls.length}): each server needs at least one socket. Leave it out for one per server.`,
    );
  }
  const floor = resolved.reconnectInterval;
  resolved.maxReconnectInterval = numberOption(
    options.maxReconnectInterval,
    "maxReconnectInterval",
    Math.max(OPTION_DEFAULTS.maxReconnectInterval, floor),
    `${MS} ≥ reconnectInterval (${floor}), ${UP_TO}`,
    (v) => v >= floor && delay(v),
  );
  return resolved;
}

/** An `AbortSignal`, or something that behaves like one (another realm's, a polyfill's). */
function isAbortSignal(value: unknown): value is AbortSignal {
  if (typeof value !== "object" || value === null) return false;
  const signal = value as Partial<AbortSignal>;
  return typeof signal.aborted === "boolean" && typeof signal.addEventListener === "function" &&
    typeof signal.removeEventListener === "function";
}

/** Checks a call's last argument. */
export function checkCallOptions(opts: CallOptions | undefined): CallOptions {
  if (opts === undefined) return {};
  if (typeof opts !== "object" || opts === null) {
    throw invalidParam("The call options must be an object like `{ signal, timeout }`.");
  }
  checkKeys(opts, CALL_OPTIONS, "option", invalidParam);
  if (opts.signal !== undefined && !isAbortSignal(opts.signal)) {
    throw invalidParam(
      `\`signal\` must be an AbortSignal (e.g. from an AbortController); got ${
        describe(opts.signal)
      }.`,
    );
  }
  for (const name of ["timeout", "streamIdleTimeout"] as const) {
    const value = opts[name];
    if (
      value !== undefined && (typeof value !== "number" || !(value > 0) || !delayOrNoLimit(value))
    ) {
      throw invalidParam(`\`${name}\` must be ${MS} > 0, ${OR_NO_LIMIT}; got ${describe(value)}.`);
    }
  }
  if (opts.safeToRepeat !== undefined && typeof opts.safeToRepeat !== "boolean") {
    throw invalidParam(
      `\`safeToRepeat\` must be true or false; got ${describe(opts.safeToRepeat)}.`,
    );
  }
  const retries = opts.maxRetries;
  if (
    retries !== undefined &&
    (typeof retries !== "number" || !Number.isInteger(retries) || retries < 0)
  ) {
    throw invalidParam(`\`maxRetries\` must be an integer ≥ 0; got ${describe(retries)}.`);
  }
  return opts;
}

type Range = [
  name: keyof GenerationOptions,
  ok: (v: number) => boolean,
  rule: string,
  int: boolean,
];

/** The server reads these as `usize`; past 2^53-1 a JavaScript number is no exact integer. */
const MAX_INT = Number.MAX_SAFE_INTEGER;

const GENERATION_RANGES: Range[] = [
  ["max_tokens", (v) => v >= 1 && v <= MAX_INT, "an integer from 1 to 2^53-1", true],
  ["temperature", (v) => v >= 0 && v <= 2, "a number from 0 to 2", false],
  ["top_p", (v) => v > 0 && v <= 1, "a number in (0, 1]", false],
  [
    "top_k",
    (v) => v >= 0 && v <= MAX_INT,
    "an integer from 0 to 2^53-1 (0 turns it off)",
    true,
  ],
  // The server's f32: a larger number would become infinity there.
  ["repetition_penalty", (v) => v > 0 && v <= 3.4e38, "a number > 0, up to 3.4e38", false],
];

/**
 * Every parameter of `generate`. Any other key is refused: the server ignores fields it does not
 * know, so one passed on would only hide a typo.
 */
export const GENERATION_PARAMS = [
  "prompt",
  "model",
  "max_tokens",
  "temperature",
  "top_p",
  "top_k",
  "repetition_penalty",
  "stream",
  "onToken",
] as const satisfies readonly (keyof GenerationOptions)[];

/**
 * Checks `generate` options and returns the wire `params`: only the fields
 * the server knows, with the client's `model` when the call names none.
 */
export function generationParams(
  options: GenerationOptions,
  defaultModel: string,
  stream: boolean,
): Record<string, unknown> {
  if (typeof options !== "object" || options === null) {
    throw invalidParam('generate needs an options object, e.g. `{ prompt: "Hello" }`.');
  }
  checkKeys(options, GENERATION_PARAMS, "parameter", invalidParam);
  if (typeof options.prompt !== "string") {
    throw invalidParam(`\`prompt\` must be a string; got ${describe(options.prompt)}.`);
  }
  const params: Record<string, unknown> = { prompt: options.prompt };
  if (options.model !== undefined) {
    if (typeof options.model !== "string" || options.model.trim() === "") {
      throw invalidParam("`model` must be a non-empty string when given.");
    }
  }
  params.model = options.model ?? defaultModel;
  for (const [name, ok, rule, int] of GENERATION_RANGES) {
    const value = options[name];
    if (value === undefined) continue;
    if (
      typeof value !== "number" || !Number.isFinite(value) || !ok(value) ||
      (int && !Number.isInteger(value))
    ) {
      throw invalidParam(`\`${name}\` must be ${rule}; got ${describe(value)}.`);
    }
    params[name] = value;
  }
  if (options.stream !== undefined && typeof options.stream !== "boolean") {
    throw invalidParam(`\`stream\` must be true or false; got ${describe(options.stream)}.`);
  }
  if (options.onToken !== undefined && typeof options.onToken !== "function") {
    throw invalidParam("`onToken` must be a function `(token: string) => void`.");
  }
  params.stream = stream;
  return params;
}

/** Checks a pipeline call and returns the wire `params`. */
export function pipelineParams(name: string, input: unknown): Record<string, unknown> {
  if (typeof name !== "string" || name.trim() === "") {
    throw invalidParam(
      `The pipeline name must be a non-empty string, e.g. "rag-pipeline"; got ${describe(name)}.`,
    );
  }
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw invalidParam(
      `The pipeline input must be a JSON object, e.g. \`{ query: "..." }\`; got ${
        Array.isArray(input) ? "an array" : describe(input)
      }.`,
    );
  }
  return { pipeline: name, input };
}

/**
 * A random UUID v4. `crypto.randomUUID` exists only in secure contexts in
 * browsers (not on a plain-http page), `getRandomValues` everywhere.
 */
export function randomTenantId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
    hex.slice(20)
  }`;
}
