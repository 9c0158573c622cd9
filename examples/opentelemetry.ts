/**
 * OpenTelemetry: a span and the GenAI metrics for every call, from the client's `realm:call`
 * diagnostics channel, named per OpenTelemetry's GenAI semantic conventions. Copy this file into
 * your app and call {@linkcode instrumentRealm} once at start-up, with the tracer and the meter
 * of the OpenTelemetry SDK your app sets up:
 *
 * ```ts ignore
 * import { metrics, trace } from "@opentelemetry/api";
 * import { instrumentRealm } from "./opentelemetry.ts";
 *
 * const stop = instrumentRealm({
 *   tracer: trace.getTracer("my-app"),
 *   meter: metrics.getMeter("my-app"),
 * });
 * ```
 *
 * It imports nothing but `node:diagnostics_channel` (and the client's types), so the same file
 * runs on Node (22.18 and later run a `.ts` file as it is; older ones through your TypeScript
 * build), Deno and Bun; the client itself still depends on nothing. Its types are the few
 * members it uses of `@opentelemetry/api`'s `Tracer` and `Meter`, which the real ones fit.
 *
 * @module
 */
import diagnostics from "node:diagnostics_channel";
import type { CallTraceContext } from "@realm-ai/ws-client";

/** Attribute values as OpenTelemetry takes them. */
export type Attributes = Record<string, string | number | boolean>;

/** What the recipe uses of an OpenTelemetry `Span`. */
export interface Span {
  /** Adds attributes. */
  setAttributes(attributes: Attributes): unknown;
  /** Records the error of a failed call. */
  recordException(exception: Error): unknown;
  /** Marks the span failed. */
  setStatus(status: { code: number; message?: string }): unknown;
  /** Ends the span. */
  end(): void;
}

/** What the recipe uses of an OpenTelemetry `Tracer` (`trace.getTracer(name)`). */
export interface Tracer {
  /** Starts a span. */
  startSpan(name: string, options?: { kind?: number; attributes?: Attributes }): Span;
}

/** What the recipe uses of an OpenTelemetry `Meter` (`metrics.getMeter(name)`). */
export interface Meter {
  /** Makes a histogram. */
  createHistogram(
    name: string,
    options?: { description?: string; unit?: string },
  ): { record(value: number, attributes?: Attributes): void };
}

/** `SpanKind.CLIENT` and `SpanStatusCode.ERROR` of `@opentelemetry/api`: fixed by its API. */
const SPAN_KIND_CLIENT = 2;
const SPAN_STATUS_ERROR = 2;

/** The attributes the GenAI metrics carry, when the call has them. */
const METRIC_ATTRIBUTES = [
  "gen_ai.operation.name",
  "gen_ai.provider.name",
  "gen_ai.request.model",
  "server.address",
  "server.port",
];

/** The context's attributes: its dotted names with a string, number or boolean value. */
function attributesOf(context: CallTraceContext, names?: string[]): Attributes {
  const fields = context as unknown as Record<string, unknown>;
  const attributes: Attributes = {};
  for (const name of names ?? Object.keys(fields)) {
    const value = fields[name];
    const kind = typeof value;
    if (name.includes(".") && (kind === "string" || kind === "number" || kind === "boolean")) {
      attributes[name] = value as string | number | boolean;
    }
  }
  return attributes;
}

/**
 * Subscribes to `realm:call`: a span per call, named `{operation} {model}` (the pipeline's name
 * for a pipeline), kind CLIENT, ended when the call settles (for a stream: at its end, its
 * `break` or its abort), with status ERROR and the `RealmError` code as `error.type` when it
 * fails; and the metrics `gen_ai.client.operation.duration` (s) and `gen_ai.client.token.usage`
 * (by `gen_ai.token.type`). Returns the function that unsubscribes.
 */
export function instrumentRealm({ tracer, meter }: { tracer: Tracer; meter: Meter }): () => void {
  const duration = meter.createHistogram("gen_ai.client.operation.duration", {
    description: "GenAI operation duration",
    unit: "s",
  });
  const usage = meter.createHistogram("gen_ai.client.token.usage", {
    description: "Number of input and output tokens used",
    unit: "{token}",
  });
  const spans = new WeakMap<object, Span>();
  const channel = diagnostics.tracingChannel<unknown, CallTraceContext>("realm:call");
  const handlers = {
    start(context: CallTraceContext) {
      const operation = context["gen_ai.operation.name"];
      const target = context["gen_ai.request.model"] ?? context["realm.pipeline.name"];
      spans.set(
        context,
        tracer.startSpan(target === undefined ? operation : `${operation} ${target}`, {
          kind: SPAN_KIND_CLIENT,
          attributes: attributesOf(context),
        }),
      );
    },
    end() {},
    asyncStart() {},
    error() {},
    asyncEnd(context: CallTraceContext) {
      const span = spans.get(context);
      if (!span) return;
      spans.delete(context);
      span.setAttributes(attributesOf(context));
      const error = context.error;
      if (error !== undefined) {
        if (error instanceof Error) span.recordException(error);
        span.setStatus({
          code: SPAN_STATUS_ERROR,
          message: error instanceof Error ? error.message : String(error),
        });
      }
      span.end();
      const common = attributesOf(context, METRIC_ATTRIBUTES);
      duration.record(Number(context.durationMs) / 1000, {
        ...common,
        ...attributesOf(context, ["error.type"]),
      });
      for (const type of ["input", "output"] as const) {
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
