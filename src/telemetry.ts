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

/**
 * The `node:diagnostics_channel` TracingChannel on which every call is
 * published: `start` when it is made, `end` once it is handed to a socket (or
 * queued, or failed at once), then `error` if it failed, and `asyncStart` and
 * `asyncEnd` when it has settled (a stream's call when it ends, fails or is
 * left by a `break`). Every event of a call gets the same
 * {@linkcode CallTraceContext}. Published where the runtime has the module
 * (Node 20.16+, Deno 2, Bun), never in browsers; nothing is built until
 * someone subscribes.
 *
 * @example Log each call as it settles
 * ```ts
 * import { CALL_CHANNEL, type CallTraceContext } from "@realm-ai/ws-client";
 * import diagnostics from "node:diagnostics_channel";
 *
 * const asyncEnd = (context: CallTraceContext) =>
 *   console.log(context["gen_ai.response.id"], context["error.type"] ?? "ok", context.durationMs);
 * const handlers = { start() {}, end() {}, asyncStart() {}, error() {}, asyncEnd };
 * diagnostics.tracingChannel<CallTraceContext>(CALL_CHANNEL).subscribe(handlers);
 * diagnostics.tracingChannel<CallTraceContext>(CALL_CHANNEL).unsubscribe(handlers);
 * ```
 */
export const CALL_CHANNEL = "realm:call";

/**
 * The `node:diagnostics_channel` channel on which the sockets' life is
 * published, one {@linkcode ConnectionTraceMessage} per client event.
 *
 * @example
 * ```ts
 * import { CONNECTION_CHANNEL, type ConnectionTraceMessage } from "@realm-ai/ws-client";
 * import diagnostics from "node:diagnostics_channel";
 *
 * const onMessage = (message: unknown) => console.log((message as ConnectionTraceMessage).event);
 * diagnostics.subscribe(CONNECTION_CHANNEL, onMessage);
 * diagnostics.unsubscribe(CONNECTION_CHANNEL, onMessage);
 * ```
 */
export const CONNECTION_CHANNEL = "realm:connection";

/**
 * The context object of a call on {@linkcode CALL_CHANNEL}, the same object
 * for each of the call's events; its keys are OpenTelemetry's GenAI attribute
 * names. The API key is never in it, nor is the prompt. Fields marked "from
 * `asyncStart`" are set when the call has settled.
 *
 * @example
 * ```ts
 * import type { CallTraceContext } from "@realm-ai/ws-client";
 * const failed = (context: CallTraceContext) => context["error.type"] !== undefined;
 * ```
 */
export interface CallTraceContext {
  /** `text_completion` (generate), `invoke_workflow` (pipeline), `realm.health`, `realm.metadata`. */
  "gen_ai.operation.name": string;
  /** Always `realm`. */
  "gen_ai.provider.name": "realm";
  /** The call's id (`requestId`), as the server sees it. */
  "gen_ai.response.id": string;
  /** The tenant the call carries. */
  "realm.tenant_id": string;
  /** generate: the model (always given). */
  "gen_ai.request.model"?: string;
  /** generate: `max_tokens`, when given. */
  "gen_ai.request.max_tokens"?: number;
  /** generate: `temperature`, when given. */
  "gen_ai.request.temperature"?: number;
  /** generate: `top_p`, when given. */
  "gen_ai.request.top_p"?: number;
  /** generate: `top_k`, when given. */
  "gen_ai.request.top_k"?: number;
  /** generate: whether it streams. */
  "gen_ai.request.stream"?: boolean;
  /** A pipeline's name. */
  "realm.pipeline.name"?: string;
  /** From `asyncStart`: the server the call was sent to (the client's `url` when never sent). */
  "server.address"?: string;
  /** From `asyncStart`: that server's port. */
  "server.port"?: number;
  /** From `asyncStart`: whether the server may have seen the call (as `RealmError.sent`). */
  "realm.sent"?: boolean;
  /**
   * From `asyncStart`: how many times the call was written to a socket: 1, or more after a
   * rate-limit retry or a re-send when a socket closed under it; 0 if it never went out.
   */
  "realm.attempts"?: number;
  /** From `asyncStart`: ms from the call to its settling, as on the result. */
  durationMs?: number;
  /** generate: the server's `prompt_tokens`, when reported. */
  "gen_ai.usage.input_tokens"?: number;
  /** generate: `tokens_generated` (for a stream left early: the tokens received). */
  "gen_ai.usage.output_tokens"?: number;
  /** Streamed generate: seconds from the call to its first token. */
  "gen_ai.response.time_to_first_chunk"?: number;
  /** A failed call: the `RealmError` code (`_OTHER` for an error with no code, e.g. an `onToken`'s). */
  "error.type"?: string;
  /** A failed call: the error. */
  error?: unknown;
  /** `true` for a stream left early (`break`, `cancel()`): no error, no result. */
  "realm.abandoned"?: boolean;
  /** The server's answer (its `complete` data). */
  result?: unknown;
}

/**
 * A message on {@linkcode CONNECTION_CHANNEL}: a client event (`statechange`,
 * `connecting`, `connected`, `disconnected`, `reconnecting`, with that
 * event's payload spread in; see `RealmEventMap`), or `gave_up` with
 * `error.type` and `error` when a socket stops reconnecting; plus the server.
 *
 * @example
 * ```ts
 * import type { ConnectionTraceMessage } from "@realm-ai/ws-client";
 * const line = (m: ConnectionTraceMessage) => `${m.event} ${m["server.address"]}:${m["server.port"]}`;
 * ```
 */
export interface ConnectionTraceMessage {
  /** The client event's name, or `gave_up`. */
  event: "statechange" | "connecting" | "connected" | "disconnected" | "reconnecting" | "gave_up";
  /** The server's host. */
  "server.address"?: string;
  /** The server's port. */
  "server.port"?: number;
  /** The event's payload fields. */
  [field: string]: unknown;
}

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
        call: dc.tracingChannel(CALL_CHANNEL),
        connection: dc.channel(CONNECTION_CHANNEL),
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
    context["realm.sent"] = call.reachedServer;
    context["realm.attempts"] = call.attempts;
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
