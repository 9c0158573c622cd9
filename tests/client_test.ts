/**
 * The call methods against the stub Realm server over loopback (generate, executePipeline, health,
 * metadata): what each sends, what comes back, calls served in order, timeouts, aborts, the
 * server's errors and frames the client cannot use.
 */
import assert from "node:assert/strict";
import { RealmError, RealmWebSocketClient } from "../mod.ts";
import {
  FRANCE,
  rejection,
  sanitize,
  scriptedServer,
  sentCalls,
  serverAnswer,
  simulatedTokens,
  until,
  withClient,
} from "./_helpers.ts";

Deno.test({
  name: "generate resolves to the whole answer (Paris) with the server's fields",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client, server) => {
      await client.connect();
      const result = await client.generate({ prompt: FRANCE, max_tokens: 50, temperature: 0.7 });
      // The server's whole answer, every field kept (the simulation ignores max_tokens).
      assert.deepStrictEqual(serverAnswer(result, "1"), {
        text: "Paris",
        tokens_generated: 1,
        prompt_tokens: 6,
        cost_usd: 0.00024,
        time_ms: 150,
      });
      const [call] = sentCalls(server);
      assert.equal(call.function, "generate");
      assert.deepEqual(call.params, {
        prompt: FRANCE,
        model: "llama-2-7b",
        max_tokens: 50,
        temperature: 0.7,
        stream: false,
      });
    }),
});

Deno.test({
  name: "every generation parameter is sent as the server names it",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client, server) => {
      await client.connect();
      await client.generate({
        prompt: "p",
        model: "other-model",
        max_tokens: 3,
        temperature: 0,
        top_p: 1,
        top_k: 0,
        repetition_penalty: 1.1,
      });
      assert.deepEqual(sentCalls(server)[0].params, {
        prompt: "p",
        model: "other-model",
        max_tokens: 3,
        temperature: 0,
        top_p: 1,
        top_k: 0,
        repetition_penalty: 1.1,
        stream: false,
      });
    }),
});

Deno.test({
  name: "executePipeline: built-in rag-pipeline, a custom pipeline, and the server's errors",
  ...sanitize,
  fn: () =>
    withClient(
      {
        pipelines: {
          echo: (input) => ({ echoed: input }),
          broken: () => {
            throw new Error("pipeline exploded");
          },
        },
      },
      {},
      async (client, server) => {
        await client.connect();
        const rag = await client.executePipeline("rag-pipeline", {
          query: "What is machine learning?",
          context: "Machine learning is...",
        });
        assert.deepStrictEqual(rag, {
          answer: "Simulated response to: What is machine learning?",
          sources: ["Machine learning is..."],
          requestId: "1",
        });
        assert.deepEqual(await client.executePipeline("echo", { a: 1 }), {
          echoed: { a: 1 },
          requestId: "2",
        });
        assert.deepEqual(sentCalls(server)[1].params, { pipeline: "echo", input: { a: 1 } });
        const missing = await rejection(client.executePipeline("nope", {}));
        assert.equal(missing.code, "DISPATCH_ERROR");
        assert.match(missing.message, /Pipeline not found: nope/);
        assert.equal(missing.sent, true);
        // The real server reports every pipeline failure as DISPATCH_ERROR.
        const broken = await rejection(client.executePipeline("broken", {}));
        assert.equal(broken.code, "DISPATCH_ERROR");
        assert.match(broken.message, /pipeline exploded/);
      },
    ),
});

Deno.test({
  name: "executePipeline on a server without an orchestrator: DISPATCH_ERROR",
  ...sanitize,
  fn: () =>
    withClient({ orchestrator: false }, {}, async (client) => {
      await client.connect();
      const error = await rejection(client.executePipeline("rag-pipeline", { query: "q" }));
      assert.equal(error.code, "DISPATCH_ERROR");
      assert.match(error.message, /Orchestrator not available/);
    }),
});

Deno.test({
  name: "health and metadata as the server sends them (metadata params use `type`)",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client, server) => {
      await client.connect();
      const health = await client.health();
      assert.equal(health.status, "healthy");
      assert.equal(health.version, "0.1.0");
      assert.equal(typeof health.uptime_seconds, "number");
      const metadata = await client.metadata();
      assert.equal(metadata.version, "0.1.0");
      const names = metadata.functions.map((f) => f.name);
      assert.deepEqual([...names].sort(), ["generate", "health", "metadata", "pipeline"]);
      const generate = metadata.functions.find((f) => f.name === "generate")!;
      assert.equal(generate.streaming, true);
      const prompt = generate.params.find((p) => p.name === "prompt")!;
      // The wire field is `type` (Rust's `param_type`), holding Rust type names.
      assert.equal(prompt.type, "String");
      assert.equal(prompt.required, true);
      // health and metadata send an empty params object: the server requires one.
      for (const call of sentCalls(server)) assert.deepEqual(call.params, {});
    }),
});

Deno.test({
  name: "calls on one connection are served in order; all settle with their own answers",
  ...sanitize,
  fn: () =>
    withClient({ tokenDelayMs: 1 }, {}, async (client) => {
      await client.connect();
      const order: string[] = [];
      const stream = client.generate({ prompt: FRANCE, stream: true, max_tokens: 5 })
        .then((r) => (order.push("stream"), r));
      const health = client.health().then((r) => (order.push("health"), r));
      const whole = client.generate({ prompt: FRANCE }).then((r) => (order.push("generate"), r));
      const [s, h, g] = await Promise.all([stream, health, whole]);
      assert.equal(h.status, "healthy");
      assert.equal(g.text, "Paris");
      assert.deepStrictEqual(serverAnswer(s, "1"), {
        text: simulatedTokens(FRANCE, 5).join(""),
        tokens_generated: 5,
      });
      assert.deepEqual(order, ["stream", "health", "generate"]);
    }),
});

Deno.test({
  name: "a call with no answer by its timeout rejects with TIMEOUT (sent: true) and is forgotten",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client, server) => {
      await client.connect();
      server.faults.stall(true);
      const error = await rejection(client.health({ timeout: 50 }), 2000, "the 50 ms timeout");
      assert.equal(error.code, "TIMEOUT");
      assert.equal(error.sent, true);
      assert.equal(client.stats().pendingCalls, 0);
    }),
});

Deno.test({
  name: "an aborted call rejects at once with ABORTED, before or after sending",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client, server) => {
      await client.connect();
      const early = await rejection(client.health({ signal: AbortSignal.abort() }));
      assert.equal(early.code, "ABORTED");
      assert.equal(early.sent, false);
      server.faults.stall(true);
      const controller = new AbortController();
      const pending = client.generate({ prompt: "p" }, { signal: controller.signal });
      await until(() => sentCalls(server).length === 1);
      controller.abort();
      const error = await rejection(pending);
      assert.equal(error.code, "ABORTED");
      assert.equal(error.sent, true);
      const streamController = new AbortController();
      const stream = client.generateStream({ prompt: "p" }, { signal: streamController.signal });
      const reading = (async () => {
        for await (const _ of stream) { /* */ }
      })();
      streamController.abort();
      assert.equal((await rejection(reading)).code, "ABORTED");
      assert.equal(client.stats().pendingCalls, 0);
    }),
});

Deno.test({
  name: "frames the client cannot use become error events; other calls are untouched",
  ...sanitize,
  fn: () =>
    withClient({ tokenDelayMs: 3 }, {}, async (client, server) => {
      const errors: RealmError[] = [];
      client.on("error", (e) => errors.push(e));
      await client.connect();
      const stream = client.generate({ prompt: FRANCE, stream: true, max_tokens: 100 });
      await until(() => sentCalls(server).length === 1);
      server.faults.sendMalformed("not-json");
      server.faults.sendMalformed("unknown-id");
      server.faults.sendMalformed("binary-reply");
      const result = await stream;
      assert.equal(result.text, simulatedTokens(FRANCE, 100).join(""));
      assert.equal((await client.health()).status, "healthy");
      assert.equal(errors.length, 3);
      for (const e of errors) {
        assert.ok(e instanceof RealmError);
        assert.equal(e.code, "PROTOCOL_ERROR");
      }
      assert.match(errors[2].message, /Binary messages not supported/);
    }),
});

Deno.test({
  name: 'quirk: an id:"unknown" error answers the oldest call on that connection',
  ...sanitize,
  fn: async () => {
    // A WebSocket whose next frame is corrupted on the way out, as a faulty proxy might.
    let corruptNext = false;
    class CorruptingWebSocket extends WebSocket {
      override send(data: string) {
        if (corruptNext) {
          corruptNext = false;
          return super.send(data.replace('"function"', '"functio"'));
        }
        super.send(data);
      }
    }
    await withClient({}, { WebSocket: CorruptingWebSocket }, async (client) => {
      const errors: RealmError[] = [];
      client.on("error", (e) => errors.push(e));
      await client.connect();
      assert.equal(client.getWebSocketSource(), "option");
      corruptNext = true;
      const broken = client.health();
      const fine = client.generate({ prompt: FRANCE });
      const error = await rejection(broken);
      assert.equal(error.code, "INTERNAL_ERROR");
      assert.match(error.message, /Invalid function call/);
      assert.equal((await fine).text, "Paris");
      assert.equal(errors.length, 1);
      assert.equal(errors[0].code, "INTERNAL_ERROR");
    });
  },
});

Deno.test({
  name: "an unknown error code, and the protocol's `cancelled` status, are typed errors",
  ...sanitize,
  fn: async () => {
    const server = scriptedServer({
      open: (socket) =>
        socket.send(JSON.stringify({ status: "connected", version: "9.9.9", tenant_id: null })),
      frame: (socket, { id, function: fn }) =>
        socket.send(JSON.stringify(
          fn === "metadata"
            // `cancelled` is in the protocol, though today's server never sends it.
            ? { id, status: "cancelled" }
            : {
              id,
              status: "error",
              error: { code: "QUOTA_GONE", message: "No quota left", details: { plan: "free" } },
            },
        )),
    });
    const client = new RealmWebSocketClient({ url: server.url, model: "m" });
    try {
      await client.connect();
      assert.equal(client.getServerVersion(), "9.9.9");
      const error = await rejection(client.health());
      assert.equal(error.code, "QUOTA_GONE");
      assert.equal(error.message, "No quota left");
      assert.deepEqual(error.details, { plan: "free" });
      const cancelled = await rejection(client.metadata());
      assert.equal(cancelled.code, "CANCELLED");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});
