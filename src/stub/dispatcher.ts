/**
 * What the stub server answers to each call, as `dispatcher.rs` of `realm-server` decides it
 * (`FunctionDispatcher`: `generate` in its simulation mode, `pipeline`, `health`, `metadata`,
 * unknown functions): the stub's counterpart of that module. It returns the frames; the
 * connection loop (`websocket.ts`) sends them, paced, as `handle_dispatch_result` does.
 *
 * @module
 */

import {
  type Call,
  describeValue,
  type NumberInfo,
  numberKinds,
  SerdeError,
} from "./serde_json.ts";
import { complete, completeJson, errorFrame, serdeJson, streaming } from "./protocol.ts";
import { tenantIdProblem } from "./runtime_manager.ts";

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

/** Rust's `split_whitespace`: Unicode White_Space (U+0085 included, U+FEFF not, unlike `\s`). */
const wordsOf = (text: string): string[] =>
  text.split(/\p{White_Space}+/u).filter((word) => word !== "");

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
 * The simulated stream's words: the real simulation streams these 13 words whatever the prompt
 * (the 13th is the prompt's first word), fewer when `max_tokens` is smaller. With the stub's
 * `longStreams` switch they are cycled to exactly `max_tokens` tokens, for long streams in tests.
 */
function streamWords(prompt: string): string[] {
  const first = wordsOf(prompt)[0] ?? "unknown";
  return wordsOf(`The capital of France is Paris. This is a simulated response to: ${first}`);
}

/** The built-in `rag-pipeline`: `{query, context?}` in, a deterministic answer out. */
export const ragPipeline: StubPipelineHandler = (input) => {
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
  // Keys in the order serde_json writes the server's `to_value` of it: sorted.
  const param = (name: string, type: string, description: string, fallback?: unknown) => ({
    ...(fallback === undefined ? {} : { default: fallback }),
    description,
    name,
    required: fallback === undefined,
    type,
  });
  return {
    functions: [
      {
        description: "Generate text completion from a prompt",
        name: "generate",
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
        description: "Check server health status",
        name: "health",
        params: [],
        returns: "HealthStatus",
        streaming: false,
      },
      {
        description: "Get runtime metadata (available functions)",
        name: "metadata",
        params: [],
        returns: "RuntimeMetadata",
        streaming: false,
      },
      {
        description: "Execute a multi-model pipeline",
        name: "pipeline",
        params: [
          param("pipeline", "String", "Pipeline name to execute"),
          param("input", "Object", "Input data for the pipeline"),
        ],
        returns: "PipelineResult",
        streaming: false,
      },
    ],
    version,
  };
}

/**
 * What a call dispatches to: one frame, or a stream of token frames followed by its `complete`
 * frame (`DispatchResult::Single` / `::Stream`). A stream with no `end` never ends, as the real
 * server's `max_tokens: 0` stream does not.
 */
export type DispatchResult =
  | { kind: "single"; frame: string }
  | { kind: "stream"; tokens: Iterable<string>; end: string | undefined };

/** What the dispatcher needs from its server: settings and the pipelines. */
export interface DispatchHost {
  readonly version: string;
  readonly orchestrator: boolean;
  /** Streams carry exactly `max_tokens` tokens, past the real simulation's 13 (`longStreams`). */
  readonly longStreams: boolean;
  pipeline(name: string): StubPipelineHandler | undefined;
}

/** The connection a call came on: a pipeline still running when it closes is not answered. */
export interface DispatchConnection {
  readonly closed: Promise<void>;
  isClosed(): boolean;
}

/**
 * Dispatches one call (already past the tenant and rate limit checks); undefined when the
 * connection closed before the answer was ready.
 *
 * @example
 * ```ts
 * import { dispatch } from "./dispatcher.ts";
 * import { parseCall } from "./serde_json.ts";
 *
 * const parsed = parseCall('{"id":"1","function":"health","params":{}}');
 * if (!parsed.ok) throw new Error(parsed.reason);
 * const host = {
 *   version: "0.1.0",
 *   orchestrator: false,
 *   longStreams: false,
 *   pipeline: () => undefined,
 * };
 * const result = await dispatch(parsed.call, host, {
 *   closed: new Promise(() => {}),
 *   isClosed: () => false,
 * });
 * // { kind: "single", frame: '{"id":"1","status":"complete","data":{"status":"healthy",...}}' }
 * ```
 */
export async function dispatch(
  call: Call,
  host: DispatchHost,
  connection: DispatchConnection,
): Promise<DispatchResult | undefined> {
  const single = (frame: string): DispatchResult => ({ kind: "single", frame });
  switch (call.function) {
    case "generate":
      return generate(call, host.longStreams);
    case "health":
      // The real server's uptime is always 0: it does not track it.
      return single(complete(call.id, {
        status: "healthy",
        uptime_seconds: 0,
        version: host.version,
      }));
    case "metadata":
      return single(complete(call.id, metadataOf(host.version)));
    case "pipeline": {
      const frame = await pipeline(call, host, connection);
      return frame === undefined ? undefined : single(frame);
    }
    default:
      return single(errorFrame(call.id, "DISPATCH_ERROR", `Unknown function: ${call.function}`));
  }
}

/** `handle_generate` in simulation mode. */
function generate(call: Call, longStreams: boolean): DispatchResult {
  const dispatchError = (message: string): DispatchResult => ({
    kind: "single",
    frame: errorFrame(call.id, "DISPATCH_ERROR", message),
  });
  let options: GenerateOptions;
  try {
    options = readGenerateOptions(call);
  } catch (error) {
    return dispatchError(String(error));
  }
  const problem = call.tenant_id === null ? undefined : tenantIdProblem(call.tenant_id);
  if (problem !== undefined) return dispatchError(problem);
  if (!options.stream) {
    // The real simulation answers at once and ignores max_tokens.
    const text = simulatedText(options.prompt);
    return {
      kind: "single",
      frame: complete(call.id, {
        cost_usd: 0.00024,
        prompt_tokens: wordsOf(options.prompt).length,
        text,
        time_ms: 150,
        tokens_generated: wordsOf(text).length,
      }),
    };
  }
  const words = streamWords(options.prompt);
  const total = longStreams ? options.maxTokens : Math.min(options.maxTokens, words.length);
  return {
    kind: "stream",
    tokens: tokenFrames(call.id, words, total),
    // max_tokens 0 streams nothing, not even `complete`: the call never ends (a real quirk).
    end: total > 0 ? complete(call.id, { status: "complete", tokens_generated: total }) : undefined,
  };
}

/** The stream's token frames, made one at a time as the connection sends them. */
function* tokenFrames(id: string, words: string[], total: number): Generator<string> {
  for (let index = 0; index < total; index++) {
    yield streaming(id, `${words[index % words.length]} `, index, index === total - 1);
  }
}

/** `handle_pipeline`: the orchestrator's pipelines, by name. */
async function pipeline(
  call: Call,
  host: DispatchHost,
  connection: DispatchConnection,
): Promise<string | undefined> {
  const dispatchError = (message: string) => errorFrame(call.id, "DISPATCH_ERROR", message);
  if (!host.orchestrator) return dispatchError("Orchestrator not available");
  // `params.get("pipeline")` on a serde_json::Value: only an object has fields.
  const params = typeof call.params === "object" && call.params !== null &&
      !Array.isArray(call.params)
    ? call.params as Record<string, unknown>
    : {};
  const name = params.pipeline;
  if (typeof name !== "string") return dispatchError("Missing 'pipeline' parameter");
  const handler = host.pipeline(name);
  if (handler === undefined) return dispatchError(`Pipeline not found: ${name}`);
  const input = Object.hasOwn(params, "input") ? params.input : {};
  let output: unknown;
  try {
    // Errors from a pipeline are dispatch errors on the real server, whatever their cause.
    output = await Promise.race([
      Promise.resolve().then(() => handler(input)),
      connection.closed,
    ]);
  } catch (error) {
    return dispatchError(errorMessage(error));
  }
  if (connection.isClosed()) return undefined;
  try {
    return completeJson(call.id, serdeJson(output));
  } catch (error) {
    // The real server reports a result it cannot serialize as an error of no call.
    return errorFrame("unknown", "INTERNAL_ERROR", errorMessage(error));
  }
}

const errorMessage = (error: unknown): string =>
  error instanceof Error ? error.message : String(error);
