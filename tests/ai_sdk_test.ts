/**
 * The AI SDK provider (`ai_sdk.ts`) driven by the real `ai` package against the stub Realm
 * server over loopback: generateText, streamText (text and full streams), abort, retries of
 * rate-limited calls, refused keys, warnings, the prompt layout and the parameter mapping.
 */
import assert from "node:assert/strict";
import {
  APICallError,
  generateText,
  type LanguageModelUsage,
  streamText,
  type TextStreamPart,
  type ToolSet,
  UnsupportedFunctionalityError,
} from "ai";
import { NoSuchModelError } from "@ai-sdk/provider";
import type { LanguageModelV3CallOptions, LanguageModelV3StreamPart } from "@ai-sdk/provider";
import { RealmError } from "../mod.ts";
import {
  createRealm,
  DEFAULT_PROVIDER_IDLE_MS,
  realm as defaultRealm,
  type RealmProvider,
  type RealmProviderSettings,
} from "../ai_sdk.ts";
import { startStubServer, type StubServer, type StubServerOptions } from "../testing.ts";
import { dropNow, idleStats, sanitize, until, within } from "./_helpers.ts";

// The AI SDK prints warnings with console.warn unless told not to; the tests read them instead.
(globalThis as { AI_SDK_LOG_WARNINGS?: boolean }).AI_SDK_LOG_WARNINGS = false;

const FRANCE = "What is the capital of France?";
/** The stub's stream, first tokens: it cycles through these words whatever the prompt. */
const STREAM_WORDS = "The capital of France is Paris. This is".split(" ").map((w) => `${w} `);

/** Runs `fn` with a stub server and a provider on it, and tears both down. */
async function withRealm(
  serverOptions: StubServerOptions,
  settings: RealmProviderSettings,
  fn: (realm: RealmProvider, server: StubServer) => Promise<void>,
): Promise<void> {
  const server = await startStubServer({ tokenDelayMs: 1, ...serverOptions });
  const realm = createRealm({ url: server.url, timeout: 5000, reconnect: false, ...settings });
  try {
    await fn(realm, server);
  } finally {
    await realm.close();
    await server.close();
  }
}

/** The call frames the server received, parsed (handshake frames left out). */
function sentCalls(
  server: StubServer,
): { id: string; function: string; params: Record<string, unknown> }[] {
  return server.receivedFrames().map((f) => JSON.parse(f)).filter((f) => "function" in f);
}

/** Awaits a promise that must reject, and returns what it rejected with. */
async function thrown(promise: PromiseLike<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("expected the promise to reject");
}

/** A model call's options with a one-message user prompt. */
function callOptions(text: string, extra: Partial<LanguageModelV3CallOptions> = {}) {
  return {
    prompt: [{ role: "user" as const, content: [{ type: "text" as const, text }] }],
    ...extra,
  };
}

/** Reads a model stream to its end. */
async function readAll(stream: ReadableStream<LanguageModelV3StreamPart>) {
  const parts: LanguageModelV3StreamPart[] = [];
  for await (const part of stream) parts.push(part);
  return parts;
}

Deno.test({
  name: "ai-sdk: generateText answers Paris, with the server's usage",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm, server) => {
      const result = await generateText({ model: realm("llama-2-7b"), prompt: FRANCE });
      assert.equal(result.text, "Paris");
      assert.equal(result.finishReason, "stop");
      assert.deepEqual(result.warnings, []);
      assert.equal(result.usage.inputTokens, 6);
      assert.equal(result.usage.outputTokens, 1);
      assert.equal(result.usage.totalTokens, 7);
      assert.deepEqual(result.usage.raw, {
        prompt_tokens: 6,
        tokens_generated: 1,
        cost_usd: 0.00024,
        time_ms: 150,
      });
      assert.equal(result.response.modelId, "llama-2-7b");
      // A single prompt goes out exactly as written, with the model id.
      const calls = sentCalls(server);
      assert.equal(calls.length, 1);
      // The response id is the call's request id.
      assert.equal(result.response.id, calls[0].id);
      assert.equal(calls[0].function, "generate");
      assert.deepEqual(calls[0].params, { prompt: FRANCE, model: "llama-2-7b", stream: false });
    }),
});

Deno.test({
  name: "ai-sdk: streamText's textStream delivers every token in order",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm, server) => {
      const result = streamText({
        model: realm("llama-2-7b"),
        prompt: "Tell me a story",
        maxOutputTokens: 8,
      });
      const deltas: string[] = [];
      for await (const delta of result.textStream) deltas.push(delta);
      assert.deepEqual(deltas, STREAM_WORDS);
      assert.equal(await result.text, STREAM_WORDS.join(""));
      assert.equal(await result.finishReason, "length");
      assert.equal((await result.usage).outputTokens, 8);
      assert.deepEqual(sentCalls(server)[0].params, {
        prompt: "Tell me a story",
        model: "llama-2-7b",
        max_tokens: 8,
        stream: true,
      });
    }),
});

Deno.test({
  name: "ai-sdk: streamText's fullStream has the parts in order; finish carries usage",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm) => {
      const result = streamText({ model: realm("llama-2-7b"), prompt: "Hi", maxOutputTokens: 3 });
      const parts: TextStreamPart<ToolSet>[] = [];
      for await (const part of result.fullStream) parts.push(part);
      assert.deepEqual(parts.map((p) => p.type), [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
      ]);
      const deltas = parts.flatMap((p) => p.type === "text-delta" ? [p.text] : []);
      assert.deepEqual(deltas, STREAM_WORDS.slice(0, 3));
      const finish = parts.at(-1) as Extract<TextStreamPart<ToolSet>, { type: "finish" }>;
      assert.equal(finish.finishReason, "length");
      const usage: LanguageModelUsage = finish.totalUsage;
      assert.equal(usage.outputTokens, 3);
      // A stream's last frame carries only the token count: the prompt's count is unknown.
      assert.equal(usage.inputTokens, undefined);
      assert.deepEqual(usage.raw, { tokens_generated: 3 });
    }),
});

Deno.test({
  name: "ai-sdk: the model's own stream: start with warnings, metadata, text, finish",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm, server) => {
      const model = realm("llama-2-7b");
      const { stream, request } = await model.doStream(
        callOptions("Hi", { maxOutputTokens: 2, seed: 7 }),
      );
      assert.deepEqual(request?.body, { prompt: "Hi", model: "llama-2-7b", max_tokens: 2 });
      const parts = await readAll(stream);
      assert.deepEqual(parts[0], {
        type: "stream-start",
        warnings: [{
          type: "unsupported",
          feature: "seed",
          details: "Realm's sampling takes no seed.",
        }],
      });
      const metadata = parts[1] as Extract<
        LanguageModelV3StreamPart,
        { type: "response-metadata" }
      >;
      assert.equal(metadata.type, "response-metadata");
      assert.equal(metadata.modelId, "llama-2-7b");
      assert.ok(metadata.timestamp instanceof Date);
      assert.deepEqual(parts.slice(2), [
        { type: "text-start", id: "0" },
        { type: "text-delta", id: "0", delta: "The " },
        { type: "text-delta", id: "0", delta: "capital " },
        { type: "text-end", id: "0" },
        // The response id is the call's request id: the id of the frame the server got.
        { type: "response-metadata", id: sentCalls(server).at(-1)!.id },
        {
          type: "finish",
          finishReason: { unified: "length", raw: undefined },
          usage: {
            inputTokens: {
              total: undefined,
              noCache: undefined,
              cacheRead: undefined,
              cacheWrite: undefined,
            },
            outputTokens: { total: 2, text: 2, reasoning: undefined },
            raw: { tokens_generated: 2 },
          },
        },
      ]);
    }),
});

Deno.test({
  name: "ai-sdk: abort mid-stream stops the call; nothing stays pending",
  ...sanitize,
  fn: () =>
    // 50 ms between tokens: the abort lands long before the next token is due.
    withRealm({ tokenDelayMs: 50 }, {}, async (realm) => {
      const controller = new AbortController();
      const aborted: string[] = [];
      const result = streamText({
        model: realm("llama-2-7b"),
        prompt: "Tell me a story",
        maxOutputTokens: 20,
        abortSignal: controller.signal,
        onAbort: () => {
          aborted.push("onAbort");
        },
      });
      const deltas: string[] = [];
      for await (const delta of result.textStream) {
        deltas.push(delta);
        if (deltas.length === 3) controller.abort();
      }
      assert.deepEqual(deltas, STREAM_WORDS.slice(0, 3));
      assert.deepEqual(aborted, ["onAbort"]);
      // At once: the stream would run for another second had the abort not reached the client.
      const stats = realm.client.stats();
      assert.equal(stats.pendingCalls, 0);
      assert.equal(stats.queuedCalls, 0);
      // The socket stays open and usable: the next call waits for the server to finish the
      // abandoned stream (one call at a time per socket), then runs.
      const next = await generateText({ model: realm("llama-2-7b"), prompt: FRANCE });
      assert.equal(next.text, "Paris");
    }),
});

Deno.test({
  name: "ai-sdk: an abort before the first token rejects with the signal's reason",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm) => {
      const controller = new AbortController();
      const reason = new DOMException("stop", "AbortError");
      controller.abort(reason);
      const model = realm("llama-2-7b");
      assert.equal(
        await thrown(model.doStream(callOptions("Hi", { abortSignal: controller.signal }))),
        reason,
      );
      assert.equal(
        await thrown(model.doGenerate(callOptions("Hi", { abortSignal: controller.signal }))),
        reason,
      );
      assert.deepEqual(realm.client.stats(), idleStats(0));
    }),
});

const RATE_LIMITED: StubServerOptions = {
  apiKeys: { "sk-test": "tenant-a" },
  rateLimit: { perMinute: 60, burst: 1 },
};

Deno.test({
  name: "ai-sdk: a rate-limited call is retried by the AI SDK's maxRetries, then succeeds",
  ...sanitize,
  fn: () =>
    withRealm(RATE_LIMITED, { apiKey: "sk-test" }, async (realm, server) => {
      const model = realm("llama-2-7b");
      // The first call empties the tenant's bucket (one call, refilled after a second).
      assert.equal((await generateText({ model, prompt: FRANCE })).text, "Paris");
      const result = await generateText({ model, prompt: FRANCE, maxRetries: 1 });
      assert.equal(result.text, "Paris");
      // The first call, the refused one, and its retry.
      assert.equal(server.callCount, 3);
    }),
});

Deno.test({
  name: "ai-sdk: streamText retries a rate-limited stream, then delivers every token",
  ...sanitize,
  fn: () =>
    withRealm(RATE_LIMITED, { apiKey: "sk-test" }, async (realm, server) => {
      const model = realm("llama-2-7b");
      await generateText({ model, prompt: FRANCE });
      const result = streamText({ model, prompt: "Hi", maxOutputTokens: 4, maxRetries: 1 });
      assert.equal(await result.text, STREAM_WORDS.slice(0, 4).join(""));
      assert.equal(server.callCount, 3);
    }),
});

Deno.test({
  name:
    "ai-sdk: without retries, a rate limit is a retryable APICallError caused by the RealmError",
  ...sanitize,
  fn: () =>
    withRealm(RATE_LIMITED, { apiKey: "sk-test" }, async (realm, server) => {
      const model = realm("llama-2-7b");
      await generateText({ model, prompt: FRANCE });
      const error = await thrown(generateText({ model, prompt: FRANCE, maxRetries: 0 }));
      assert.ok(APICallError.isInstance(error), `expected an APICallError, got ${error}`);
      assert.equal(error.isRetryable, true);
      assert.equal(error.url, server.url);
      assert.ok(error.cause instanceof RealmError);
      assert.equal(error.cause.code, "RATE_LIMIT_EXCEEDED");
      assert.equal(error.cause.retryAfter, 0);
      // The server says 0 s, rounded down: the AI SDK is told to wait a whole second.
      assert.deepEqual(error.responseHeaders, { "retry-after-ms": "1000" });
      assert.equal(error.message, `RATE_LIMIT_EXCEEDED: ${error.cause.message}`);
      assert.deepEqual(error.requestBodyValues, { prompt: FRANCE, model: "llama-2-7b" });
    }),
});

Deno.test({
  name: "ai-sdk: a refused API key rejects with a non-retryable error caused by the RealmError",
  ...sanitize,
  fn: () =>
    withRealm(RATE_LIMITED, { apiKey: "sk-wrong" }, async (realm, server) => {
      const error = await thrown(
        generateText({ model: realm("llama-2-7b"), prompt: FRANCE, maxRetries: 2 }),
      );
      assert.ok(APICallError.isInstance(error), `expected an APICallError, got ${error}`);
      assert.equal(error.isRetryable, false);
      assert.equal(error.url, server.url);
      assert.ok(error.cause instanceof RealmError);
      assert.equal(error.cause.code, "UNAUTHORIZED");
      assert.equal(server.callCount, 0);
      // doStream rejects the same way (an error before the first token).
      const streamError = await thrown(realm("llama-2-7b").doStream(callOptions("Hi")));
      assert.ok(APICallError.isInstance(streamError));
      assert.equal(streamError.isRetryable, false);
      assert.equal((streamError.cause as RealmError).code, "UNAUTHORIZED");
      assert.deepEqual(realm.client.stats(), idleStats(0));
    }),
});

Deno.test({
  name: "ai-sdk: no server is a retryable error (nothing was sent); the next call connects",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 1 });
    server.faults.rejectConnections(true);
    const realm = createRealm({ url: server.url, timeout: 5000, reconnect: false });
    try {
      const error = await thrown(realm("llama-2-7b").doGenerate(callOptions(FRANCE)));
      assert.ok(APICallError.isInstance(error), `expected an APICallError, got ${error}`);
      assert.equal(error.isRetryable, true);
      assert.equal((error.cause as RealmError).code, "CONNECTION_CLOSED");
      assert.equal((error.cause as RealmError).sent, false);
      server.faults.rejectConnections(false);
      const result = await generateText({ model: realm("llama-2-7b"), prompt: FRANCE });
      assert.equal(result.text, "Paris");
    } finally {
      await realm.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "ai-sdk: an error after tokens have flowed becomes an error part, then finish",
  ...sanitize,
  fn: () =>
    withRealm({ tokenDelayMs: 10 }, {}, async (realm, server) => {
      const { stream } = await realm("llama-2-7b").doStream(
        callOptions("Hi", { maxOutputTokens: 50 }),
      );
      const parts: LanguageModelV3StreamPart[] = [];
      for await (const part of stream) {
        parts.push(part);
        if (parts.filter((p) => p.type === "text-delta").length === 2) {
          server.faults.dropAfterFrames(0);
        }
      }
      const types = parts.map((p) => p.type);
      assert.deepEqual(types.slice(0, 5), [
        "stream-start",
        "response-metadata",
        "text-start",
        "text-delta",
        "text-delta",
      ]);
      assert.deepEqual(types.slice(-2), ["error", "finish"]);
      const error = (parts.at(-2) as { error: unknown }).error;
      assert.ok(APICallError.isInstance(error));
      // Text had started: the answer is half delivered, so it is not retried.
      assert.equal(error.isRetryable, false);
      assert.equal((error.cause as RealmError).code, "CONNECTION_CLOSED");
      assert.equal((error.cause as RealmError).sent, true);
      assert.equal((error.cause as RealmError).delivered, true);
      const finish = parts.at(-1) as Extract<LanguageModelV3StreamPart, { type: "finish" }>;
      assert.deepEqual(finish.finishReason, { unified: "error", raw: undefined });
      assert.equal(finish.usage.outputTokens.total, undefined);
      assert.equal(realm.client.stats().pendingCalls, 0);
    }),
});

Deno.test({
  name: "ai-sdk: settings Realm cannot honour come back as warnings",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm, server) => {
      const result = await generateText({
        model: realm("llama-2-7b"),
        prompt: FRANCE,
        seed: 42,
        presencePenalty: 0.5,
        frequencyPenalty: 0.5,
        stopSequences: ["\n"],
        providerOptions: { realm: { repetitionPenalty: 1.2, repetition_penalty: 1.2 } },
      });
      assert.equal(result.text, "Paris");
      const penalty = "Use providerOptions.realm.repetitionPenalty instead.";
      assert.deepEqual(result.warnings, [
        { type: "unsupported", feature: "seed", details: "Realm's sampling takes no seed." },
        { type: "unsupported", feature: "presencePenalty", details: penalty },
        { type: "unsupported", feature: "frequencyPenalty", details: penalty },
        {
          type: "unsupported",
          feature: "stopSequences",
          details: "Realm has no stop sequences; generation runs to max_tokens.",
        },
        {
          type: "unsupported",
          feature: "providerOptions.realm.repetition_penalty",
          details: "Realm's only provider option is repetitionPenalty.",
        },
      ]);
      // Only what Realm understands was sent.
      assert.deepEqual(sentCalls(server)[0].params, {
        prompt: FRANCE,
        model: "llama-2-7b",
        repetition_penalty: 1.2,
        stream: false,
      });
    }),
});

Deno.test({
  name: "ai-sdk: tools and JSON output are warned about, not sent",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm) => {
      const { warnings } = await realm("llama-2-7b").doGenerate(callOptions(FRANCE, {
        tools: [{ type: "function", name: "weather", inputSchema: { type: "object" } }],
        toolChoice: { type: "required" },
        responseFormat: { type: "json" },
      }));
      assert.deepEqual(warnings.map((w) => w.type === "other" ? w.message : w.feature), [
        "tools",
        "toolChoice",
        "responseFormat",
      ]);
    }),
});

Deno.test({
  name: "ai-sdk: sampling settings map to Realm's parameters",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm, server) => {
      await generateText({
        model: realm("mistral-7b"),
        prompt: FRANCE,
        maxOutputTokens: 20,
        temperature: 0.2,
        topP: 0.5,
        topK: 40,
      });
      assert.deepEqual(sentCalls(server)[0].params, {
        prompt: FRANCE,
        model: "mistral-7b",
        max_tokens: 20,
        temperature: 0.2,
        top_p: 0.5,
        top_k: 40,
        stream: false,
      });
    }),
});

Deno.test({
  name: "ai-sdk: a value Realm refuses is a non-retryable error; nothing is sent",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm, server) => {
      const error = await thrown(
        generateText({ model: realm("llama-2-7b"), prompt: FRANCE, temperature: 5 }),
      );
      assert.ok(APICallError.isInstance(error), `expected an APICallError, got ${error}`);
      assert.equal(error.isRetryable, false);
      assert.equal((error.cause as RealmError).code, "INVALID_PARAMS");
      assert.equal(server.callCount, 0);
    }),
});

Deno.test({
  name: "ai-sdk: prompt layout: system + one user message as written; a conversation labelled",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm, server) => {
      const model = realm("llama-2-7b");
      await generateText({ model, system: "Be brief.", prompt: FRANCE });
      await generateText({
        model,
        system: "Be brief.",
        messages: [
          { role: "user", content: "Hi" },
          { role: "assistant", content: "Hello!" },
          {
            role: "user",
            content: [{ type: "text", text: "Where?" }, { type: "text", text: "Paris?" }],
          },
        ],
      });
      const prompts = sentCalls(server).map((call) => call.params.prompt);
      assert.deepEqual(prompts, [
        `Be brief.\n\n${FRANCE}`,
        "Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Where?\nParis?\n\nAssistant:",
      ]);
    }),
});

Deno.test({
  name: "ai-sdk: images and files are refused before anything is sent",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm, server) => {
      const error = await thrown(generateText({
        model: realm("llama-2-7b"),
        messages: [{
          role: "user",
          content: [
            { type: "text", text: "What is this?" },
            { type: "image", image: new Uint8Array([137, 80, 78, 71]), mediaType: "image/png" },
          ],
        }],
      }));
      assert.ok(UnsupportedFunctionalityError.isInstance(error), `got ${error}`);
      assert.equal(error.functionality, "file parts");
      assert.equal(
        error.message,
        "Realm takes text only, but message 1 (user) has file parts. " +
          "Send text parts only (describe a file or a tool's result in words).",
      );
      assert.equal(server.callCount, 0);
    }),
});

Deno.test({
  name: "ai-sdk: the provider: model ids, other model kinds, bad options, close",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm) => {
      const model = realm.languageModel("llama-2-7b");
      assert.equal(model.specificationVersion, "v3");
      assert.equal(model.provider, "realm");
      assert.equal(model.modelId, "llama-2-7b");
      assert.equal(realm.specificationVersion, "v3");
      assert.throws(() => realm(""), (e) => e instanceof RealmError && e.code === "INVALID_PARAMS");
      assert.throws(() => realm.embeddingModel("e5"), (e) => NoSuchModelError.isInstance(e));
      assert.throws(() => realm.imageModel("sd"), (e) => NoSuchModelError.isInstance(e));
      assert.throws(
        () => createRealm({ url: "http://localhost" }),
        (e) => e instanceof RealmError && e.code === "INVALID_OPTIONS",
      );
      // Nothing opens before the first call; close() closes, and a later call reconnects.
      assert.deepEqual(realm.client.stats(), idleStats(0));
      assert.equal((await generateText({ model, prompt: FRANCE })).text, "Paris");
      assert.deepEqual(realm.client.stats(), idleStats(1));
      await realm.close();
      assert.deepEqual(realm.client.stats(), idleStats(0));
      assert.equal((await generateText({ model, prompt: FRANCE })).text, "Paris");
    }),
});

Deno.test("ai-sdk: createRealm refuses a misspelt option, and `model`, at once", () => {
  const refused = (settings: Record<string, unknown>) => {
    try {
      createRealm(settings as RealmProviderSettings);
    } catch (error) {
      assert.ok(error instanceof RealmError);
      assert.equal(error.code, "INVALID_OPTIONS");
      assert.equal(error.sent, false);
      return error.message;
    }
    assert.fail("createRealm accepted it");
  };
  assert.equal(refused({ timout: 5000 }), "Unknown option `timout`: did you mean `timeout`?");
  assert.equal(refused({ apikey: "k" }), "Unknown option `apikey`: did you mean `apiKey`?");
  assert.match(refused({ model: "llama-2-7b" }), /^createRealm takes no `model`/);
});

Deno.test({
  name:
    "ai-sdk: the default provider closes its socket once idle, so a script ends; the next call opens it again",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 60, longStreams: true });
    const Native = globalThis.WebSocket;
    // The default provider talks to ws://localhost:8080; here, to the stub.
    globalThis.WebSocket = class extends Native {
      constructor(url: string | URL, protocols?: ConstructorParameters<typeof Native>[1]) {
        super(String(url).startsWith("ws://localhost:8080") ? server.url : url, protocols);
      }
    };
    let connected = 0;
    const onConnected = () => connected++;
    defaultRealm.client.on("connected", onConnected);
    try {
      const model = defaultRealm("llama-2-7b");
      // A stream that lasts longer than the idle time is not cut: idle counts from a call's end.
      const streamed = streamText({ model, prompt: "Hi", maxOutputTokens: 25 });
      assert.equal((await streamed.text).split(" ").length - 1, 25);
      assert.equal((await generateText({ model, prompt: FRANCE })).text, "Paris");
      assert.equal(connected, 1, "calls close together share one socket");
      const lastCall = performance.now();
      await until(() => defaultRealm.client.state === "idle", DEFAULT_PROVIDER_IDLE_MS + 3000);
      const idle = performance.now() - lastCall;
      assert.ok(idle >= DEFAULT_PROVIDER_IDLE_MS - 20, `closed after ${idle.toFixed(0)} ms`);
      await until(() => server.connectionCount === 0, 3000, "the socket to close");
      assert.equal((await generateText({ model, prompt: FRANCE })).text, "Paris");
      assert.equal(connected, 2);
    } finally {
      globalThis.WebSocket = Native;
      defaultRealm.client.off("connected", onConnected);
      await defaultRealm.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "ai-sdk: calls that start together wait for one connect and share its sockets",
  ...sanitize,
  fn: () =>
    withRealm({}, { connections: 2 }, async (realm, server) => {
      const model = realm("llama-2-7b");
      const answers = await Promise.all(
        [1, 2, 3].map(() => generateText({ model, prompt: FRANCE })),
      );
      assert.deepEqual(answers.map((a) => a.text), ["Paris", "Paris", "Paris"]);
      assert.deepEqual(realm.client.stats(), idleStats(2));
      assert.equal(server.connectionCount, 2);
      assert.equal(server.callCount, 3);
    }),
});

Deno.test({
  name: "ai-sdk: cancelling the model's stream stops the call",
  ...sanitize,
  fn: () =>
    withRealm({ tokenDelayMs: 50 }, {}, async (realm) => {
      const { stream } = await realm("llama-2-7b").doStream(
        callOptions("Hi", { maxOutputTokens: 20 }),
      );
      const reader = stream.getReader();
      const seen: string[] = [];
      while (!seen.includes("text-delta")) seen.push((await reader.read()).value!.type);
      assert.deepEqual(seen, ["stream-start", "response-metadata", "text-start", "text-delta"]);
      await reader.cancel();
      assert.equal(realm.client.stats().pendingCalls, 0);
      assert.equal(realm.client.stats().queuedCalls, 0);
    }),
});

Deno.test({
  name: "ai-sdk: prompt layout: an assistant message last is continued, not answered",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm, server) => {
      await realm("llama-2-7b").doGenerate({
        prompt: [
          { role: "user", content: [{ type: "text", text: "Name a city." }] },
          { role: "assistant", content: [{ type: "text", text: "Paris is" }] },
        ],
      });
      assert.equal(sentCalls(server)[0].params.prompt, "User: Name a city.\n\nAssistant: Paris is");
    }),
});

Deno.test({
  name: "ai-sdk: tool results and reasoning are refused before anything is sent",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm, server) => {
      const model = realm("llama-2-7b");
      const tool = await thrown(model.doGenerate({
        prompt: [{
          role: "tool",
          content: [{
            type: "tool-result",
            toolCallId: "1",
            toolName: "weather",
            output: { type: "text", value: "sunny" },
          }],
        }],
      }));
      assert.ok(UnsupportedFunctionalityError.isInstance(tool), `got ${tool}`);
      assert.equal(tool.functionality, "tool results");
      const reasoning = await thrown(model.doStream({
        prompt: [
          { role: "user", content: [{ type: "text", text: "Hi" }] },
          { role: "assistant", content: [{ type: "reasoning", text: "Hmm." }] },
        ],
      }));
      assert.ok(UnsupportedFunctionalityError.isInstance(reasoning), `got ${reasoning}`);
      assert.equal(
        reasoning.message,
        "Realm takes text only, but message 2 (assistant) has reasoning parts. " +
          "Send text parts only (describe a file or a tool's result in words).",
      );
      assert.equal(server.callCount, 0);
      assert.deepEqual(realm.client.stats(), idleStats(0));
    }),
});

Deno.test({
  name: "ai-sdk: a repetitionPenalty Realm refuses is a non-retryable INVALID_PARAMS",
  ...sanitize,
  fn: () =>
    withRealm({}, {}, async (realm, server) => {
      const error = await thrown(generateText({
        model: realm("llama-2-7b"),
        prompt: FRANCE,
        providerOptions: { realm: { repetitionPenalty: -1 } },
      }));
      assert.ok(APICallError.isInstance(error), `expected an APICallError, got ${error}`);
      assert.equal(error.isRetryable, false);
      assert.equal((error.cause as RealmError).code, "INVALID_PARAMS");
      assert.equal(server.callCount, 0);
    }),
});

Deno.test({
  name:
    "ai-sdk: a connection lost before any text, even while the server was generating, is retryable",
  ...sanitize,
  fn: () =>
    withRealm({ tokenDelayMs: 1 }, {}, async (realm, server) => {
      await within(5000, realm.client.connect(), "connect()");
      server.faults.stall(true);
      const failed = thrown(realm("llama-2-7b").doGenerate(callOptions(FRANCE)));
      await until(() => sentCalls(server).length === 1, 3000, "the call on the wire");
      // The server was serving it: with `reconnect` off the client cannot re-send it.
      dropNow(server);
      const error = await failed;
      assert.ok(APICallError.isInstance(error), `expected an APICallError, got ${error}`);
      const cause = error.cause as RealmError;
      assert.equal(cause.code, "CONNECTION_CLOSED");
      assert.equal(cause.sent, true, "the server may have been generating");
      assert.equal(cause.delivered, undefined);
      assert.equal(error.isRetryable, true, "nothing was delivered: generating again is safe");
    }),
});

Deno.test({
  name: "ai-sdk: a retry the client's budget withheld is not retryable for the AI SDK",
  ...sanitize,
  fn: () =>
    withRealm(
      // One call a second: the limited ones are told "Try again in 0 seconds".
      { apiKeys: { "sk-test": "tenant-a" }, rateLimit: { perMinute: 60, burst: 1 } },
      { apiKey: "sk-test", maxRetries: 1, timeout: 10_000 },
      async (realm) => {
        await within(5000, realm.client.connect(), "connect()");
        const model = realm("llama-2-7b");
        // Eleven limited calls at once: the budget lets ten retry, and withholds the eleventh.
        const settled = await Promise.allSettled(
          Array.from({ length: 12 }, () => model.doGenerate(callOptions(FRANCE))),
        );
        const errors = settled.flatMap((r) => r.status === "rejected" ? [r.reason] : []);
        const withheld = errors.filter((e) =>
          APICallError.isInstance(e) && /retry was withheld/.test((e.cause as Error).message)
        );
        assert.ok(withheld.length >= 1, "some retry was withheld");
        for (const error of withheld) assert.equal((error as APICallError).isRetryable, false);
        assert.ok(realm.client.stats().retriesWithheld >= 1);
      },
    ),
});
