/**
 * Tracing on `node:diagnostics_channel` where the runtime has it (Node, Deno,
 * Bun): each call on the `realm:call` TracingChannel, the sockets' life on the
 * `realm:connection` channel, with OpenTelemetry's GenAI attribute names. The
 * module is found at run time through `process.getBuiltinModule`, never
 * imported, so no bundler sees it (a browser bundle neither includes nor
 * requests it) and browsers publish nothing. Nothing is built unless someone
 * subscribes.
 *
 * @module
 */

import type { Call } from "./calls.ts";
import type { RealmFunction } from "./protocol.ts";

interface Channel {
  readonly hasSubscribers: boolean;
  publish(message: unknown): void;
}

type TracingChannel = Record<typeof EVENTS[number], Channel> & { hasSubscribers?: boolean };

/** Whether one event of `this` channel has a subscriber: a function made once, not per call (Bun). */
function subscribed(this: TracingChannel, event: typeof EVENTS[number]): boolean {
  return this[event].hasSubscribers;
}

/**
 * A call's events. Node's and Deno's TracingChannel answer `hasSubscribers` for all of them in
 * one read (about 60 ns a call less); Bun's has none, so each is asked.
 */
const EVENTS = ["start", "end", "asyncStart", "asyncEnd", "error"] as const;

/** `gen_ai.operation.name` of a server function: the convention's where one fits. */
function operation(fn: RealmFunction): string {
  return fn === "generate"
    ? "text_completion"
    : fn === "pipeline"
    ? "invoke_workflow"
    : `realm.${fn}`;
}

/** The request parameters reported, by their GenAI names. */
const REQUEST_PARAMS = ["model", "max_tokens", "temperature", "top_p", "top_k", "stream"];

/** The channels once looked up (at the first call or connection event); null without any. */
let channels: { call: TracingChannel; connection: Channel } | null | undefined;

function find(): typeof channels {
  channels = null;
  try {
    const dc = (globalThis as { process?: { getBuiltinModule?(id: string): unknown } }).process
      ?.getBuiltinModule?.("node:diagnostics_channel") as {
        channel(name: string): Channel;
        tracingChannel(name: string): TracingChannel;
      } | undefined;
    if (dc) {
      channels = {
        call: dc.tracingChannel("realm:call"),
        connection: dc.channel("realm:connection"),
      };
    }
  } catch {
    // No diagnostics here: tracing stays off.
  }
  return channels;
}

/** `server.address` and `server.port` of a `ws:`/`wss:` URL. */
function server(url: string): Record<string, unknown> {
  try {
    const { hostname, port, protocol } = new URL(url);
    return {
      "server.address": hostname.replace(/^\[|\]$/g, ""),
      "server.port": Number(port) || (protocol === "wss:" ? 443 : 80),
    };
  } catch {
    return {};
  }
}

/**
 * Publishes a call's `start` on `realm:call` if anyone subscribes, and
 * returns what publishes `end` once it is handed to a socket; `error`,
 * `asyncStart` and `asyncEnd` follow when it settles. Without a subscriber
 * it builds nothing and returns undefined.
 */
export function traceCall(
  call: Call,
  params: Record<string, unknown>,
  tenantId: string,
  url: string,
): (() => void) | undefined {
  const channel = (channels === undefined ? find() : channels)?.call;
  if (
    !channel || !(channel.hasSubscribers ?? EVENTS.some(subscribed, channel))
  ) return;
  const fn = call.spec.fn;
  const context: Record<string, unknown> = {
    "gen_ai.operation.name": operation(fn),
    "gen_ai.provider.name": "realm",
    "gen_ai.response.id": call.id,
    "realm.tenant_id": tenantId,
  };
  if (fn === "generate") {
    for (const name of REQUEST_PARAMS) {
      if (params[name] !== undefined) context[`gen_ai.request.${name}`] = params[name];
    }
  }
  if (fn === "pipeline") context["realm.pipeline.name"] = params.pipeline;
  const ended = (data: unknown, failed?: boolean, error?: unknown) => {
    Object.assign(
      context,
      server((call.connection as { url?: string } | undefined)?.url ?? url),
    );
    context["realm.sent"] = call.sent;
    context.durationMs = call.endedAt - call.startedAt;
    if (call.firstTokenAt) {
      context["gen_ai.response.time_to_first_chunk"] = (call.firstTokenAt - call.startedAt) / 1000;
    }
    if (fn === "generate") {
      const usage = (data ?? {}) as Record<string, unknown>;
      if (typeof usage.prompt_tokens === "number") {
        context["gen_ai.usage.input_tokens"] = usage.prompt_tokens;
      }
      context["gen_ai.usage.output_tokens"] = typeof usage.tokens_generated === "number"
        ? usage.tokens_generated
        : call.tokens;
    }
    if (failed) {
      context.error = error;
      context["error.type"] = (error as { code?: unknown })?.code ?? "_OTHER";
      channel.error.publish(context);
    } else if (call.end === "abandoned") {
      // A `break` out of a stream: no outcome, no error.
      context["realm.abandoned"] = true;
    } else {
      context.result = data;
    }
    channel.asyncStart.publish(context);
    channel.asyncEnd.publish(context);
  };
  channel.start.publish(context);
  call.result.then(ended, (error) => ended(undefined, true, error));
  return () => channel.end.publish(context);
}

/**
 * Publishes a connection event on `realm:connection` if anyone subscribes:
 * `{ event, ...detail, "server.address", "server.port" }`.
 */
export function traceConnection(event: string, detail: object, url: string): void {
  const channel = (channels === undefined ? find() : channels)?.connection;
  if (channel?.hasSubscribers) channel.publish({ event, ...detail, ...server(url) });
}
