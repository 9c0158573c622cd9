/**
 * Realm as a provider for the [Vercel AI SDK](https://ai-sdk.dev) (`ai` on npm): pass
 * `realm("llama-2-7b")` as the `model` of `generateText`, `streamText` and the rest, and the calls
 * run over this package's WebSocket client, with its reconnects, pool, timeouts and typed errors.
 *
 * The models implement the AI SDK's language model specification **v3** (`LanguageModelV3` of
 * `@ai-sdk/provider`), the one version that `ai` 7 and `ai` 6 both accept as it is. This entry
 * depends on `@ai-sdk/provider` (an optional peer dependency of the npm package) and, like the
 * AI SDK itself, needs Node 22 or newer; the client entry (`@realm-ai/ws-client`) stays free of
 * dependencies.
 *
 * What maps to what:
 *
 * - The prompt becomes Realm's single `prompt` string (see {@linkcode RealmLanguageModel} for the
 *   layout). Only text is accepted: images, files, reasoning and tool parts are refused with an
 *   `UnsupportedFunctionalityError` before anything is sent.
 * - `maxOutputTokens` → `max_tokens`, `temperature`, `topP` → `top_p`, `topK` → `top_k`, and
 *   `providerOptions.realm.repetitionPenalty` → `repetition_penalty`. Tools, tool choice, seed,
 *   presence and frequency penalties, stop sequences and JSON output are not sent; each comes back
 *   as an `unsupported` warning. HTTP `headers` have no meaning over a WebSocket and are ignored.
 * - Every failure of a call is an `APICallError` whose `cause` is the {@linkcode RealmError}. Its
 *   `isRetryable` is `true` for `RATE_LIMIT_EXCEEDED`, and for `CONNECTION_CLOSED` and `TIMEOUT`
 *   before any of the answer was delivered (generating again changes nothing on the server), so
 *   the AI SDK's `maxRetries` retries exactly those; never when the client's retry budget
 *   withheld a retry (the servers are failing: the AI SDK must not pile on). After text started,
 *   a stream ends with an `error` part and `finishReason: "error"`. An abort rejects with the
 *   signal's reason, as `fetch` does.
 *
 * @example Generate and stream with the AI SDK (here against the stub server)
 * ```ts
 * import { generateText, streamText } from "ai";
 * import { createRealm } from "@realm-ai/ws-client/ai-sdk";
 * import { startStubServer } from "@realm-ai/ws-client/testing";
 *
 * const server = await startStubServer({ tokenDelayMs: 0 });
 * const realm = createRealm({ url: server.url });
 * try {
 *   const { text } = await generateText({
 *     model: realm("llama-2-7b"),
 *     prompt: "What is the capital of France?",
 *   }); // text: "Paris"
 *
 *   const result = streamText({ model: realm("llama-2-7b"), prompt: "Hi", maxOutputTokens: 5 });
 *   let story = "";
 *   for await (const delta of result.textStream) story += delta; // "The capital of France is "
 * } finally {
 *   await realm.close();
 *   await server.close();
 * }
 * ```
 *
 * @module
 */

import {
  APICallError,
  type LanguageModelV3,
  type LanguageModelV3CallOptions,
  type LanguageModelV3FinishReason,
  type LanguageModelV3GenerateResult,
  type LanguageModelV3Prompt,
  type LanguageModelV3StreamPart,
  type LanguageModelV3StreamResult,
  type LanguageModelV3Usage,
  NoSuchModelError,
  type ProviderV3,
  type SharedV3Warning,
  UnsupportedFunctionalityError,
} from "@ai-sdk/provider";
import {
  type GenerationOptions,
  type GenerationResult,
  type RealmClientOptions,
  RealmError,
  RealmWebSocketClient,
} from "./mod.ts";

/**
 * The AI SDK's `LanguageModelV3` (from `@ai-sdk/provider`), the type a Realm model implements.
 * Named here because `deno doc --lint` takes another package's types for private ones
 * (denoland/deno#27364).
 *
 * @internal
 */
type SpecLanguageModel = LanguageModelV3;

/**
 * The AI SDK's `ProviderV3` (from `@ai-sdk/provider`), the type a Realm provider implements;
 * named here for the same reason as {@linkcode SpecLanguageModel}.
 *
 * @internal
 */
type SpecProvider = ProviderV3;

/** The client's default `url`, repeated here to name the server in errors. */
const DEFAULT_URL = "ws://localhost:8080";
/** The server's `max_tokens` when a call gives none (see `GenerationOptions.max_tokens`). */
const SERVER_DEFAULT_MAX_TOKENS = 100;
/** The one text block of a response: Realm generates a single text per call. */
const TEXT_ID = "0";

/**
 * Settings of {@linkcode createRealm}: the options of {@linkcode RealmWebSocketClient} without
 * `model`, which each call takes from the model id (`realm("llama-2-7b")`). Every option keeps
 * the client's default: `url` `ws://localhost:8080`, one connection, a 30 s `timeout`, reconnects
 * on.
 *
 * The AI SDK retries calls itself (`maxRetries`, default 2, on the errors marked retryable), so
 * the client's own `maxRetries` is best left at its default `0`.
 *
 * @example
 * ```ts
 * import type { RealmProviderSettings } from "@realm-ai/ws-client/ai-sdk";
 *
 * const settings: RealmProviderSettings = {
 *   url: "wss://realm.example.com",
 *   apiKey: "sk_live_...",
 *   connections: 4,
 *   timeout: 60_000,
 * };
 * ```
 */
export type RealmProviderSettings = Omit<RealmClientOptions, "model">;

/**
 * Realm's own call options, given as `providerOptions.realm` in an AI SDK call. Any other key is
 * not sent and comes back as an `unsupported` warning.
 *
 * @example
 * ```ts
 * import type { LanguageModel } from "ai";
 * import { generateText } from "ai";
 * import type { RealmLanguageModelOptions } from "@realm-ai/ws-client/ai-sdk";
 *
 * async function lessRepetitive(model: LanguageModel) {
 *   return await generateText({
 *     model,
 *     prompt: "List three fruits.",
 *     providerOptions: { realm: { repetitionPenalty: 1.2 } satisfies RealmLanguageModelOptions },
 *   });
 * }
 * ```
 */
export interface RealmLanguageModelOptions {
  /** Realm's `repetition_penalty`: above 0; above 1 discourages repeats. Server default 1.0. */
  repetitionPenalty?: number;
}

/**
 * A Realm model for the AI SDK: what `realm(modelId)` returns. It implements the AI SDK's
 * `LanguageModelV3` and sends its calls through the provider's one client.
 *
 * The AI SDK's prompt becomes Realm's single `prompt` string, always the same way:
 *
 * - A message's text parts are joined with `"\n"`.
 * - A prompt with one user message (and perhaps system messages) is sent as written: the system
 *   messages, then the user's text, separated by a blank line. So
 *   `generateText({ prompt: "What is the capital of France?" })` sends exactly that question,
 *   as `client.generate({ prompt })` would.
 * - Any other prompt (a conversation) becomes paragraphs separated by a blank line: system
 *   messages as written, user messages as `User: <text>`, assistant messages as
 *   `Assistant: <text>`, and a last `Assistant:` when the last message is the user's, so that the
 *   model answers as the assistant.
 *
 * @example A conversation, and the prompt Realm receives
 * ```ts
 * import { generateText } from "ai";
 * import { realm } from "@realm-ai/ws-client/ai-sdk";
 *
 * async function followUp() {
 *   // Realm receives: "Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: And the capital of
 *   // France?\n\nAssistant:"
 *   return await generateText({
 *     model: realm("llama-2-7b"),
 *     system: "Be brief.",
 *     messages: [
 *       { role: "user", content: "Hi" },
 *       { role: "assistant", content: "Hello!" },
 *       { role: "user", content: "And the capital of France?" },
 *     ],
 *   });
 * }
 * ```
 */
export interface RealmLanguageModel extends SpecLanguageModel {
  /** Always `"realm"`. */
  readonly provider: "realm";
  /** The model sent with every call: a model name, file path or URL the server knows. */
  readonly modelId: string;
}

/**
 * A Realm provider for the AI SDK, made by {@linkcode createRealm}. Call it with a model id to get
 * a model; it implements the AI SDK's `ProviderV3`, so it also fits `createProviderRegistry`
 * (Realm has language models only: the other kinds throw `NoSuchModelError`).
 *
 * It owns one {@linkcode RealmWebSocketClient}, shared by all its models: the client connects on
 * the first call (and again on a call after {@linkcode RealmProvider.close} or after the client
 * gave up reconnecting). An open socket keeps Node, Deno and Bun running, and a web-standard
 * `WebSocket` cannot be told not to: a provider from `createRealm` keeps its socket until
 * `close()`, so a program that ends closes it (a server never needs to); the default
 * {@linkcode realm} closes its socket after {@linkcode DEFAULT_PROVIDER_IDLE_MS} ms without a
 * call, so a script that uses it ends by itself.
 *
 * @example
 * ```ts
 * import { generateText } from "ai";
 * import { createRealm } from "@realm-ai/ws-client/ai-sdk";
 *
 * async function ask(question: string) {
 *   const realm = createRealm({ url: "ws://localhost:8080" });
 *   try {
 *     const { text } = await generateText({ model: realm("llama-2-7b"), prompt: question });
 *     return text;
 *   } finally {
 *     await realm.close();
 *   }
 * }
 * ```
 */
export interface RealmProvider extends SpecProvider {
  /**
   * The model `modelId` on this provider's server.
   *
   * @throws {RealmError} `INVALID_PARAMS` when `modelId` is not a non-empty string.
   */
  (modelId: string): RealmLanguageModel;
  /**
   * The model `modelId`, as the AI SDK's provider interface names it; the same as calling the
   * provider.
   *
   * @throws {RealmError} `INVALID_PARAMS` when `modelId` is not a non-empty string.
   */
  languageModel(modelId: string): RealmLanguageModel;
  /**
   * The provider's client: read its `stats()`, listen to its events (`on("disconnected", …)`),
   * call `health()`. Its calls share the provider's sockets.
   */
  readonly client: RealmWebSocketClient;
  /**
   * Closes the client's sockets; calls still running fail. The provider stays usable: a later
   * call connects again. Never rejects.
   */
  close(): Promise<void>;
}

/**
 * Creates a Realm provider for the AI SDK. Nothing is opened until the first call. The provider
 * keeps its socket open until {@linkcode RealmProvider.close}: close it when your program is done
 * (a long-running server never needs to).
 *
 * @param settings The client's options without `model` (see {@linkcode RealmProviderSettings}).
 * @returns A provider: call it with a model id.
 * @throws {RealmError} `INVALID_OPTIONS` naming a bad or unknown option (or `model`), at once.
 *
 * @example
 * ```ts
 * import { streamText } from "ai";
 * import { createRealm } from "@realm-ai/ws-client/ai-sdk";
 *
 * const realm = createRealm({ url: "wss://realm.example.com", apiKey: "sk_live_..." });
 *
 * async function story(write: (text: string) => void) {
 *   const result = streamText({ model: realm("llama-2-7b"), prompt: "Tell me a story" });
 *   for await (const delta of result.textStream) write(delta);
 * }
 * ```
 */
export function createRealm(settings: RealmProviderSettings = {}): RealmProvider {
  return makeProvider(settings);
}

/** A provider; with `idleMs`, one whose client disconnects after that long without a call. */
function makeProvider(settings: RealmProviderSettings, idleMs?: number): RealmProvider {
  if (Object.hasOwn(settings ?? {}, "model")) {
    throw new RealmError(
      "INVALID_OPTIONS",
      'createRealm takes no `model`: each call names its own, as in realm("llama-2-7b").',
      { sent: false },
    );
  }
  // The client needs a default model; every call names its own, so this one is never sent.
  const client = new RealmWebSocketClient({ ...settings, model: "(named by each call)" });
  const url = [settings?.url ?? DEFAULT_URL].flat().join(", ");
  const calls = idleMs === undefined ? undefined : closeWhenIdle(client, idleMs);
  const languageModel = (modelId: string): RealmLanguageModel => {
    if (typeof modelId !== "string" || modelId.trim() === "") {
      throw new RealmError(
        "INVALID_PARAMS",
        'A Realm model id must be a non-empty string, e.g. realm("llama-2-7b").',
        { sent: false },
      );
    }
    return new RealmChatModel(modelId, client, url, calls);
  };
  const noSuchModel = (modelType: "embeddingModel" | "imageModel") => (modelId: string) => {
    throw new NoSuchModelError({
      modelId,
      modelType,
      message: `Realm serves language models only; there is no ${modelType} "${modelId}".`,
    });
  };
  const provider = (modelId: string) => languageModel(modelId);
  return Object.assign(provider, {
    specificationVersion: "v3" as const,
    languageModel,
    embeddingModel: noSuchModel("embeddingModel"),
    imageModel: noSuchModel("imageModel"),
    client,
    close: () => {
      calls?.stop();
      return client.disconnect();
    },
  });
}

/**
 * How long the default provider {@linkcode realm} keeps its socket open without a call, in ms.
 * Then it closes it, so that a script ends by itself; the next call opens it again.
 *
 * @example
 * ```ts
 * import { DEFAULT_PROVIDER_IDLE_MS } from "@realm-ai/ws-client/ai-sdk";
 * const secondsToExit = DEFAULT_PROVIDER_IDLE_MS / 1000; // after a script's last call
 * ```
 */
export const DEFAULT_PROVIDER_IDLE_MS = 1000;

/**
 * Counts the calls running on `client`, and disconnects it once none has run for `idleMs`. The
 * timer itself never keeps a program running (it is unreferenced where the runtime can).
 * Returns what a call runs through.
 */
function closeWhenIdle(client: RealmWebSocketClient, idleMs: number): CallCounter {
  let running = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  return {
    async run(call) {
      running++;
      clearTimeout(timer);
      try {
        return await call();
      } finally {
        if (--running === 0) {
          timer = setTimeout(() => void client.disconnect(), idleMs);
          if (typeof timer === "object") (timer as { unref?(): void }).unref?.();
          else {(globalThis as { Deno?: { unrefTimer?(id: number): void } }).Deno?.unrefTimer?.(
              timer,
            );}
        }
      }
    },
    stop: () => clearTimeout(timer),
  };
}

/** Keeps count of a provider's calls running: `run` runs one, `stop` forgets the idle timer. */
interface CallCounter {
  run<T>(call: () => Promise<T>): Promise<T>;
  stop(): void;
}

/**
 * The default provider: a client for `ws://localhost:8080` without an API key. It closes its
 * socket after {@linkcode DEFAULT_PROVIDER_IDLE_MS} ms without a call (and opens it again on the
 * next one), so that a script that uses it ends by itself. Use {@linkcode createRealm} for another
 * server, a key or other options.
 *
 * @example
 * ```ts
 * import { streamText } from "ai";
 * import { realm } from "@realm-ai/ws-client/ai-sdk";
 *
 * async function story() {
 *   const result = streamText({ model: realm("llama-2-7b"), prompt: "Tell me a story" });
 *   return await result.text;
 * }
 * ```
 */
export const realm: RealmProvider = makeProvider({}, DEFAULT_PROVIDER_IDLE_MS);

/** The model object behind {@linkcode RealmLanguageModel}. */
class RealmChatModel implements RealmLanguageModel {
  readonly specificationVersion = "v3";
  readonly provider = "realm";
  readonly modelId: string;
  /** None: the AI SDK downloads URLs itself, and Realm takes no files anyway. */
  readonly supportedUrls: Record<string, RegExp[]> = {};
  readonly #client: RealmWebSocketClient;
  readonly #url: string;
  readonly #calls: CallCounter | undefined;

  constructor(
    modelId: string,
    client: RealmWebSocketClient,
    url: string,
    calls: CallCounter | undefined,
  ) {
    this.modelId = modelId;
    this.#client = client;
    this.#url = url;
    this.#calls = calls;
  }

  async doGenerate(options: LanguageModelV3CallOptions): Promise<LanguageModelV3GenerateResult> {
    const { params, warnings } = prepareCall(this.modelId, options);
    const signal = options.abortSignal;
    const timestamp = new Date();
    let result: GenerationResult;
    try {
      result = await this.#call(signal, () => this.#client.generate(params, { signal }));
    } catch (error) {
      throw this.#failure(error, params, signal);
    }
    return {
      content: result.text === "" ? [] : [{ type: "text", text: result.text }],
      finishReason: finishReasonOf(result, params),
      usage: usageOf(result),
      warnings,
      request: { body: params },
      response: { id: result.requestId, modelId: this.modelId, timestamp },
    };
  }

  async doStream(options: LanguageModelV3CallOptions): Promise<LanguageModelV3StreamResult> {
    const { params, warnings } = prepareCall(this.modelId, options);
    const caller = options.abortSignal;
    // Cancelling the returned stream stops the call too.
    const cancelled = new AbortController();
    const signal = caller ? AbortSignal.any([caller, cancelled.signal]) : cancelled.signal;
    let controller!: ReadableStreamDefaultController<LanguageModelV3StreamPart>;
    let open = true;
    const stream = new ReadableStream<LanguageModelV3StreamPart>({
      start: (c) => {
        controller = c;
      },
      cancel: (reason) => {
        open = false;
        cancelled.abort(reason);
      },
    });
    const push = (part: LanguageModelV3StreamPart) => {
      if (open) controller.enqueue(part);
    };
    const end = () => {
      if (open) controller.close();
      open = false;
    };
    push({ type: "stream-start", warnings });
    push({ type: "response-metadata", modelId: this.modelId, timestamp: new Date() });

    let tokens = 0;
    let firstToken!: () => void;
    const flowing = new Promise<void>((resolve) => firstToken = resolve);
    const call = this.#call(signal, () =>
      this.#client.generate({
        ...params,
        stream: true,
        onToken: (token) => {
          if (tokens++ === 0) {
            push({ type: "text-start", id: TEXT_ID });
            firstToken();
          }
          push({ type: "text-delta", id: TEXT_ID, delta: token });
        },
      }, { signal }));
    call.then((result) => {
      if (tokens > 0) push({ type: "text-end", id: TEXT_ID });
      // The call's id is known once it is answered; the AI SDK keeps the latest metadata.
      push({ type: "response-metadata", id: result.requestId });
      push({
        type: "finish",
        usage: usageOf(result),
        finishReason: finishReasonOf(result, params),
      });
      end();
    }, (error) => {
      // Before the first token, doStream itself rejects (below).
      if (tokens === 0 || !open) return;
      if (caller?.aborted) {
        // As a fetch body does when its request is aborted.
        open = false;
        controller.error(caller.reason);
        return;
      }
      push({ type: "error", error: this.#failure(error, params, signal) });
      push({
        type: "finish",
        usage: usageOf(undefined),
        finishReason: { unified: "error", raw: undefined },
      });
      end();
    });

    try {
      await Promise.race([flowing, call]);
    } catch (error) {
      open = false;
      throw this.#failure(error, params, caller);
    }
    return { stream, request: { body: params } };
  }

  /**
   * Runs a call, connecting first when the client is not running (the first call, or after
   * `close()`): such a call fails with `NOT_CONNECTED` before anything is sent.
   */
  #call<T>(signal: AbortSignal | undefined, start: () => Promise<T>): Promise<T> {
    const call = async () => {
      try {
        return await start();
      } catch (error) {
        if (!(error instanceof RealmError && error.code === "NOT_CONNECTED")) throw error;
      }
      await untilAborted(this.#client.connect(), signal);
      return await start();
    };
    return this.#calls ? this.#calls.run(call) : call();
  }

  /** What a failed call throws: the abort reason, or a RealmError as the spec's APICallError. */
  #failure(error: unknown, params: GenerationOptions, signal: AbortSignal | undefined): unknown {
    if (signal?.aborted) return signal.reason;
    if (!(error instanceof RealmError)) return error;
    const rateLimited = error.code === "RATE_LIMIT_EXCEEDED";
    // Nothing of the answer arrived: generating again is safe. Not when the client's retry
    // budget withheld a retry: the servers are failing, and the AI SDK must not pile on.
    const undelivered = (error.code === "CONNECTION_CLOSED" || error.code === "TIMEOUT") &&
      error.delivered !== true;
    const withheld = error.message.includes("retry was withheld");
    return new APICallError({
      message: `${error.code}: ${error.message}`,
      url: this.#url,
      requestBodyValues: params,
      isRetryable: (rateLimited || undelivered) && !withheld,
      // The server rounds its wait down to whole seconds (often to 0): a retry after N + 1 s
      // finds the tenant's bucket refilled, where one after N s may be refused again.
      responseHeaders: rateLimited
        ? { "retry-after-ms": String(((error.retryAfter ?? 0) + 1) * 1000) }
        : undefined,
      cause: error,
    });
  }
}

/** Waits for `promise`, or rejects with `signal.reason` as soon as `signal` aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** Realm's parameters for an AI SDK call, and warnings for the settings Realm cannot honour. */
function prepareCall(
  modelId: string,
  options: LanguageModelV3CallOptions,
): { params: GenerationOptions; warnings: SharedV3Warning[] } {
  const warnings: SharedV3Warning[] = [];
  const unsupported = (feature: string, details: string) =>
    warnings.push({ type: "unsupported", feature, details });
  if (options.tools !== undefined && options.tools.length > 0) {
    unsupported("tools", "Realm generates text only; the tools were not sent.");
  }
  const toolChoice = options.toolChoice?.type;
  if (toolChoice === "required" || toolChoice === "tool") {
    unsupported("toolChoice", "Realm cannot call tools.");
  }
  if (options.seed !== undefined) unsupported("seed", "Realm's sampling takes no seed.");
  if (options.presencePenalty !== undefined) {
    unsupported("presencePenalty", "Use providerOptions.realm.repetitionPenalty instead.");
  }
  if (options.frequencyPenalty !== undefined) {
    unsupported("frequencyPenalty", "Use providerOptions.realm.repetitionPenalty instead.");
  }
  if (options.stopSequences !== undefined && options.stopSequences.length > 0) {
    unsupported("stopSequences", "Realm has no stop sequences; generation runs to max_tokens.");
  }
  if (options.responseFormat?.type === "json") {
    unsupported("responseFormat", "Realm does not constrain output to JSON; the answer is text.");
  }
  if (options.includeRawChunks === true) {
    unsupported("includeRawChunks", "The client hands over tokens, not the server's frames.");
  }

  const params: GenerationOptions = { prompt: realmPrompt(options.prompt), model: modelId };
  if (options.maxOutputTokens !== undefined) params.max_tokens = options.maxOutputTokens;
  if (options.temperature !== undefined) params.temperature = options.temperature;
  if (options.topP !== undefined) params.top_p = options.topP;
  if (options.topK !== undefined) params.top_k = options.topK;
  for (const [key, value] of Object.entries(options.providerOptions?.realm ?? {})) {
    if (key === "repetitionPenalty") {
      // The client checks the value (a number above 0) and refuses anything else.
      if (value !== undefined) params.repetition_penalty = value as number;
    } else {
      unsupported(
        `providerOptions.realm.${key}`,
        "Realm's only provider option is repetitionPenalty.",
      );
    }
  }
  return { params, warnings };
}

/** The AI SDK's prompt as Realm's one prompt string, laid out as {@linkcode RealmLanguageModel} says. */
function realmPrompt(prompt: LanguageModelV3Prompt): string {
  const blocks: { role: "system" | "user" | "assistant"; text: string }[] = [];
  prompt.forEach((message, index) => {
    if (message.role === "system") return blocks.push({ role: "system", text: message.content });
    if (message.role === "tool") throw refused("tool results", message.role, index);
    const texts: string[] = [];
    for (const part of message.content) {
      if (part.type !== "text") throw refused(`${part.type} parts`, message.role, index);
      texts.push(part.text);
    }
    blocks.push({ role: message.role, text: texts.join("\n") });
  });
  const turns = blocks.filter((block) => block.role !== "system");
  if (turns.length === 1 && turns[0].role === "user") {
    return blocks.map((block) => block.text).join("\n\n");
  }
  const paragraphs = blocks.map((block) =>
    block.role === "user"
      ? `User: ${block.text}`
      : block.role === "assistant"
      ? `Assistant: ${block.text}`
      : block.text
  );
  if (turns.at(-1)?.role === "user") paragraphs.push("Assistant:");
  return paragraphs.join("\n\n");
}

function refused(what: string, role: string, index: number): UnsupportedFunctionalityError {
  return new UnsupportedFunctionalityError({
    functionality: what,
    message: `Realm takes text only, but message ${index + 1} (${role}) has ${what}. ` +
      "Send text parts only (describe a file or a tool's result in words).",
  });
}

/** Usage from the server's figures; a figure the server did not send stays `undefined`. */
function usageOf(result: GenerationResult | undefined): LanguageModelV3Usage {
  const raw: Record<string, number> = {};
  for (const key of ["prompt_tokens", "tokens_generated", "cost_usd", "time_ms"] as const) {
    const value = result?.[key];
    if (value !== undefined) raw[key] = value;
  }
  return {
    inputTokens: {
      total: result?.prompt_tokens,
      noCache: undefined,
      cacheRead: undefined,
      cacheWrite: undefined,
    },
    outputTokens: {
      total: result?.tokens_generated,
      text: result?.tokens_generated,
      reasoning: undefined,
    },
    raw: result ? raw : undefined,
  };
}

/**
 * The server names no finish reason: `length` when the output reached `max_tokens` (the server's
 * default 100 when the call gave none), else `stop`.
 */
function finishReasonOf(
  result: GenerationResult,
  params: GenerationOptions,
): LanguageModelV3FinishReason {
  const limit = params.max_tokens ?? SERVER_DEFAULT_MAX_TOKENS;
  return { unified: result.tokens_generated >= limit ? "length" : "stop", raw: undefined };
}
