/**
 * The runtime-free protocol engine of the stub Realm server.
 *
 * Everything the stub says on the wire is decided here; a runtime adapter (`deno.ts`, `node.ts`,
 * `bun.ts`) only listens, upgrades requests and moves text frames between a socket and a
 * {@linkcode StubConnection}. The engine uses web standards only (timers, `TextEncoder`,
 * `performance`) so every adapter shares it unchanged.
 *
 * The behaviour follows the real `realm-server` 0.1.0, quirks included: one call at a time per
 * connection, `id:"unknown"` errors for frames that are not calls, no `retry_after`, a
 * `max_tokens: 0` stream that never ends, serde_json's error messages (`serde_json.ts`).
 *
 * @module
 */

import {
  type Call,
  type CallParse,
  describeValue,
  type NumberInfo,
  numberKinds,
  parseAuth,
  parseCall,
  SerdeError,
  utf8,
} from "./serde_json.ts";

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/**
 * A user pipeline: receives the call's `params.input` and returns the pipeline's output, which
 * the stub sends as the `data` of the call's `complete` frame. A thrown error becomes a
 * `DISPATCH_ERROR` carrying the error's message, as the real server reports failed pipelines.
 *
 * @example A pipeline that upper-cases its input text
 * ```ts
 * import type { StubPipelineHandler } from "@realm-ai/ws-client/testing";
 *
 * const shout: StubPipelineHandler = (input) => {
 *   const text = (input as { text?: string }).text ?? "";
 *   return { text: text.toUpperCase() };
 * };
 * ```
 */
export type StubPipelineHandler = (input: unknown) => unknown | Promise<unknown>;

/**
 * The per-tenant token bucket of an authenticated stub server.
 *
 * @example 60 calls a minute with a burst of 100 (the real server's defaults)
 * ```ts
 * import type { StubRateLimit } from "@realm-ai/ws-client/testing";
 *
 * const realDefaults: StubRateLimit = { perMinute: 60, burst: 100 };
 * ```
 */
export interface StubRateLimit {
  /** Tokens added to a tenant's bucket per minute (spread evenly); must be above 0. */
  perMinute: number;
  /** Capacity of the bucket, and its content when the tenant makes its first call. */
  burst: number;
}

/**
 * Options of {@linkcode startStubServer}. Every option is optional; the defaults reproduce a
 * real server started with `realm serve` in simulation mode and authentication off.
 *
 * @example An authenticated server with a tight rate limit and fast tokens
 * ```ts
 * import type { StubServerOptions } from "@realm-ai/ws-client/testing";
 *
 * const options: StubServerOptions = {
 *   apiKeys: { "sk_test_1": "tenant-a" },
 *   rateLimit: { perMinute: 60, burst: 2 },
 *   tokenDelayMs: 1,
 * };
 * ```
 */
export interface StubServerOptions {
  /** TCP port to listen on, always on 127.0.0.1. Default `0`: a free port picked by the OS. */
  port?: number;
  /**
   * API key to tenant id. A non-empty record turns on authenticated mode: every connection then
   * starts with `auth_required` and must send `{"type":"auth","api_key":...}` first. Default:
   * open mode (no authentication), the real server's default.
   */
  apiKeys?: Record<string, string>;
  /**
   * Token bucket per tenant, shared by all of the tenant's connections and checked before every
   * call (health and metadata included). Applies to authenticated connections only, as on the
   * real server. Default: no rate limit.
   */
  rateLimit?: StubRateLimit;
  /**
   * Delay between two streamed tokens, in milliseconds. Default `50`, the real simulation's
   * pace. `0` streams as fast as the socket takes it.
   */
  tokenDelayMs?: number;
  /**
   * How long an authenticated connection may take to send its `auth` frame, in milliseconds.
   * Default `10000`, the real server's 10 seconds. The failure message always says
   * `Authentication timeout (10 seconds)`, as the real server's does.
   */
  authTimeoutMs?: number;
  /**
   * Extra pipelines by name, callable with `function: "pipeline"`. The built-in `rag-pipeline`
   * is always present unless this record replaces it. Default: the built-in one only.
   */
  pipelines?: Record<string, StubPipelineHandler>;
  /**
   * Whether the server has a model orchestrator. `false` answers every `pipeline` call with
   * `DISPATCH_ERROR` `Orchestrator not available`, like a real server started without one.
   * Default `true`.
   */
  orchestrator?: boolean;
  /** Version reported by the welcome frame, `health` and `metadata`. Default `"0.1.0"`. */
  version?: string;
}

/**
 * A frame the stub can push on demand with {@linkcode StubFaults.sendMalformed}:
 *
 * | kind | frame |
 * | --- | --- |
 * | `not-json` | `{oops` |
 * | `unknown-id` | a well-formed `complete` frame for an id no client used |
 * | `binary-reply` | `{"error":"Binary messages not supported"}` |
 * | `id-unknown` | `{"id":"unknown","status":"error","error":{"code":"INTERNAL_ERROR",...}}` |
 *
 * @example
 * ```ts
 * import type { StubMalformedKind } from "@realm-ai/ws-client/testing";
 *
 * const kinds: StubMalformedKind[] = ["not-json", "unknown-id", "binary-reply", "id-unknown"];
 * ```
 */
export type StubMalformedKind = "not-json" | "unknown-id" | "binary-reply" | "id-unknown";

/**
 * Fault switches of a running stub server, for testing how a client copes with a misbehaving
 * network or server. Every switch acts at once on open connections and on new ones.
 *
 * @example Drop every connection after its next frame, then heal
 * ```ts
 * import { startStubServer } from "@realm-ai/ws-client/testing";
 *
 * const server = await startStubServer({ tokenDelayMs: 1 });
 * server.faults.dropAfterFrames(1);
 * server.faults.clear();
 * await server.close();
 * ```
 */
export interface StubFaults {
  /**
   * Drops each connection abruptly once the server has sent it `n` more frames (counted from
   * now for open connections, from the start for new ones). `0` drops open connections at once
   * and new ones before their first frame. The drop is a close with code 1011 where the runtime
   * cannot cut the TCP connection. `Infinity` turns the fault off.
   */
  dropAfterFrames(n: number): void;
  /**
   * While on, the server hangs: new connections get no first frame until it is turned off,
   * frames received meanwhile are swallowed (never answered, even later), and running streams
   * pause, resuming when it is turned off.
   */
  stall(on: boolean): void;
  /**
   * Pushes one malformed frame, now, to every open connection, whatever its state (a stalled
   * connection included, so a test can make it the first frame a client sees).
   */
  sendMalformed(kind: StubMalformedKind): void;
  /** While on, WebSocket upgrade requests are answered with HTTP 503. */
  rejectConnections(on: boolean): void;
  /** Turns every fault off (resuming stalled connections). */
  clear(): void;
}

/**
 * A running stub Realm server, returned by {@linkcode startStubServer}.
 *
 * @example Connect a raw WebSocket and read the welcome frame
 * ```ts
 * import { startStubServer } from "@realm-ai/ws-client/testing";
 *
 * const server = await startStubServer();
 * const socket = new WebSocket(server.url);
 * const welcome = await new Promise<string>((resolve) => {
 *   socket.onmessage = (event) => resolve(event.data);
 * });
 * const closed = new Promise((resolve) => (socket.onclose = resolve));
 * socket.close();
 * await closed;
 * await server.close();
 * const { status, version } = JSON.parse(welcome); // "connected", "0.1.0"
 * ```
 */
export interface StubServer {
  /** The address to connect to, `ws://127.0.0.1:<port>`. */
  readonly url: string;
  /** The TCP port the server listens on. */
  readonly port: number;
  /** How many WebSocket connections are open now. */
  readonly connectionCount: number;
  /**
   * How many call frames (text frames that parse as a call) clients have sent so far, answered
   * or not: handy for asserting that a client sent nothing.
   */
  readonly callCount: number;
  /** The fault switches. */
  readonly faults: StubFaults;
  /** Every text frame received from any client so far, in arrival order (a fresh copy). */
  receivedFrames(): string[];
  /**
   * Adds (or re-enables) an API key. Takes effect for later authentications; the mode
   * (open or authenticated) is fixed when the server starts.
   */
  setApiKey(key: string, tenantId: string): void;
  /**
   * Revokes an API key for later authentications: `"disabled"` (the default) makes them fail
   * with `API key is disabled`, `"removed"` with `Invalid API key`. Authenticated connections
   * stay open, as on the real server.
   */
  revokeApiKey(key: string, how?: "disabled" | "removed"): void;
  /**
   * Stops listening, closes every connection (close without a status code, seen as 1005) and
   * clears every timer. Idempotent: later calls return the same promise.
   */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Adapter-facing types
// ---------------------------------------------------------------------------------------------

/**
 * The engine's view of one client socket, implemented by each runtime adapter.
 *
 * @example A peer that records what the engine sends
 * ```ts
 * import type { StubPeer } from "./engine.ts";
 *
 * const sent: string[] = [];
 * const peer: StubPeer = { send: (text) => sent.push(text), close: () => {} };
 * ```
 */
export interface StubPeer {
  /** Sends one text frame. */
  send(text: string): void;
  /** Closes without a status code: the client sees close code 1005. */
  close(): void;
  /**
   * Drops the connection abruptly (a TCP reset where the runtime allows it, else a close with
   * code 1011). When absent, {@linkcode StubPeer.close} is used instead.
   */
  terminate?(): void;
}

/**
 * What an adapter reports about one socket to the engine, returned by
 * {@linkcode StubEngine.openConnection}.
 *
 * @example
 * ```ts
 * import { StubEngine } from "./engine.ts";
 *
 * const engine = new StubEngine();
 * const connection = engine.openConnection({ send: () => {}, close: () => {} });
 * connection.onClose();
 * engine.close();
 * ```
 */
export interface StubConnection {
  /** A text frame arrived. */
  onText(text: string): void;
  /** A binary frame arrived (its content never matters to the server). */
  onBinary(): void;
  /** The socket closed, whoever closed it. */
  onClose(): void;
}

/**
 * What an adapter owns: the listening socket.
 *
 * @example
 * ```ts
 * import type { StubListener } from "./engine.ts";
 *
 * const listener: StubListener = { port: 8080, close: () => Promise.resolve() };
 * ```
 */
export interface StubListener {
  /** The bound TCP port. */
  readonly port: number;
  /** Stops listening and resolves once every socket has closed. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// generate's parameters, as `serde_json::from_value::<GenerateOptions>(params)` reads them
// ---------------------------------------------------------------------------------------------

interface GenerateOptions {
  prompt: string;
  maxTokens: number;
  stream: boolean;
}

type FieldCheck = (value: unknown, info: NumberInfo | undefined) => unknown;

const expectString: FieldCheck = (value, info) => {
  if (typeof value === "string") return value;
  throw new SerdeError(`invalid type: ${describeValue(value, info)}, expected a string`);
};

const expectUsize: FieldCheck = (value, info) => {
  if (typeof value === "number" && info?.kind === "uint") return value;
  if (typeof value === "number" && info?.kind === "int") {
    throw new SerdeError(`invalid value: integer \`${info.raw}\`, expected usize`);
  }
  throw new SerdeError(`invalid type: ${describeValue(value, info)}, expected usize`);
};

const expectFloat = (name: string): FieldCheck => (value, info) => {
  if (typeof value === "number") return value;
  throw new SerdeError(`invalid type: ${describeValue(value, info)}, expected ${name}`);
};

/** GenerateOptions' fields in declaration order, with their checks and `#[serde(default)]`s. */
const GENERATE_FIELDS: ReadonlyArray<[string, FieldCheck, unknown]> = [
  ["prompt", expectString, undefined],
  ["model", (value, info) => value === null ? null : expectString(value, info), null],
  ["max_tokens", expectUsize, 100],
  ["temperature", expectFloat("f64"), 0.7],
  ["top_p", expectFloat("f64"), 0.9],
  ["top_k", expectUsize, 0],
  ["repetition_penalty", expectFloat("f32"), 1.0],
  ["stream", (value, info) => {
    if (typeof value === "boolean") return value;
    throw new SerdeError(`invalid type: ${describeValue(value, info)}, expected a boolean`);
  }, false],
];

/** Throws a SerdeError with serde_json's `from_value` message (no position). */
function readGenerateOptions(call: Call): GenerateOptions {
  const params = call.params;
  const fields = new Map<string, unknown>();
  const kinds = typeof params === "object" && params !== null ? numberKinds.get(params) : undefined;
  if (Array.isArray(params)) {
    if (params.length === 0) {
      throw new SerdeError(
        `invalid length 0, expected struct GenerateOptions with ${GENERATE_FIELDS.length} elements`,
      );
    }
    GENERATE_FIELDS.forEach(([name, check], index) => {
      if (index < params.length) fields.set(name, check(params[index], kinds?.get(index)));
    });
    if (params.length > GENERATE_FIELDS.length) {
      throw new SerdeError(`invalid length ${params.length}, expected fewer elements in array`);
    }
  } else if (typeof params === "object" && params !== null) {
    // A serde_json::Value map is a BTreeMap: fields are visited in sorted key order.
    const record = params as Record<string, unknown>;
    for (const key of Object.keys(record).sort()) {
      const field = GENERATE_FIELDS.find(([name]) => name === key);
      if (field !== undefined) fields.set(key, field[1](record[key], kinds?.get(key)));
    }
    if (!fields.has("prompt")) throw new SerdeError("missing field `prompt`");
  } else {
    const info = numberKinds.get(call.record)?.get("params");
    throw new SerdeError(
      `invalid type: ${describeValue(params, info)}, expected struct GenerateOptions`,
    );
  }
  const read = (name: string) =>
    fields.has(name) ? fields.get(name) : GENERATE_FIELDS.find(([key]) => key === name)![2];
  return {
    prompt: read("prompt") as string,
    maxTokens: read("max_tokens") as number,
    stream: read("stream") as boolean,
  };
}

/** `RuntimeManager::validate_tenant_id`: lengths in UTF-8 bytes, Unicode alphanumerics. */
function tenantIdProblem(tenantId: string): string | undefined {
  const length = utf8.encode(tenantId).length;
  if (length < 3 || length > 64) {
    return `Tenant ID must be between 3 and 64 characters, got ${length}`;
  }
  if (!/^[\p{Alphabetic}\p{Nd}\p{Nl}\p{No}_-]*$/u.test(tenantId)) {
    return "Tenant ID must contain only alphanumeric characters, hyphens, and underscores";
  }
  return undefined;
}

const wordsOf = (text: string): string[] => text.split(/\s+/u).filter((word) => word !== "");

/** The simulated non-streaming answer, exactly as the real dispatcher picks it. */
function simulatedText(prompt: string): string {
  const lower = prompt.toLowerCase();
  if (lower.includes("capital of france")) return "Paris";
  if (lower.includes("capital") && lower.includes("france")) {
    return "The capital of France is Paris.";
  }
  return `Simulated response to: ${prompt}`;
}

/**
 * The simulated stream's words: the real simulation streams these 13 words whatever the prompt.
 * The stub then cycles them so that a stream always carries exactly `max_tokens` tokens (the real
 * server stops after the 13th), which lets benchmarks ask for long streams.
 */
function streamWords(prompt: string): string[] {
  const first = wordsOf(prompt)[0] ?? "unknown";
  return wordsOf(`The capital of France is Paris. This is a simulated response to: ${first}`);
}

// ---------------------------------------------------------------------------------------------
// Built-in pipeline and metadata
// ---------------------------------------------------------------------------------------------

/** The built-in `rag-pipeline`: `{query, context?}` in, a deterministic answer out. */
const ragPipeline: StubPipelineHandler = (input) => {
  const fields = typeof input === "object" && input !== null
    ? input as Record<string, unknown>
    : {};
  const query = typeof input === "string"
    ? input
    : [fields.query, fields.prompt, fields.text].find((value) => typeof value === "string");
  if (typeof query !== "string") throw new Error("Could not extract prompt from step input");
  const context = fields.context;
  return {
    answer: simulatedText(query),
    sources: Array.isArray(context) ? context : context === undefined ? [] : [context],
  };
};

function metadataOf(version: string): unknown {
  const param = (name: string, type: string, description: string, fallback?: unknown) => ({
    name,
    type,
    description,
    required: fallback === undefined,
    ...(fallback === undefined ? {} : { default: fallback }),
  });
  return {
    version,
    functions: [
      {
        name: "generate",
        description: "Generate text completion from a prompt",
        params: [
          param("prompt", "String", "Input text prompt"),
          param("max_tokens", "usize", "Maximum tokens to generate", 100),
          param("temperature", "f64", "Sampling temperature (0.0-2.0)", 0.7),
          param("stream", "bool", "Enable token streaming", false),
        ],
        returns: "GenerationResult",
        streaming: true,
      },
      {
        name: "health",
        description: "Check server health status",
        params: [],
        returns: "HealthStatus",
        streaming: false,
      },
      {
        name: "metadata",
        description: "Get runtime metadata (available functions)",
        params: [],
        returns: "RuntimeMetadata",
        streaming: false,
      },
      {
        name: "pipeline",
        description: "Execute a multi-model pipeline",
        params: [
          param("pipeline", "String", "Pipeline name to execute"),
          param("input", "Object", "Input data for the pipeline"),
        ],
        returns: "PipelineResult",
        streaming: false,
      },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// Frames the server sends
// ---------------------------------------------------------------------------------------------

const complete = (id: string, data: unknown): string =>
  JSON.stringify({ id, status: "complete", data: data === undefined ? null : data });

const errorFrame = (id: string, code: string, message: string): string =>
  JSON.stringify({ id, status: "error", error: { code, message } });

const BINARY_REPLY = JSON.stringify({ error: "Binary messages not supported" });
const INVALID_AUTH_FORMAT =
  'Invalid authentication message format. Expected: {"type":"auth","api_key":"your-key"}';

const errorMessage = (error: unknown): string =>
  error instanceof Error ? error.message : String(error);

// ---------------------------------------------------------------------------------------------
// Engine
// ---------------------------------------------------------------------------------------------

interface ApiKeyEntry {
  tenantId: string;
  enabled: boolean;
}

interface Bucket {
  tokens: number;
  refilledAt: number;
}

type Inbound = { kind: "text"; text: string; parsed: CallParse } | { kind: "binary" };

/** A promise plus its resolver, without relying on `Promise.withResolvers` (Node 22+). */
function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}

function checkRateLimit(rateLimit: StubRateLimit): StubRateLimit {
  const { perMinute, burst } = rateLimit;
  if (typeof perMinute !== "number" || !(perMinute > 0) || !Number.isFinite(perMinute)) {
    throw new RangeError(`rateLimit.perMinute must be a finite number > 0, got ${perMinute}`);
  }
  return { perMinute, burst: checkNonNegative("rateLimit.burst", burst, 0) };
}

function checkNonNegative(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !(value >= 0) || !Number.isFinite(value)) {
    throw new RangeError(`${name} must be a finite number >= 0, got ${value}`);
  }
  return value;
}

/** What a connection needs from its engine: settings and shared state, kept off the public API. */
interface ConnectionHost {
  readonly authenticated: boolean;
  readonly tokenDelayMs: number;
  readonly authTimeoutMs: number;
  readonly orchestrator: boolean;
  readonly version: string;
  /** The gate to wait on while the server is stalled, else undefined. */
  stallGate(): Promise<void> | undefined;
  /** Records a received text frame and parses it as a call (counting the calls). */
  record(text: string): CallParse;
  forget(connection: Connection): void;
  apiKey(key: string): ApiKeyEntry | undefined;
  pipeline(name: string): StubPipelineHandler | undefined;
  uptimeSeconds(): number;
  /** Takes a token from the tenant's bucket: undefined if allowed, else whole seconds to wait. */
  rateLimitWait(tenantId: string): number | undefined;
}

/**
 * The stub server's protocol engine, independent of any runtime: it decides every frame the
 * server sends, per connection, given the frames a {@linkcode StubPeer} reports.
 *
 * @example Drive the engine with an in-memory peer
 * ```ts
 * import { StubEngine } from "./engine.ts";
 *
 * const engine = new StubEngine();
 * const sent: string[] = [];
 * const connection = engine.openConnection({ send: (text) => sent.push(text), close: () => {} });
 * connection.onText('{"id":"1","function":"health","params":{}}');
 * await new Promise((resolve) => setTimeout(resolve, 10));
 * connection.onClose();
 * engine.close();
 * const [welcome, health] = sent; // the welcome frame, then health's complete frame
 * ```
 */
export class StubEngine {
  /** The fault switches of this engine (see {@linkcode StubFaults}). */
  readonly faults: StubFaults;
  readonly #host: ConnectionHost;
  readonly #apiKeys = new Map<string, ApiKeyEntry>();
  readonly #buckets = new Map<string, Bucket>();
  readonly #pipelines = new Map<string, StubPipelineHandler>();
  readonly #startedAt = Date.now();
  readonly #connections = new Set<Connection>();
  readonly #received: string[] = [];
  #callCount = 0;
  #dropBudget = Infinity;
  #stall: { promise: Promise<void>; resolve: () => void } | undefined;
  #rejecting = false;
  #closed = false;
  #orphanCount = 0;

  /**
   * Checks the options (throwing a `RangeError` or `TypeError` for a bad one) and prepares an
   * engine with no connections.
   */
  constructor(options: StubServerOptions = {}) {
    const tokenDelayMs = checkNonNegative("tokenDelayMs", options.tokenDelayMs, 50);
    const authTimeoutMs = checkNonNegative("authTimeoutMs", options.authTimeoutMs, 10_000);
    const rateLimit = options.rateLimit === undefined
      ? undefined
      : checkRateLimit(options.rateLimit);
    for (const [key, tenantId] of Object.entries(options.apiKeys ?? {})) {
      this.setApiKey(key, tenantId);
    }
    this.#pipelines.set("rag-pipeline", ragPipeline);
    for (const [name, handler] of Object.entries(options.pipelines ?? {})) {
      if (typeof handler !== "function") {
        throw new TypeError(`pipeline "${name}" is not a function`);
      }
      this.#pipelines.set(name, handler);
    }
    this.#host = {
      // The mode is fixed at start, as a real server's `--auth` flag is.
      authenticated: this.#apiKeys.size > 0,
      tokenDelayMs,
      authTimeoutMs,
      orchestrator: options.orchestrator ?? true,
      version: options.version ?? "0.1.0",
      stallGate: () => this.#stall?.promise,
      record: (text) => {
        this.#received.push(text);
        const parsed = parseCall(text);
        if (parsed.ok) this.#callCount++;
        return parsed;
      },
      forget: (connection) => this.#connections.delete(connection),
      apiKey: (key) => this.#apiKeys.get(key),
      pipeline: (name) => this.#pipelines.get(name),
      uptimeSeconds: () => Math.floor((Date.now() - this.#startedAt) / 1000),
      rateLimitWait: (tenantId) =>
        rateLimit === undefined ? undefined : this.#takeToken(rateLimit, tenantId),
    };
    this.faults = this.#createFaults();
  }

  /** Whether an adapter should accept an upgrade request now (false: answer HTTP 503). */
  get acceptingConnections(): boolean {
    return !this.#rejecting && !this.#closed;
  }

  /** How many connections are open now. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** How many call frames clients have sent so far (see {@linkcode StubServer.callCount}). */
  get callCount(): number {
    return this.#callCount;
  }

  /** Every text frame received so far, in order (a copy). */
  receivedFrames(): string[] {
    return [...this.#received];
  }

  /** Adds or re-enables an API key. */
  setApiKey(key: string, tenantId: string): void {
    if (typeof key !== "string" || typeof tenantId !== "string") {
      throw new TypeError("API keys and tenant ids must be strings");
    }
    this.#apiKeys.set(key, { tenantId, enabled: true });
  }

  /** Disables or removes an API key for later authentications. */
  revokeApiKey(key: string, how: "disabled" | "removed" = "disabled"): void {
    if (how === "removed") this.#apiKeys.delete(key);
    else {
      const entry = this.#apiKeys.get(key);
      if (entry !== undefined) entry.enabled = false;
    }
  }

  /** Starts serving one freshly opened socket; the engine sends its first frame at once. */
  openConnection(peer: StubPeer): StubConnection {
    const connection = new Connection(this.#host, peer, this.#dropBudget);
    if (this.#closed) {
      connection.closeGently();
      return connection;
    }
    this.#connections.add(connection);
    connection.start();
    return connection;
  }

  /** Closes every connection (without a status code) and stops all work. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const connection of [...this.#connections]) connection.closeGently();
    this.#stall?.resolve();
    this.#stall = undefined;
  }

  /** The real limiter: a bucket per tenant, created full on first use, refilled continuously. */
  #takeToken(limit: StubRateLimit, tenantId: string): number | undefined {
    const now = performance.now();
    const perSecond = limit.perMinute / 60;
    let bucket = this.#buckets.get(tenantId);
    if (bucket === undefined) {
      this.#buckets.set(tenantId, bucket = { tokens: limit.burst, refilledAt: now });
    }
    const refill = (now - bucket.refilledAt) / 1000 * perSecond;
    bucket.tokens = Math.min(limit.burst, bucket.tokens + refill);
    bucket.refilledAt = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return undefined;
    }
    // Rounded down, as the real limiter's `Duration::as_secs()`: often 0.
    return Math.floor((1 - bucket.tokens) / perSecond);
  }

  #createFaults(): StubFaults {
    const faults: StubFaults = {
      dropAfterFrames: (n) => {
        if (typeof n !== "number" || Number.isNaN(n)) {
          throw new RangeError(`dropAfterFrames needs a number, got ${n}`);
        }
        this.#dropBudget = Math.max(0, n);
        for (const connection of [...this.#connections]) connection.setDropBudget(this.#dropBudget);
      },
      stall: (on) => {
        if (on && this.#stall === undefined && !this.#closed) this.#stall = signal();
        if (!on) {
          this.#stall?.resolve();
          this.#stall = undefined;
        }
      },
      sendMalformed: (kind) => {
        const frame = this.#malformedFrame(kind);
        for (const connection of [...this.#connections]) connection.sendNow(frame);
      },
      rejectConnections: (on) => {
        this.#rejecting = on;
      },
      clear: () => {
        faults.dropAfterFrames(Infinity);
        faults.stall(false);
        faults.rejectConnections(false);
      },
    };
    return faults;
  }

  #malformedFrame(kind: StubMalformedKind): string {
    switch (kind) {
      case "not-json":
        return "{oops";
      case "unknown-id":
        return complete(`stub-orphan-${++this.#orphanCount}`, {
          status: "healthy",
          version: this.#host.version,
          uptime_seconds: this.#host.uptimeSeconds(),
        });
      case "binary-reply":
        return BINARY_REPLY;
      case "id-unknown":
        return errorFrame(
          "unknown",
          "INTERNAL_ERROR",
          "Invalid function call: expected value at line 1 column 1",
        );
      default:
        throw new TypeError(`unknown malformed frame kind: ${kind}`);
    }
  }
}

/** One client connection: a strictly sequential loop over the frames it receives. */
class Connection implements StubConnection {
  readonly #host: ConnectionHost;
  readonly #peer: StubPeer;
  readonly #queue: Inbound[] = [];
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  /** Resolvers of pending sleeps, answered `false` when the connection closes. */
  readonly #sleepers = new Set<(slept: boolean) => void>();
  readonly #closedSignal = signal();
  #wake: (() => void) | undefined;
  #framesLeft: number;
  #closed = false;
  #tenantId: string | null = null;

  constructor(host: ConnectionHost, peer: StubPeer, dropBudget: number) {
    this.#host = host;
    this.#peer = peer;
    this.#framesLeft = dropBudget;
  }

  // --- StubConnection ---------------------------------------------------------------------

  onText(text: string): void {
    if (this.#closed) return;
    const parsed = this.#host.record(text);
    if (this.#host.stallGate() !== undefined) return; // a hung server swallows what it gets
    this.#queue.push({ kind: "text", text, parsed });
    this.#wake?.();
  }

  onBinary(): void {
    if (this.#closed || this.#host.stallGate() !== undefined) return;
    this.#queue.push({ kind: "binary" });
    this.#wake?.();
  }

  onClose(): void {
    this.#finish();
  }

  // --- engine-facing ----------------------------------------------------------------------

  start(): void {
    this.#run().catch(() => this.#drop());
  }

  closeGently(): void {
    if (this.#finish()) this.#peer.close();
  }

  setDropBudget(n: number): void {
    this.#framesLeft = n;
    if (n <= 0) this.#drop();
  }

  /** Sends at once, bypassing a stall; false when the connection is (now) gone. */
  sendNow(frame: string): boolean {
    if (this.#closed) return false;
    try {
      this.#peer.send(frame);
    } catch {
      this.#drop();
      return false;
    }
    if (--this.#framesLeft <= 0) {
      this.#drop();
      return false;
    }
    return true;
  }

  // --- internals --------------------------------------------------------------------------

  /** Marks the connection closed and releases everything; false if it already was. */
  #finish(): boolean {
    if (this.#closed) return false;
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const wake of this.#sleepers) wake(false);
    this.#sleepers.clear();
    this.#queue.length = 0;
    this.#closedSignal.resolve();
    this.#wake?.();
    this.#host.forget(this);
    return true;
  }

  #drop(): void {
    if (!this.#finish()) return;
    if (this.#peer.terminate) this.#peer.terminate();
    else this.#peer.close();
  }

  #timer(ms: number, callback: () => void): ReturnType<typeof setTimeout> {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      callback();
    }, ms);
    this.#timers.add(timer);
    return timer;
  }

  #cancelTimer(timer: ReturnType<typeof setTimeout> | undefined): void {
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#timers.delete(timer);
  }

  /** Resolves true after `ms`, or false as soon as the connection closes. */
  #sleep(ms: number): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.#sleepers.add(resolve);
      this.#timer(ms, () => {
        this.#sleepers.delete(resolve);
        resolve(true);
      });
    });
  }

  /** Waits out a stall; false when the connection closed meanwhile. */
  async #unstalled(): Promise<boolean> {
    for (let gate = this.#host.stallGate(); gate !== undefined; gate = this.#host.stallGate()) {
      if (this.#closed) return false;
      await Promise.race([gate, this.#closedSignal.promise]);
    }
    return !this.#closed;
  }

  /** Sends once the server is not stalled; false when the connection is gone. */
  async #emit(frame: string): Promise<boolean> {
    if (this.#host.stallGate() !== undefined && !(await this.#unstalled())) return false;
    return this.sendNow(frame);
  }

  /** The next inbound frame; null once closed, undefined when `timeoutMs` passed first. */
  #next(timeoutMs?: number): Promise<Inbound | null | undefined> {
    const ready = this.#queue.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => {
      let timeout: ReturnType<typeof setTimeout> | undefined;
      this.#wake = () => {
        this.#wake = undefined;
        this.#cancelTimer(timeout);
        resolve(this.#closed ? null : this.#queue.shift() ?? null);
      };
      if (timeoutMs !== undefined) {
        timeout = this.#timer(timeoutMs, () => {
          this.#wake = undefined;
          resolve(undefined);
        });
      }
    });
  }

  async #run(): Promise<void> {
    if (this.#framesLeft <= 0) return this.#drop();
    if (!(await this.#unstalled())) return;
    if (this.#host.authenticated && !(await this.#authenticate())) return;
    const welcome = { status: "connected", version: this.#host.version, tenant_id: this.#tenantId };
    if (!(await this.#emit(JSON.stringify(welcome)))) return;
    // One call at a time: the next frame is not looked at before this one's work is done.
    for (;;) {
      const inbound = await this.#next();
      if (!inbound) return;
      await this.#handle(inbound);
      if (this.#closed) return;
    }
  }

  /** The real handshake: auth_required, then the first frame decides. False when it failed. */
  async #authenticate(): Promise<boolean> {
    const required = {
      type: "auth_required",
      message: "Please send authentication message with your API key",
    };
    if (!(await this.#emit(JSON.stringify(required)))) return false;
    const first = await this.#next(this.#host.authTimeoutMs);
    if (first === null) return false;
    let failure: string;
    if (first === undefined) failure = "Authentication timeout (10 seconds)";
    else if (first.kind === "binary") failure = "Authentication message must be text";
    else {
      const key = parseAuth(first.text);
      const entry = key === undefined ? undefined : this.#host.apiKey(key);
      if (key === undefined) failure = INVALID_AUTH_FORMAT;
      else if (entry === undefined) failure = "Invalid API key";
      else if (!entry.enabled) failure = "API key is disabled";
      else {
        this.#tenantId = entry.tenantId;
        return await this.#emit(
          JSON.stringify({ type: "auth_success", tenant_id: entry.tenantId }),
        );
      }
    }
    if (await this.#emit(JSON.stringify({ type: "auth_failed", error: failure }))) {
      this.closeGently();
    }
    return false;
  }

  async #handle(inbound: Inbound): Promise<void> {
    if (inbound.kind === "binary") {
      await this.#emit(BINARY_REPLY);
      return;
    }
    const parsed = inbound.parsed;
    if (!parsed.ok) {
      const message = `Invalid function call: ${parsed.reason}`;
      await this.#emit(errorFrame("unknown", "INTERNAL_ERROR", message));
      return;
    }
    const call = parsed.call;
    if (this.#tenantId !== null) {
      if (call.tenant_id !== this.#tenantId) {
        await this.#emit(errorFrame(call.id, "UNAUTHORIZED", "Tenant ID mismatch"));
        return;
      }
      const wait = this.#host.rateLimitWait(this.#tenantId);
      if (wait !== undefined) {
        const message = `Rate limit exceeded. Try again in ${wait} seconds.`;
        await this.#emit(errorFrame(call.id, "RATE_LIMIT_EXCEEDED", message));
        return;
      }
    }
    if (call.function === "generate") {
      await this.#generate(call);
      return;
    }
    const frame = await this.#answer(call);
    if (frame !== undefined) await this.#emit(frame);
  }

  /** The single frame answering a call other than generate (undefined if closed meanwhile). */
  async #answer(call: Call): Promise<string | undefined> {
    const version = this.#host.version;
    switch (call.function) {
      case "health":
        return complete(call.id, {
          status: "healthy",
          version,
          uptime_seconds: this.#host.uptimeSeconds(),
        });
      case "metadata":
        return complete(call.id, metadataOf(version));
      case "pipeline":
        return await this.#pipeline(call);
      default:
        return errorFrame(call.id, "DISPATCH_ERROR", `Unknown function: ${call.function}`);
    }
  }

  async #pipeline(call: Call): Promise<string | undefined> {
    const dispatchError = (message: string) => errorFrame(call.id, "DISPATCH_ERROR", message);
    if (!this.#host.orchestrator) return dispatchError("Orchestrator not available");
    // `params.get("pipeline")` on a serde_json::Value: only an object has fields.
    const params = typeof call.params === "object" && call.params !== null &&
        !Array.isArray(call.params)
      ? call.params as Record<string, unknown>
      : {};
    const name = params.pipeline;
    if (typeof name !== "string") return dispatchError("Missing 'pipeline' parameter");
    const handler = this.#host.pipeline(name);
    if (handler === undefined) return dispatchError(`Pipeline not found: ${name}`);
    const input = Object.hasOwn(params, "input") ? params.input : {};
    let output: unknown;
    try {
      // Errors from a pipeline are dispatch errors on the real server, whatever their cause.
      output = await Promise.race([
        Promise.resolve().then(() => handler(input)),
        this.#closedSignal.promise,
      ]);
    } catch (error) {
      return dispatchError(errorMessage(error));
    }
    if (this.#closed) return undefined;
    try {
      return complete(call.id, output);
    } catch (error) {
      // The real server reports a result it cannot serialize as an error of no call.
      return errorFrame("unknown", "INTERNAL_ERROR", errorMessage(error));
    }
  }

  async #generate(call: Call): Promise<void> {
    let options: GenerateOptions;
    try {
      options = readGenerateOptions(call);
    } catch (error) {
      await this.#emit(errorFrame(call.id, "DISPATCH_ERROR", String(error)));
      return;
    }
    const problem = call.tenant_id === null ? undefined : tenantIdProblem(call.tenant_id);
    if (problem !== undefined) {
      await this.#emit(errorFrame(call.id, "DISPATCH_ERROR", problem));
      return;
    }
    if (!options.stream) {
      // The real simulation answers at once and ignores max_tokens.
      const text = simulatedText(options.prompt);
      await this.#emit(complete(call.id, {
        text,
        tokens_generated: wordsOf(text).length,
        prompt_tokens: wordsOf(options.prompt).length,
        cost_usd: 0.00024,
        time_ms: 150,
      }));
      return;
    }
    // max_tokens 0 streams nothing, not even `complete`: the call never ends (a real quirk).
    const words = streamWords(options.prompt);
    const total = options.maxTokens;
    const delay = this.#host.tokenDelayMs;
    for (let index = 0; index < total; index++) {
      // The first token goes out at once, then one per delay; with no delay, still yield to
      // the event loop now and then so other connections and timers get their turn.
      if (index > 0 && (delay > 0 || index % 100 === 0) && !(await this.#sleep(delay))) return;
      const frame = JSON.stringify({
        id: call.id,
        status: "streaming",
        data: { text: `${words[index % words.length]} `, index, is_final: index === total - 1 },
      });
      if (!(await this.#emit(frame))) return;
    }
    if (total > 0) {
      await this.#emit(complete(call.id, { status: "complete", tokens_generated: total }));
    }
  }
}

/**
 * Joins an engine and an adapter's listener into the public {@linkcode StubServer}.
 *
 * @example
 * ```ts
 * import { createStubServer, StubEngine } from "./engine.ts";
 *
 * const engine = new StubEngine();
 * const server = createStubServer(engine, { port: 1234, close: () => Promise.resolve() });
 * const url = server.url; // "ws://127.0.0.1:1234"
 * await server.close();
 * ```
 */
export function createStubServer(engine: StubEngine, listener: StubListener): StubServer {
  let closing: Promise<void> | undefined;
  return {
    url: `ws://127.0.0.1:${listener.port}`,
    port: listener.port,
    get connectionCount() {
      return engine.connectionCount;
    },
    get callCount() {
      return engine.callCount;
    },
    faults: engine.faults,
    receivedFrames: () => engine.receivedFrames(),
    setApiKey: (key, tenantId) => engine.setApiKey(key, tenantId),
    revokeApiKey: (key, how) => engine.revokeApiKey(key, how),
    close: () => {
      closing ??= (async () => {
        engine.close();
        await listener.close();
      })();
      return closing;
    },
  };
}
