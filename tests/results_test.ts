/**
 * What a call resolves to, over loopback: the server's answer exactly, beside the call's
 * `requestId` (and a generation's timings), and a stream's joined text and token count.
 */
import assert from "node:assert/strict";
import { type HealthStatus, RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import {
  complete,
  FAST,
  rawCall,
  rejection,
  sanitize,
  scriptedServer,
  serverAnswer,
  until,
  withClient,
  within,
  withScripted,
} from "./_helpers.ts";

/** Exact answers a scripted server gives, one per function. */
const ANSWERS = {
  generate: {
    text: "Bonjour tout le monde",
    tokens_generated: 4,
    prompt_tokens: 11,
    cost_usd: 0.00024,
    time_ms: 150,
  },
  health: { status: "healthy", version: "0.1.0", uptime_seconds: 3600 },
  metadata: {
    version: "0.1.0",
    functions: [{
      name: "generate",
      description: "Generate text",
      params: [
        { name: "prompt", type: "String", description: "The prompt", required: true },
        {
          name: "max_tokens",
          type: "usize",
          description: "Tokens",
          required: false,
          default: 100,
        },
      ],
      returns: "GenerationResult",
      streaming: true,
    }],
  },
  pipeline: { answer: "42", sources: ["a", { page: 2 }], nested: { deep: [1, null, true] } },
} as const;

Deno.test({
  name: "whole results equal the server's exact answers (generate, pipeline, health, metadata)",
  ...sanitize,
  fn: () =>
    withScripted(
      {
        frame: (socket, frame) =>
          complete(socket, frame.id, ANSWERS[frame.function as keyof typeof ANSWERS]),
      },
      {},
      async (client) => {
        // The server's answers exactly, beside the call's id (and a generation's timings).
        const generated = await client.generate({ prompt: "Say hello" });
        assert.deepStrictEqual(serverAnswer(generated, "1"), ANSWERS.generate);
        assert.deepStrictEqual(
          serverAnswer(await client.executePipeline("rag-pipeline", { query: "q" }), "2"),
          ANSWERS.pipeline,
        );
        assert.deepStrictEqual(serverAnswer(await client.health(), "3"), ANSWERS.health);
        assert.deepStrictEqual(serverAnswer(await client.metadata(), "4"), ANSWERS.metadata);
      },
    ),
});

Deno.test({
  name: "whole results equal the stub server's exact answers, read with a bare WebSocket",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0, orchestrator: true });
    const client = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b" });
    try {
      await within(5000, client.connect(), "connect()");
      const prompt = "What is the capital of France?";
      const generate = serverAnswer(await client.generate({ prompt }), "1");
      assert.deepStrictEqual(generate, {
        text: "Paris",
        tokens_generated: 1,
        prompt_tokens: 6,
        cost_usd: 0.00024,
        time_ms: 150,
      });
      assert.deepStrictEqual(
        generate,
        await rawCall(server.url, "generate", { prompt, model: "llama-2-7b" }),
      );

      const input = { query: "What is machine learning?", context: "Machine learning is..." };
      const rag = serverAnswer(await client.executePipeline("rag-pipeline", input), "2");
      assert.deepStrictEqual(rag, {
        answer: "Simulated response to: What is machine learning?",
        sources: ["Machine learning is..."],
      });
      assert.deepStrictEqual(
        rag,
        await rawCall(server.url, "pipeline", { pipeline: "rag-pipeline", input }),
      );

      assert.deepStrictEqual(
        serverAnswer(await client.metadata(), "3"),
        await rawCall(server.url, "metadata", {}),
      );

      const health = serverAnswer(await client.health(), "4") as unknown as HealthStatus;
      assert.deepStrictEqual(Object.keys(health).sort(), ["status", "uptime_seconds", "version"]);
      assert.equal(health.status, "healthy");
      assert.equal(health.version, "0.1.0");
      assert.ok(Number.isInteger(health.uptime_seconds) && health.uptime_seconds >= 0);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "a streamed generate's result is the joined tokens and the complete frame's count",
  ...sanitize,
  fn: () =>
    withScripted(
      {
        frame: (socket, frame) => {
          const words = ["Once ", "upon ", "a ", "time"];
          words.forEach((text, index) =>
            socket.send(JSON.stringify({
              id: frame.id,
              status: "streaming",
              data: { text, index, is_final: index === words.length - 1 },
            }))
          );
          complete(socket, frame.id, { status: "complete", tokens_generated: 4 });
        },
      },
      {},
      async (client) => {
        const tokens: string[] = [];
        const result = await client.generate({
          prompt: "story",
          stream: true,
          onToken: (t) => tokens.push(t),
        });
        assert.deepStrictEqual(serverAnswer(result, "1"), {
          text: "Once upon a time",
          tokens_generated: 4,
        });
        assert.deepStrictEqual(tokens, ["Once ", "upon ", "a ", "time"]);
      },
    ),
});

Deno.test({
  name: "generate's result without text or token count is empty text and 0 tokens; " +
    "a stream's without a count counts the tokens it streamed",
  ...sanitize,
  fn: async () => {
    const server = scriptedServer({
      frame(socket, frame) {
        const params = frame.params as Record<string, unknown>;
        if (params.stream === true) {
          ["Par", "is", "!"].forEach((text, index) =>
            socket.send(JSON.stringify({
              id: frame.id,
              status: "streaming",
              data: { text, index, is_final: index === 2 },
            }))
          );
          complete(socket, frame.id, { status: "complete" });
        } else complete(socket, frame.id, { status: "complete" });
      },
    });
    const client = new RealmWebSocketClient({ ...FAST, url: server.url, model: "llama-2-7b" });
    try {
      await within(5000, client.connect(), "connect()");
      const whole = await within(5000, client.generate({ prompt: "Hi" }), "generate");
      assert.equal(whole.text, "");
      assert.equal(whole.tokens_generated, 0);
      const streamed = await within(
        5000,
        client.generate({ prompt: "Hi", stream: true }),
        "streamed generate",
      );
      assert.equal(streamed.text, "Paris!");
      assert.equal(streamed.tokens_generated, 3);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test("generate(): requestId and durationMs on the result; no timeToFirstTokenMs", async () => {
  await withClient({}, {}, async (client) => {
    await client.connect();
    const result = await client.generate({ prompt: "What is the capital of France?" });
    assert.equal(result.requestId, "1");
    assert.equal(typeof result.durationMs, "number");
    assert.ok(result.durationMs! >= 0 && result.durationMs! < 5000, `${result.durationMs}`);
    assert.equal(result.timeToFirstTokenMs, undefined);
    const streamed = await client.generate({ prompt: "Hi", max_tokens: 4, stream: true });
    assert.equal(streamed.requestId, "2");
    assert.equal(streamed.tokens_generated, 4);
    assert.ok(streamed.timeToFirstTokenMs! >= 0);
    assert.ok(streamed.timeToFirstTokenMs! <= streamed.durationMs!);
    assert.equal((await client.health()).requestId, "3");
    assert.equal((await client.metadata()).requestId, "4");
    const rag = await client.executePipeline("rag-pipeline", { query: "q", context: "c" });
    assert.equal((rag as { requestId: string }).requestId, "5");
  });
});

Deno.test("stream.result: the joined text, the count, the id and the timings", async () => {
  await withClient({}, {}, async (client) => {
    await client.connect();
    const stream = client.generateStream({ prompt: "Tell me a story", max_tokens: 6 });
    assert.equal(stream.requestId, undefined, "not started before the first read");
    const tokens: string[] = [];
    for await (const token of stream) tokens.push(token);
    const result = await stream.result;
    assert.equal(stream.requestId, "1");
    assert.equal(result.text, tokens.join(""));
    assert.equal(result.tokens_generated, 6);
    assert.equal(result.requestId, "1");
    assert.ok(result.timeToFirstTokenMs! >= 0);
    assert.ok(result.timeToFirstTokenMs! <= result.durationMs!);
    assert.equal(await stream.result, result, "the same promise every time");

    // Taking the result alone sends the call and waits for its end.
    const unread = client.generateStream({ prompt: "Hi", max_tokens: 3 });
    const whole = await unread.result;
    assert.equal(whole.tokens_generated, 3);
    assert.equal(whole.requestId, "2");
    assert.equal(whole.text.length > 0, true);
    let again = "";
    for await (const token of unread) again += token;
    assert.equal(again, whole.text, "the tokens are still there to read");
  });
});

Deno.test("stream.result rejects with the stream's error, or ABORTED after a break", async () => {
  await withClient({}, {}, async (client) => {
    await client.connect();
    const stream = client.generateStream({ prompt: "Hi", max_tokens: 50 });
    for await (const _ of stream) break;
    const aborted = await rejection(stream.result);
    assert.equal(aborted.code, "ABORTED");
    assert.equal(aborted.requestId, "1");

    const bad = client.generateStream({ prompt: "Hi", max_tokens: 5 }, { timeout: 0.5 });
    void bad.result; // started through result, never awaited: must not be an unhandled rejection
    const failed = client.generateStream({ prompt: "Hi" }, { signal: AbortSignal.abort() });
    const error = await rejection((async () => {
      for await (const _ of failed) { /* fails at once */ }
    })());
    assert.equal(error.code, "ABORTED");
    assert.equal(await rejection(failed.result), error, "result rejects with the same error");
    // Nobody ever takes this one's result: its rejection must not be reported as unhandled
    // (Deno fails the test if it is).
    const untouched = client.generateStream({ prompt: "Hi" }, { signal: AbortSignal.abort() });
    assert.equal((await rejection(untouched.readable.getReader().read())).code, "ABORTED");
    await until(() => client.stats().pendingCalls === 0, 3000, "the timed-out stream");
    await new Promise((resolve) => setTimeout(resolve, 20));
  });
});
