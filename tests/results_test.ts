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
  sanitize,
  scriptedServer,
  serverAnswer,
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
    const server = await startStubServer({ tokenDelayMs: 0 });
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
