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

/** Refuses `value` unless `ok`: "`name` must be RULE; got VALUE." (an option by default). */
function must(
  ok: boolean,
  name: string,
  rule: string,
  value: unknown,
  refuse: (message: string) => RealmError = invalidOption,
): void {
  if (!ok) throw refuse(`\`${name}\` must be ${rule}; got ${describe(value)}.`);
}

const BOOLEAN = "true or false";

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
const OR_NO_LIMIT = `${UP_TO}, or Infinity`;
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
  pipelining: Infinity,
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
  ["heartbeatInterval", `${MS} ≥ 0, ${UP_TO}`, (v) => v >= 0 && delay(v)],
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
  must(typeof value === "number" && !Number.isNaN(value) && ok(value), name, rule, value);
  return value as number;
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

/** Options checked by their type alone: name, type, the rule as the error states it. */
const TYPED_OPTIONS = [
  ["reconnect", "boolean", BOOLEAN],
  ["allowInsecureAuth", "boolean", BOOLEAN],
  ["WebSocket", "function", "a WebSocket constructor"],
  ["logger", "function", "a function `(message, data) => void`"],
] as const;

const MODEL_REQUIRED =
  '`model` is required: a model name, file path or URL, e.g. `{ model: "llama-2-7b" }`.';

/** Checks the constructor's options and fills in the defaults. */
export function resolveOptions(input: RealmClientOptions): ResolvedOptions {
  // No options object at all gets the same answer as one without `model`.
  if (typeof input !== "object" || input === null) throw invalidOption(MODEL_REQUIRED);
  const options = input as unknown as Record<string, unknown>;
  checkKeys(input, Object.keys(OPTION_DEFAULTS), "option", invalidOption);
  if (typeof input.model !== "string" || input.model.trim() === "") {
    throw invalidOption(MODEL_REQUIRED);
  }
  const urls = Array.isArray(input.url) ? input.url : [input.url ?? OPTION_DEFAULTS.url];
  if (urls.length === 0) {
    throw invalidOption("`url` must name a server at least.");
  }
  // `""` is what an empty environment variable (`REALM_API_KEY=`) gives: no key, as before.
  const apiKey = input.apiKey === "" ? undefined : input.apiKey;
  must(apiKey === undefined || typeof apiKey === "string", "apiKey", "a string", apiKey);
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
        `Refusing to send the API key to ${parsed.hostname} over plain ws:// (anyone on the ` +
          "network could read it): use wss://, or `allowInsecureAuth: true`.",
      );
    }
  }
  const tenantId = input.tenantId;
  must(
    tenantId === undefined || (typeof tenantId === "string" && TENANT_ID_PATTERN.test(tenantId)),
    "tenantId",
    "3 to 64 letters, digits, '-' or '_'",
    tenantId,
  );
  for (const [name, type, rule] of TYPED_OPTIONS) {
    must(options[name] === undefined || typeof options[name] === type, name, rule, options[name]);
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
      `\`connections\` (${resolved.connections}) is below the ${urls.length} servers in \`url\`: ` +
        "leave it out for one per server.",
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
    throw invalidParam("The call options must be an object.");
  }
  checkKeys(opts, CALL_OPTIONS, "option", invalidParam);
  const { signal, safeToRepeat, maxRetries } = opts;
  const param = invalidParam;
  must(signal === undefined || isAbortSignal(signal), "signal", "an AbortSignal", signal, param);
  for (const name of ["timeout", "streamIdleTimeout"] as const) {
    const value = opts[name];
    const ok = value === undefined || (typeof value === "number" && value > 0);
    must(ok && delayOrNoLimit(value ?? 1), name, `${MS} > 0, ${OR_NO_LIMIT}`, value, param);
  }
  must(
    safeToRepeat === undefined || typeof safeToRepeat === "boolean",
    "safeToRepeat",
    BOOLEAN,
    safeToRepeat,
    param,
  );
  must(
    maxRetries === undefined || (Number.isInteger(maxRetries) && maxRetries >= 0),
    "maxRetries",
    "an integer ≥ 0",
    maxRetries,
    param,
  );
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
    "an integer from 0 to 2^53-1",
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
  must(typeof options.prompt === "string", "prompt", "a string", options.prompt, invalidParam);
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
    const fits = Number.isFinite(value) && ok(value as number);
    must(fits && (!int || Number.isInteger(value)), name, rule, value, invalidParam);
    params[name] = value;
  }
  const { stream: flag, onToken } = options;
  must(flag === undefined || typeof flag === "boolean", "stream", BOOLEAN, flag, invalidParam);
  const fn = "a function `(token: string) => void`";
  must(
    onToken === undefined || typeof onToken === "function",
    "onToken",
    fn,
    onToken,
    invalidParam,
  );
  params.stream = stream;
  return params;
}

/** Checks a pipeline call and returns the wire `params`. */
export function pipelineParams(name: string, input: unknown): Record<string, unknown> {
  if (typeof name !== "string" || name.trim() === "") {
    throw invalidParam(
      `The pipeline name must be a non-empty string; got ${describe(name)}.`,
    );
  }
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw invalidParam(
      `The pipeline input must be a JSON object; got ${
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
  // Each x a random hex digit, y one of 8, 9, a, b: the version and variant bits of a v4 UUID.
  const random = crypto.getRandomValues(new Uint8Array(32));
  let i = 0;
  return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(
    /[xy]/g,
    (c) => (c === "x" ? random[i++] & 15 : (random[i++] & 3) | 8).toString(16),
  );
}
