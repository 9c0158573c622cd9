/**
 * The OpenTelemetry recipe (`examples/opentelemetry.ts`, copied here as `opentelemetry.ts` and run
 * as it is: Node 22 strips its types) against the installed package, with the real
 * `@opentelemetry/api`, `@opentelemetry/sdk-trace-base` and `@opentelemetry/sdk-metrics`, set up
 * as the recipe's documentation says: the global tracer and meter, read back from in-memory
 * exporters.
 *
 * Usage: `node opentelemetry.mjs` (Node 22.18 or later) from a project that has the package, the
 * OpenTelemetry packages and the recipe. Prints one line per check and `N passed, N failed`.
 *
 * @module
 */
import assert from "node:assert/strict";
import process from "node:process";
import { RealmWebSocketClient } from "@realm-ai/ws-client";
import { startStubServer } from "@realm-ai/ws-client/testing";

// Imported by name at run time: the test project has them, `deno check` (which sees this file in
// the repository, beside no copy of the recipe) does not.
const load = (specifier) => import(specifier);
const { metrics, SpanKind, SpanStatusCode, trace } = await load("@opentelemetry/api");
const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = await load(
  "@opentelemetry/sdk-trace-base",
);
const {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} = await load("@opentelemetry/sdk-metrics");
const { instrumentRealm } = await load("./opentelemetry.ts");

const watchdog = setTimeout(() => {
  console.error("opentelemetry.mjs: still running after 60 s, giving up");
  process.exit(2);
}, 60_000);
watchdog.unref();
console.log(`# OpenTelemetry recipe on Node ${process.version}`);

const spanExporter = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({
  spanProcessors: [new SimpleSpanProcessor(spanExporter)],
});
const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
const reader = new PeriodicExportingMetricReader({
  exporter: metricExporter,
  exportIntervalMillis: 3_600_000,
});
const meterProvider = new MeterProvider({ readers: [reader] });
trace.setGlobalTracerProvider(tracerProvider);
metrics.setGlobalMeterProvider(meterProvider);

// As the recipe's documentation shows it.
const stop = instrumentRealm({
  tracer: trace.getTracer("my-app"),
  meter: metrics.getMeter("my-app"),
});

const server = await startStubServer({ tokenDelayMs: 2 });
const client = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b", timeout: 5000 });
const port = Number(new URL(server.url).port);

/** The histograms' data points recorded so far, by metric name. */
async function recorded() {
  await reader.forceFlush();
  const points = {};
  for (const resource of metricExporter.getMetrics()) {
    for (const scope of resource.scopeMetrics) {
      for (const metric of scope.metrics) {
        points[metric.descriptor.name] = metric.dataPoints;
      }
    }
  }
  return points;
}

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

check(
  "generate(): one CLIENT span 'text_completion llama-2-7b' with the call's attributes",
  async () => {
    const result = await client.generate({
      prompt: "What is the capital of France?",
      max_tokens: 9,
    });
    const spans = spanExporter.getFinishedSpans();
    assert.equal(spans.length, 1);
    const [span] = spans;
    assert.equal(span.name, "text_completion llama-2-7b");
    assert.equal(span.kind, SpanKind.CLIENT);
    assert.equal(span.status.code, SpanStatusCode.UNSET);
    assert.equal(span.attributes["gen_ai.response.id"], result.requestId);
    assert.equal(span.attributes["gen_ai.request.max_tokens"], 9);
    assert.equal(span.attributes["gen_ai.usage.output_tokens"], 1);
    assert.equal(span.attributes["server.address"], "127.0.0.1");
    assert.equal(span.attributes["server.port"], port);
  },
);

check("a stream's span ends with the stream, with its output tokens", async () => {
  spanExporter.reset();
  let tokens = 0;
  for await (const _token of client.generateStream({ prompt: "Tell me a story", max_tokens: 5 })) {
    tokens++;
  }
  const [span] = spanExporter.getFinishedSpans();
  assert.equal(tokens, 5);
  assert.equal(span.attributes["gen_ai.request.stream"], true);
  assert.equal(span.attributes["gen_ai.usage.output_tokens"], 5);
});

check("a failed call: status ERROR, error.type its code, the exception recorded", async () => {
  spanExporter.reset();
  await assert.rejects(client.executePipeline("rag-pipeline", { query: "x" }));
  const [span] = spanExporter.getFinishedSpans();
  assert.equal(span.name, "invoke_workflow rag-pipeline");
  assert.equal(span.status.code, SpanStatusCode.ERROR);
  assert.equal(span.attributes["error.type"], "DISPATCH_ERROR");
  assert.equal(span.events[0]?.name, "exception");
});

check("the GenAI metrics: a duration per call, token usage by type", async () => {
  const points = await recorded();
  const durations = points["gen_ai.client.operation.duration"];
  assert.equal(durations.reduce((sum, point) => sum + point.value.count, 0), 3);
  const failed = durations.find((point) => point.attributes["error.type"] === "DISPATCH_ERROR");
  assert.ok(failed, "the failed call's duration carries error.type");
  const usage = points["gen_ai.client.token.usage"];
  const output = usage.find((point) => point.attributes["gen_ai.token.type"] === "output");
  assert.equal(output.value.sum, 1 + 5);
});

check("the function it returns unsubscribes: no span after it", async () => {
  stop();
  spanExporter.reset();
  assert.equal((await client.health()).status, "healthy");
  assert.deepEqual(spanExporter.getFinishedSpans(), []);
});

let passed = 0;
let failed = 0;
try {
  await client.connect();
  for (const { name, fn } of checks) {
    try {
      await fn();
      passed++;
      console.log(`ok - ${name}`);
    } catch (error) {
      failed++;
      console.log(`not ok - ${name}: ${error?.stack ?? error}`);
    }
  }
} finally {
  await client.disconnect();
  await server.close();
  await tracerProvider.shutdown();
  await meterProvider.shutdown();
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
