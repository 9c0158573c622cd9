// OpenTelemetry is imported inline, not mapped in deno.json: every `deno task` (the demo's
// too) fetches what deno.json maps, and the demo never runs this.
// deno-lint-ignore-file no-import-prefix
/**
 * The OpenTelemetry recipe (examples/opentelemetry.ts) with the real `@opentelemetry/api` and
 * `@opentelemetry/sdk-trace-base`: an in-memory span exporter, the stub server over loopback.
 */
import assert from "node:assert/strict";
import type { Attributes, Meter } from "npm:@opentelemetry/api@1.9.1";
import { SpanKind, SpanStatusCode } from "npm:@opentelemetry/api@1.9.1";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "npm:@opentelemetry/sdk-trace-base@2.12.1";
import { RealmWebSocketClient } from "../mod.ts";
import { startStubServer, type StubServer } from "../testing.ts";
import { instrumentRealm } from "../examples/opentelemetry.ts";
import { rejection, until } from "./_helpers.ts";

/** A meter that keeps what each histogram records. */
function recordingMeter() {
  const recorded: { name: string; value: number; attributes: Attributes }[] = [];
  const meter = {
    createHistogram: (name: string) => ({
      record: (value: number, attributes: Attributes = {}) =>
        recorded.push({ name, value, attributes }),
    }),
  } as unknown as Meter;
  return { meter, recorded };
}

async function withRecipe(
  fn: (
    t: {
      client: RealmWebSocketClient;
      server: StubServer;
      spans: () => ReadableSpan[];
      recorded: ReturnType<typeof recordingMeter>["recorded"];
    },
  ) => Promise<void>,
): Promise<void> {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const { meter, recorded } = recordingMeter();
  const stop = instrumentRealm({ tracer: provider.getTracer("test"), meter });
  const server = await startStubServer({ tokenDelayMs: 2 });
  const client = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b", timeout: 5000 });
  try {
    await client.connect();
    await fn({ client, server, spans: () => exporter.getFinishedSpans(), recorded });
  } finally {
    await client.disconnect();
    await server.close();
    stop();
    await provider.shutdown();
  }
}

Deno.test("recipe: generate() makes one CLIENT span 'text_completion llama-2-7b' and the metrics", async () => {
  await withRecipe(async ({ client, server, spans, recorded }) => {
    const result = await client.generate({
      prompt: "What is the capital of France?",
      max_tokens: 9,
    });
    assert.equal(spans().length, 1);
    const [span] = spans();
    assert.equal(span.name, "text_completion llama-2-7b");
    assert.equal(span.kind, SpanKind.CLIENT);
    assert.equal(span.status.code, SpanStatusCode.UNSET);
    const port = Number(new URL(server.url).port);
    assert.deepEqual(span.attributes, {
      "gen_ai.operation.name": "text_completion",
      "gen_ai.provider.name": "realm",
      "gen_ai.response.id": result.requestId,
      "realm.tenant_id": client.getTenantId(),
      "gen_ai.request.model": "llama-2-7b",
      "gen_ai.request.max_tokens": 9,
      "gen_ai.request.stream": false,
      "server.address": "127.0.0.1",
      "server.port": port,
      "realm.sent": true,
      "realm.attempts": 1,
      "gen_ai.usage.input_tokens": 6,
      "gen_ai.usage.output_tokens": result.tokens_generated,
    });
    const common = {
      "gen_ai.operation.name": "text_completion",
      "gen_ai.provider.name": "realm",
      "gen_ai.request.model": "llama-2-7b",
      "server.address": "127.0.0.1",
      "server.port": port,
    };
    assert.deepEqual(recorded, [
      {
        name: "gen_ai.client.operation.duration",
        value: result.durationMs! / 1000,
        attributes: common,
      },
      {
        name: "gen_ai.client.token.usage",
        value: 6,
        attributes: { ...common, "gen_ai.token.type": "input" },
      },
      {
        name: "gen_ai.client.token.usage",
        value: result.tokens_generated,
        attributes: { ...common, "gen_ai.token.type": "output" },
      },
    ]);
  });
});

Deno.test("recipe: a failed call's span has status ERROR and error.type, the RealmError code", async () => {
  await withRecipe(async ({ client, spans, recorded }) => {
    const error = await rejection(client.executePipeline("nope", {}));
    const [span] = spans();
    assert.equal(span.name, "invoke_workflow nope");
    assert.equal(span.status.code, SpanStatusCode.ERROR);
    assert.equal(span.status.message, error.message);
    assert.equal(span.attributes["error.type"], "DISPATCH_ERROR");
    assert.equal(span.events[0].name, "exception");
    assert.equal(recorded[0].attributes["error.type"], "DISPATCH_ERROR");
    await client.health();
    assert.equal(spans()[1].name, "realm.health");
    assert.equal(spans()[1].status.code, SpanStatusCode.UNSET);
  });
});

Deno.test("recipe: a stream's span ends when the stream ends, is broken out of, or is aborted", async (t) => {
  await withRecipe(async ({ client, spans }) => {
    await t.step("read to its end", async () => {
      const stream = client.generateStream({ prompt: "Tell me a story", max_tokens: 8 });
      let count = 0;
      for await (const _ of stream) {
        if (++count === 1) assert.equal(spans().length, 0, "still open while tokens arrive");
      }
      const result = await stream.result;
      const span = spans().at(-1)!;
      assert.equal(span.name, "text_completion llama-2-7b");
      assert.equal(span.attributes["gen_ai.request.stream"], true);
      assert.equal(span.attributes["gen_ai.usage.output_tokens"], 8);
      assert.equal(
        span.attributes["gen_ai.response.time_to_first_chunk"],
        result.timeToFirstTokenMs! / 1000,
      );
      assert.equal(span.status.code, SpanStatusCode.UNSET);
    });
    await t.step("a break", async () => {
      const before = spans().length;
      for await (const _ of client.generateStream({ prompt: "Hi", max_tokens: 50 })) break;
      await until(() => spans().length === before + 1, 3000, "the broken stream's span");
      const span = spans().at(-1)!;
      assert.equal(span.attributes["realm.abandoned"], true);
      assert.equal(span.status.code, SpanStatusCode.UNSET);
    });
    await t.step("an abort signal", async () => {
      const before = spans().length;
      const controller = new AbortController();
      const stream = client.generateStream({ prompt: "Hi", max_tokens: 50 }, {
        signal: controller.signal,
      });
      const error = await rejection((async () => {
        for await (const _ of stream) controller.abort();
      })());
      assert.equal(error.code, "ABORTED");
      await until(() => spans().length === before + 1, 3000, "the aborted stream's span");
      const span = spans().at(-1)!;
      assert.equal(span.status.code, SpanStatusCode.ERROR);
      assert.equal(span.attributes["error.type"], "ABORTED");
    });
  });
});
