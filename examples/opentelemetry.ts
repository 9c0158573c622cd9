// OpenTelemetry is imported inline, not mapped in deno.json: every `deno task` (the demo's
// too) fetches what deno.json maps, and the demo never runs this.
// deno-lint-ignore-file no-import-prefix
/**
 * OpenTelemetry: spans and metrics for every call, from the client's
 * `realm:call` diagnostics channel, named per OpenTelemetry's GenAI semantic
 * conventions. The client itself depends on nothing: this recipe brings
 * `@opentelemetry/api` (and whatever SDK your app already sets up). Copy
 * `instrumentRealm` into your app and call it once at start-up.
 *
 *     REALM_URL=ws://localhost:8080 deno run --allow-net --allow-env examples/opentelemetry.ts
 *
 * @module
 */
import diagnostics from "node:diagnostics_channel";
import {
  type Attributes,
  type Meter,
  metrics,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
  type Tracer,
} from "npm:@opentelemetry/api@1.9.1";
import {
  BasicTracerProvider,
  ConsoleSpanExporter,
  SimpleSpanProcessor,
} from "npm:@opentelemetry/sdk-trace-base@2.12.1";
import { RealmWebSocketClient } from "@realm-ai/ws-client";

/** What the client publishes for one call: GenAI attributes, plus `error`, `result`, `durationMs`. */
type CallContext = Record<string, unknown>;

/** The attributes the GenAI metrics carry, when the call has them. */
const METRIC_ATTRIBUTES = [
  "gen_ai.operation.name",
  "gen_ai.provider.name",
  "gen_ai.request.model",
  "server.address",
  "server.port",
];

/** The context's attributes: its dotted names with a string, number or boolean value. */
function attributesOf(context: CallContext, names?: string[]): Attributes {
  const attributes: Attributes = {};
  for (const name of names ?? Object.keys(context)) {
    const value = context[name];
    const kind = typeof value;
    if (name.includes(".") && (kind === "string" || kind === "number" || kind === "boolean")) {
      attributes[name] = value as string | number | boolean;
    }
  }
  return attributes;
}

/**
 * Subscribes to `realm:call`: a span per call, named `{operation} {model}`
 * (the pipeline's name for a pipeline), kind CLIENT, ended when the call
 * settles (for a stream: at its end, its `break` or its abort), with status
 * ERROR and the `RealmError` code as `error.type` when it fails; and the
 * metrics `gen_ai.client.operation.duration` (s) and
 * `gen_ai.client.token.usage` (by `gen_ai.token.type`). Returns the function
 * that unsubscribes.
 */
export function instrumentRealm(
  {
    tracer = trace.getTracer("@realm-ai/ws-client"),
    meter = metrics.getMeter("@realm-ai/ws-client"),
  }: { tracer?: Tracer; meter?: Meter } = {},
): () => void {
  const duration = meter.createHistogram("gen_ai.client.operation.duration", {
    description: "GenAI operation duration",
    unit: "s",
  });
  const usage = meter.createHistogram("gen_ai.client.token.usage", {
    description: "Number of input and output tokens used",
    unit: "{token}",
  });
  const spans = new WeakMap<object, Span>();
  const channel = diagnostics.tracingChannel<unknown, CallContext>("realm:call");
  const handlers = {
    start(context: CallContext) {
      const operation = String(context["gen_ai.operation.name"]);
      const target = context["gen_ai.request.model"] ?? context["realm.pipeline.name"];
      spans.set(
        context,
        tracer.startSpan(target === undefined ? operation : `${operation} ${target}`, {
          kind: SpanKind.CLIENT,
          attributes: attributesOf(context),
        }),
      );
    },
    end() {},
    asyncStart() {},
    error() {},
    asyncEnd(context: CallContext) {
      const span = spans.get(context);
      if (!span) return;
      spans.delete(context);
      span.setAttributes(attributesOf(context));
      const error = context.error;
      if (error !== undefined) {
        if (error instanceof Error) span.recordException(error);
        span.setStatus({
          code: SpanStatusCode.ERROR,
          message: error instanceof Error ? error.message : String(error),
        });
      }
      span.end();
      const common = attributesOf(context, METRIC_ATTRIBUTES);
      duration.record(Number(context.durationMs) / 1000, {
        ...common,
        ...attributesOf(context, ["error.type"]),
      });
      for (const type of ["input", "output"]) {
        const tokens = context[`gen_ai.usage.${type}_tokens`];
        if (typeof tokens === "number") {
          usage.record(tokens, { ...common, "gen_ai.token.type": type });
        }
      }
    },
  };
  channel.subscribe(handlers);
  return () => channel.unsubscribe(handlers);
}

/** Runs a few calls against the server at `url`, printing their spans. */
export async function main(url: string, apiKey?: string): Promise<void> {
  const provider = new BasicTracerProvider({
    spanProcessors: [new SimpleSpanProcessor(new ConsoleSpanExporter())],
  });
  const stop = instrumentRealm({ tracer: provider.getTracer("example") });
  const client = new RealmWebSocketClient({ url, model: "llama-2-7b", apiKey });
  try {
    await client.connect();
    await client.generate({ prompt: "What is the capital of France?", max_tokens: 6 });
    const stream = client.generateStream({ prompt: "Tell me a story", max_tokens: 5 });
    for await (const _token of stream) { /* the span ends with the stream */ }
    const { requestId, timeToFirstTokenMs } = await stream.result;
    console.log(`stream ${requestId}: first token after ${timeToFirstTokenMs?.toFixed(1)} ms`);
  } finally {
    await client.disconnect();
    stop();
    await provider.shutdown();
  }
}

if (import.meta.main) {
  await main(Deno.env.get("REALM_URL") ?? "ws://localhost:8080", Deno.env.get("REALM_API_KEY"));
}
