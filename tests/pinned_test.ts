/**
 * Behaviours that once survived deliberately planted bugs, pinned with exact values: the tenant
 * from `auth_success`, `retryAfter` from the server's message, the number of rate-limit retries,
 * and whole results compared with the server's exact answers.
 */
import assert from "node:assert/strict";
import { type HealthStatus, RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import {
  complete,
  rawCall,
  rejection,
  sanitize,
  type Script,
  scriptedServer,
  serverAnswer,
  within,
} from "./_helpers.ts";

/** Runs `fn` with a scripted server and a connected client, and tears both down. */
async function withScripted(
  script: Script,
  clientOptions: Partial<ConstructorParameters<typeof RealmWebSocketClient>[0]>,
  fn: (client: RealmWebSocketClient, received: Record<string, unknown>[]) => Promise<void>,
): Promise<void> {
  const server = scriptedServer(script);
  const client = new RealmWebSocketClient({
    url: server.url,
    model: "llama-2-7b",
    timeout: 5000,
    ...clientOptions,
  });
  try {
    await within(5000, client.connect(), "connect()");
    await fn(client, server.received);
  } finally {
    await client.disconnect();
    await server.close();
  }
}

/** The call frames a scripted server received (the auth frame left out). */
const calls = (received: Record<string, unknown>[]) => received.filter((f) => "function" in f);

Deno.test({
  name: "auth: the tenant is adopted from auth_success even when the welcome names another",
  ...sanitize,
  fn: () =>
    withScripted(
      {
        open: (socket) =>
          socket.send(JSON.stringify({ type: "auth_required", message: "Please send the key" })),
        frame: (socket, frame) => {
          if (frame.type === "auth") {
            assert.equal(frame.api_key, "sk-scripted");
            socket.send(JSON.stringify({ type: "auth_success", tenant_id: "tenant-from-auth" }));
            // A welcome that disagrees: the key decides the tenant, not this frame.
            socket.send(JSON.stringify({
              status: "connected",
              version: "0.1.0",
              tenant_id: "tenant-from-welcome",
            }));
            return;
          }
          complete(socket, frame.id, { status: "healthy", version: "0.1.0", uptime_seconds: 1 });
        },
      },
      { apiKey: "sk-scripted", tenantId: "tenant-from-options" },
      async (client, received) => {
        assert.equal(client.getTenantId(), "tenant-from-auth");
        await client.health();
        await client.metadata();
        assert.deepEqual(received[0], { type: "auth", api_key: "sk-scripted" });
        assert.deepEqual(
          calls(received).map((f) => f.tenant_id),
          ["tenant-from-auth", "tenant-from-auth"],
        );
      },
    ),
});

Deno.test({
  name: "auth: the connected event carries the tenant from auth_success",
  ...sanitize,
  fn: async () => {
    const server = scriptedServer({
      open: (socket) => socket.send(JSON.stringify({ type: "auth_required", message: "key?" })),
      frame: (socket) => {
        socket.send(JSON.stringify({ type: "auth_success", tenant_id: "acme" }));
        socket.send(JSON.stringify({ status: "connected", version: "0.1.0", tenant_id: "other" }));
      },
    });
    const client = new RealmWebSocketClient({ url: server.url, model: "m", apiKey: "k" });
    const connected: string[] = [];
    client.on("connected", ({ tenantId }) => connected.push(tenantId));
    try {
      await within(5000, client.connect(), "connect()");
      assert.deepEqual(connected, ["acme"]);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

/** A server that rate-limits every call with this wait in its message, as the real one words it. */
function rateLimited(seconds: number): Script {
  return {
    frame: (socket, frame) =>
      socket.send(JSON.stringify({
        id: frame.id,
        status: "error",
        error: {
          code: "RATE_LIMIT_EXCEEDED",
          message: `Rate limit exceeded. Try again in ${seconds} seconds.`,
        },
      })),
  };
}

Deno.test({
  name: 'rate limit: retryAfter is 59 for "Try again in 59 seconds."',
  ...sanitize,
  fn: () =>
    withScripted(rateLimited(59), {}, async (client, received) => {
      const error = await rejection(client.health(), 5000);
      assert.equal(error.code, "RATE_LIMIT_EXCEEDED");
      assert.equal(error.retryAfter, 59);
      assert.equal(error.message, "Rate limit exceeded. Try again in 59 seconds.");
      assert.equal(error.sent, true);
      assert.equal(calls(received).length, 1, "maxRetries defaults to 0: no retry");
    }),
});

for (const maxRetries of [0, 1, 3]) {
  Deno.test({
    name: `rate limit: maxRetries ${maxRetries} sends exactly ${maxRetries + 1} frames, ` +
      "then RATE_LIMIT_EXCEEDED",
    ...sanitize,
    fn: () =>
      withScripted(rateLimited(0), {}, async (client, received) => {
        const error = await rejection(
          client.generate({ prompt: "p" }, { maxRetries }),
          5000,
          "the last retry's error",
        );
        assert.equal(error.code, "RATE_LIMIT_EXCEEDED");
        assert.equal(error.retryAfter, 0);
        assert.equal(error.sent, true);
        const frames = calls(received);
        assert.equal(frames.length, maxRetries + 1);
        // Every try is the same call: same id, function and params.
        assert.equal(new Set(frames.map((f) => JSON.stringify(f))).size, 1);
        assert.equal(client.stats().pendingCalls, 0);
      }),
  });
}

Deno.test({
  name: "rate limit: the client option maxRetries is used when the call gives none",
  ...sanitize,
  fn: () =>
    withScripted(rateLimited(0), { maxRetries: 2 }, async (client, received) => {
      const error = await rejection(client.health(), 5000);
      assert.equal(error.code, "RATE_LIMIT_EXCEEDED");
      assert.equal(calls(received).length, 3);
    }),
});

Deno.test({
  name: "rate limit: a retry that then succeeds resolves to the server's answer",
  ...sanitize,
  fn: () => {
    let tries = 0;
    return withScripted(
      {
        frame: (socket, frame) => {
          if (++tries < 3) return rateLimited(0).frame(socket, frame);
          complete(socket, frame.id, { status: "healthy", version: "0.1.0", uptime_seconds: 7 });
        },
      },
      {},
      async (client, received) => {
        const health = await within(5000, client.health({ maxRetries: 5 }), "health with retries");
        assert.deepStrictEqual(serverAnswer(health), {
          status: "healthy",
          version: "0.1.0",
          uptime_seconds: 7,
        });
        assert.equal(calls(received).length, 3);
      },
    );
  },
});

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
