/**
 * Tracing on `node:diagnostics_channel` (`realm:call`, `realm:connection`), against the stub server
 * over loopback; and src/telemetry.ts on its own (fresh copies of the module) where a runtime's
 * `node:diagnostics_channel` is missing or Bun's.
 */
import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import { CallRegistry } from "../src/calls.ts";
import { RealmError, RealmWebSocketClient, TokenStream } from "../mod.ts";
import type { StubServer } from "../testing.ts";
import {
  deadUrl,
  FAST,
  rejection,
  sanitize,
  until,
  withClient,
  within,
  withStub,
} from "./_helpers.ts";

type Context = Record<string, unknown>;
const EVENTS = ["start", "end", "asyncStart", "asyncEnd", "error"] as const;

/** Subscribes to both channels; `calls` and `connection` list what was published, in order. */
function subscribe() {
  const calls: { event: string; context: Context; snapshot: Context }[] = [];
  const connection: Context[] = [];
  const channel = diagnostics.tracingChannel<Context, Context>("realm:call");
  const handlers = Object.fromEntries(
    EVENTS.map((event) => [
      event,
      (context: Context) => void calls.push({ event, context, snapshot: { ...context } }),
    ]),
  ) as unknown as Record<(typeof EVENTS)[number], (context: Context) => void>;
  const onConnection = (message: unknown) => connection.push(message as Context);
  channel.subscribe(handlers);
  diagnostics.subscribe("realm:connection", onConnection);
  return {
    calls,
    connection,
    /** The events of the call with this id, by name. */
    of: (id: string | undefined) =>
      calls.filter((c) => c.context["gen_ai.response.id"] === id).map((c) => c.event),
    /** The context of the call with this id (the same object for each of its events). */
    context: (id: string | undefined) =>
      calls.find((c) => c.context["gen_ai.response.id"] === id)!.context,
    [Symbol.dispose]() {
      channel.unsubscribe(handlers);
      diagnostics.unsubscribe("realm:connection", onConnection);
    },
  };
}

const portOf = (server: StubServer) => Number(new URL(server.url).port);

Deno.test("realm:call: generate publishes start, end, asyncStart, asyncEnd with GenAI attributes", async () => {
  using traces = subscribe();
  const apiKey = "sk-secret-telemetry";
  await withClient({ apiKeys: { [apiKey]: "acme" } }, { apiKey }, async (client, server) => {
    await client.connect();
    const result = await client.generate({
      prompt: "What is the capital of France?",
      max_tokens: 20,
      temperature: 0.2,
      top_p: 0.5,
      top_k: 3,
    });
    assert.deepEqual(traces.of(result.requestId), ["start", "end", "asyncStart", "asyncEnd"]);
    const started = traces.calls.find((c) => c.event === "start")!.snapshot;
    assert.deepEqual(started, {
      "gen_ai.operation.name": "text_completion",
      "gen_ai.provider.name": "realm",
      "gen_ai.response.id": "1",
      "realm.tenant_id": "acme",
      "gen_ai.request.model": "llama-2-7b",
      "gen_ai.request.max_tokens": 20,
      "gen_ai.request.temperature": 0.2,
      "gen_ai.request.top_p": 0.5,
      "gen_ai.request.top_k": 3,
      "gen_ai.request.stream": false,
    });
    const { result: data, durationMs, ...ended } = traces.context("1");
    assert.deepEqual(ended, {
      ...started,
      "server.address": "127.0.0.1",
      "server.port": portOf(server),
      "realm.sent": true,
      "realm.attempts": 1,
      "gen_ai.usage.input_tokens": 6,
      "gen_ai.usage.output_tokens": result.tokens_generated,
    });
    assert.equal(durationMs, result.durationMs);
    assert.equal((data as { text: string }).text, result.text);
    for (const { context } of traces.calls) {
      assert.ok(!JSON.stringify(context).includes(apiKey), "the API key is in no context");
    }
  });
});

Deno.test("realm:call: a stream's span data: stream, time to first chunk, output tokens", async () => {
  using traces = subscribe();
  await withClient({}, {}, async (client) => {
    await client.connect();
    const stream = client.generateStream({ prompt: "Hi", max_tokens: 5 });
    assert.equal(traces.calls.length, 0, "nothing before the first read");
    for await (const _ of stream) { /* read all */ }
    const result = await stream.result;
    assert.deepEqual(traces.of("1"), ["start", "end", "asyncStart", "asyncEnd"]);
    const context = traces.context("1");
    assert.equal(context["gen_ai.request.stream"], true);
    assert.equal(context["gen_ai.usage.output_tokens"], 5);
    assert.equal(context["gen_ai.response.time_to_first_chunk"], result.timeToFirstTokenMs! / 1000);
    assert.equal(context.durationMs, result.durationMs);
    assert.equal(context.error, undefined);

    // A break ends the call without an error event: abandoned, with the tokens it got.
    const broken = client.generateStream({ prompt: "Hi", max_tokens: 50 });
    for await (const _ of broken) break;
    await until(() => traces.of("2").includes("asyncEnd"), 3000, "the broken stream's end");
    assert.deepEqual(traces.of("2"), ["start", "end", "asyncStart", "asyncEnd"]);
    assert.equal(traces.context("2")["realm.abandoned"], true);
    assert.equal(traces.context("2")["gen_ai.usage.output_tokens"], 1);
  });
});

Deno.test("realm:call: errors publish error with error.type, the RealmError code", async () => {
  using traces = subscribe();
  await withClient({}, {}, async (client, server) => {
    const early = await rejection(client.health());
    assert.equal(early.code, "NOT_CONNECTED");
    assert.deepEqual(traces.of("1"), ["start", "end", "error", "asyncStart", "asyncEnd"]);
    const notSent = traces.context("1");
    assert.equal(notSent["error.type"], "NOT_CONNECTED");
    assert.equal(notSent["gen_ai.operation.name"], "realm.health");
    assert.equal(notSent["realm.sent"], false);
    assert.equal(notSent["server.port"], portOf(server), "the client's server when never sent");
    assert.equal(notSent.error, early);

    await client.connect();
    const missing = await rejection(client.executePipeline("nope", {}));
    assert.equal(missing.code, "DISPATCH_ERROR");
    const pipeline = traces.context(missing.requestId);
    assert.equal(pipeline["gen_ai.operation.name"], "invoke_workflow");
    assert.equal(pipeline["realm.pipeline.name"], "nope");
    assert.equal(pipeline["error.type"], "DISPATCH_ERROR");
    assert.equal(pipeline["realm.sent"], true);

    const controller = new AbortController();
    const signalled = client.generateStream({ prompt: "Hi", max_tokens: 50 }, {
      signal: controller.signal,
    });
    let n = 0;
    const error = await rejection((async () => {
      for await (const _ of signalled) if (++n === 2) controller.abort();
    })());
    assert.equal(error.code, "ABORTED");
    assert.deepEqual(traces.of(error.requestId), [
      "start",
      "end",
      "error",
      "asyncStart",
      "asyncEnd",
    ]);
    assert.equal(traces.context(error.requestId)["error.type"], "ABORTED");
    assert.equal((await client.metadata()).requestId !== undefined, true);
  });
});

Deno.test("realm:call: a call refused before it is made is not published; the next call is", async () => {
  using traces = subscribe();
  await withClient({}, {}, async (client) => {
    await client.connect();
    const refused = [
      client.generate({ prompt: "p", maxTokens: 5 } as never),
      client.generate({ prompt: "p", temperature: 3 }),
      client.health({ timout: 5 } as never),
      client.executePipeline("rag-pipeline", { n: 1n }),
      (async () => {
        for await (const _ of client.generateStream({ prompt: "p", top_P: 1 } as never)) { /* */ }
      })(),
    ];
    for (const call of refused) {
      const error = await rejection(call);
      assert.equal(error.code, "INVALID_PARAMS");
      assert.equal(error.sent, false);
      assert.equal(error.requestId, undefined, "it never got an id");
    }
    assert.deepEqual(traces.calls, []);
    const { requestId } = await client.health();
    assert.deepEqual(traces.of(requestId), ["start", "end", "asyncStart", "asyncEnd"]);
  });
});

Deno.test("realm:call: nothing is published without a subscriber, and a late one sees only new calls", async () => {
  await withClient({}, {}, async (client) => {
    await client.connect();
    const pending = client.generate({ prompt: "Hi", max_tokens: 3, stream: true });
    using traces = subscribe();
    await pending;
    assert.equal(traces.calls.length, 0, "a call started before the subscriber is not traced");
    await client.health();
    assert.deepEqual(traces.of("2"), ["start", "end", "asyncStart", "asyncEnd"]);
  });
});

Deno.test("realm:connection: connecting, connected, disconnected, reconnecting, gave_up", async () => {
  using traces = subscribe();
  await withClient(
    {},
    { reconnectInterval: 10, maxReconnectAttempts: 1 },
    async (client, server) => {
      await client.connect();
      const port = portOf(server);
      const where = { "server.address": "127.0.0.1", "server.port": port };
      assert.deepEqual(traces.connection.slice(0, 4), [
        { event: "statechange", from: "idle", to: "connecting", ...where },
        { event: "connecting", attempt: 0, ...where },
        { event: "statechange", from: "connecting", to: "open", ...where },
        {
          event: "connected",
          tenantId: client.getTenantId(),
          version: "0.1.0",
          socket: 0,
          url: server.url,
          ...where,
        },
      ]);
      server.faults.rejectConnections(true);
      server.faults.dropAfterFrames(0);
      await until(() => traces.connection.some((m) => m.event === "gave_up"), 5000, "gave_up");
      const events = traces.connection.map((m) => m.event);
      assert.ok(events.includes("disconnected") && events.includes("reconnecting"), `${events}`);
      const gaveUp = traces.connection.find((m) => m.event === "gave_up")!;
      assert.equal(gaveUp["error.type"], (gaveUp.error as RealmError).code);
      assert.ok(gaveUp.error instanceof RealmError);
      assert.equal(gaveUp["server.port"], port);
      server.faults.clear();
    },
  );
});

Deno.test("the clock is read a constant number of times per call, never per token", async () => {
  /** Clock reads while a stream of `count` tokens is made, delivered, read and settled. */
  async function clockReads(count: number): Promise<number> {
    const now = performance.now;
    let reads = 0;
    performance.now = () => (reads++, now.call(performance));
    try {
      const calls = new CallRegistry();
      const stream = new TokenStream((sink) => {
        const call = calls.create({
          fn: "generate",
          paramsJson: "{}",
          stream: true,
          timeout: Infinity,
          idleTimeout: Infinity,
          maxRetries: 0,
          onToken: (token) => sink.token(token),
        }, () => {});
        for (let i = 0; i < count; i++) call.token("word ");
        call.complete({ tokens_generated: count });
        call.result.then((data) => sink.close(data as { tokens_generated: number }));
        return () => call.abandon();
      });
      let read = 0;
      for await (const _ of stream) read++;
      assert.equal(read, count);
      assert.equal((await stream.result).text, "word ".repeat(count));
    } finally {
      performance.now = now;
    }
    return reads;
  }
  const few = await clockReads(3);
  assert.equal(few, 3, "made, first token, settled");
  assert.equal(await clockReads(5000), few);
});

Deno.test("realm:call: a context holds only what the call has: no absent parameter, no usage off generate", async () => {
  using traces = subscribe();
  await withClient({}, {}, async (client, server) => {
    await client.connect();
    const where = { "server.address": "127.0.0.1", "server.port": portOf(server) };
    // Only a prompt: the parameters not given are absent, not `undefined` (an exporter would
    // otherwise get an attribute without a value).
    const streamed = await client.generate({ prompt: "Hi", max_tokens: 3, stream: true });
    const started = {
      "gen_ai.operation.name": "text_completion",
      "gen_ai.provider.name": "realm",
      "gen_ai.response.id": "1",
      "realm.tenant_id": client.getTenantId(),
      "gen_ai.request.model": "llama-2-7b",
      "gen_ai.request.max_tokens": 3,
      "gen_ai.request.stream": true,
    };
    assert.deepEqual(traces.calls.find((c) => c.event === "start")!.snapshot, started);
    // A stream's final frame has no `prompt_tokens`: no input tokens, not `undefined` ones.
    const { result: _, durationMs: __, ...ended } = traces.context("1");
    assert.deepEqual(ended, {
      ...started,
      ...where,
      "realm.sent": true,
      "realm.attempts": 1,
      "gen_ai.response.time_to_first_chunk": streamed.timeToFirstTokenMs! / 1000,
      "gen_ai.usage.output_tokens": 3,
    });

    // health (and metadata, pipelines) carry no request parameters and no token usage.
    const health = await client.health();
    const { result, durationMs, ...healthEnded } = traces.context(health.requestId);
    assert.deepEqual(healthEnded, {
      "gen_ai.operation.name": "realm.health",
      "gen_ai.provider.name": "realm",
      "gen_ai.response.id": "2",
      "realm.tenant_id": client.getTenantId(),
      ...where,
      "realm.sent": true,
      "realm.attempts": 1,
    });
    assert.equal((result as { status: string }).status, health.status);
    assert.ok(typeof durationMs === "number" && durationMs >= 0, `${durationMs}`);
  });
});

Deno.test("realm:call: a call never sent names the client's url, with its scheme's default port", async () => {
  for (
    const [url, address, port] of [
      ["wss://realm.example/ws", "realm.example", 443],
      ["ws://realm.internal", "realm.internal", 80],
      ["ws://[::1]:9", "::1", 9],
    ] as const
  ) {
    // Each client numbers its calls from "1": one subscription per client.
    using traces = subscribe();
    const client = new RealmWebSocketClient({ url, model: "llama-2-7b" });
    try {
      const error = await rejection(client.health());
      assert.equal(error.code, "NOT_CONNECTED");
      const context = traces.context(error.requestId);
      assert.equal(context["server.address"], address, url);
      assert.equal(context["server.port"], port, url);
      assert.equal(context["realm.sent"], false);
    } finally {
      await client.disconnect();
    }
  }
});

Deno.test("realm:call: a callback that throws something with no code is error.type _OTHER", async () => {
  using traces = subscribe();
  await withClient({}, {}, async (client) => {
    await client.connect();
    for (const thrown of [new Error("my callback broke"), null, undefined]) {
      const failure = await within(
        3000,
        client.generate({
          prompt: "Hi",
          max_tokens: 5,
          stream: true,
          onToken: () => {
            throw thrown;
          },
        }).then(() => assert.fail("the call must fail with the callback's error"), (e) => e),
        "the failed call",
      );
      assert.equal(failure, thrown, "the caller gets their own error back");
      const id = traces.calls.at(-1)!.context["gen_ai.response.id"] as string;
      await until(() => traces.of(id).includes("asyncEnd"), 3000, `asyncEnd after ${thrown}`);
      assert.deepEqual(traces.of(id), ["start", "end", "error", "asyncStart", "asyncEnd"]);
      assert.equal(traces.context(id)["error.type"], "_OTHER");
      assert.equal(traces.context(id).error, thrown);
    }
  });
});

type Telemetry = typeof import("../src/telemetry.ts");
type GetBuiltinModule = (id: string) => unknown;
const host = globalThis as unknown as { process: { getBuiltinModule?: GetBuiltinModule } };

/**
 * A fresh copy of src/telemetry.ts (its own, not yet looked-up channels), with
 * `process.getBuiltinModule` replaced by `lookup` until it is restored: the module looks it up at
 * its first event, as a process that has just started would.
 */
async function freshTelemetry(lookup: GetBuiltinModule | undefined) {
  const url = new URL("../src/telemetry.ts", import.meta.url);
  url.search = `fresh=${crypto.randomUUID()}`;
  const telemetry: Telemetry = await import(url.href);
  const original = host.process.getBuiltinModule;
  host.process.getBuiltinModule = lookup;
  return {
    telemetry,
    [Symbol.dispose]() {
      host.process.getBuiltinModule = original;
    },
  };
}

/** Makes `health` calls with ids "1", "2", …, as a client's registry would; none is sent. */
function callMaker() {
  const registry = new CallRegistry();
  return () =>
    registry.create({
      fn: "health",
      paramsJson: "{}",
      stream: false,
      timeout: Infinity,
      idleTimeout: Infinity,
      maxRetries: 0,
    }, () => {});
}

const URL_OF_CLIENT = "ws://127.0.0.1:8080";

Deno.test("telemetry: without node:diagnostics_channel (browsers, Node < 20.16) nothing is published and nothing throws", async () => {
  using traces = subscribe();
  using fresh = await freshTelemetry(undefined);
  const { traceCall, traceConnection } = fresh.telemetry;
  traceConnection("connecting", { attempt: 0 }, URL_OF_CLIENT);
  const call = callMaker()();
  assert.equal(traceCall(call, {}, "t", URL_OF_CLIENT), undefined, "nothing to call at `end`");
  traceConnection("connected", {}, URL_OF_CLIENT);
  call.complete({ status: "healthy" });
  await call.result;
  assert.deepEqual(traces.calls, []);
  assert.deepEqual(traces.connection, []);
});

// "A call costs one check per call" (README): the module lookup is not repeated per event.
Deno.test("telemetry: the channels are looked up once, at the first call or connection event", async (t) => {
  const real = host.process.getBuiltinModule!.bind(host.process);
  let lookups = 0;
  const counted = (id: string) => (lookups++, real(id));

  await t.step("a connection event first", async () => {
    lookups = 0;
    using traces = subscribe();
    using fresh = await freshTelemetry(counted);
    const { traceCall, traceConnection } = fresh.telemetry;
    const madeCall = callMaker();
    traceConnection("connecting", { attempt: 0 }, URL_OF_CLIENT);
    assert.deepEqual(traces.connection, [{
      event: "connecting",
      attempt: 0,
      "server.address": "127.0.0.1",
      "server.port": 8080,
    }]);
    for (let i = 0; i < 3; i++) {
      const call = madeCall();
      traceCall(call, {}, "t", URL_OF_CLIENT)!();
      call.complete({ status: "healthy" });
      await call.result;
      traceConnection("statechange", { from: "connecting", to: "open" }, URL_OF_CLIENT);
    }
    assert.equal(traces.connection.length, 4);
    assert.deepEqual(traces.of("3"), ["start", "end", "asyncStart", "asyncEnd"]);
    assert.equal(traces.calls.length, 12);
    assert.equal(lookups, 1);
  });

  await t.step("a call first (one made before connect())", async () => {
    lookups = 0;
    using traces = subscribe();
    using fresh = await freshTelemetry(counted);
    const { traceCall, traceConnection } = fresh.telemetry;
    const madeCall = callMaker();
    const call = madeCall();
    traceCall(call, {}, "t", URL_OF_CLIENT)!();
    call.complete({ status: "healthy" });
    await call.result;
    assert.deepEqual(traces.of("1"), ["start", "end", "asyncStart", "asyncEnd"]);
    traceConnection("connecting", { attempt: 0 }, URL_OF_CLIENT);
    traceCall(madeCall(), {}, "t", URL_OF_CLIENT);
    assert.equal(traces.connection.length, 1);
    assert.deepEqual(traces.of("2"), ["start"]);
    assert.equal(lookups, 1);
  });
});

Deno.test("telemetry: a TracingChannel without hasSubscribers (Bun's) is asked event by event", async () => {
  // Bun's TracingChannel: the five channels, no `hasSubscribers` of its own.
  const dc = diagnostics as unknown as { channel(name: string): unknown };
  const bunLike = {
    channel: (name: string) => dc.channel(name),
    tracingChannel: (name: string) =>
      Object.fromEntries(EVENTS.map((event) => [event, dc.channel(`tracing:${name}:${event}`)])),
  };
  using fresh = await freshTelemetry(
    (id) => id === "node:diagnostics_channel" ? bunLike : undefined,
  );
  const { traceCall } = fresh.telemetry;
  const madeCall = callMaker();
  assert.equal(traceCall(madeCall(), {}, "t", URL_OF_CLIENT), undefined, "no subscriber");

  // A subscriber to the settled calls alone (a metrics recorder) still gets every call.
  const ended: Context[] = [];
  const onEnd = (context: unknown) => void ended.push(context as Context);
  diagnostics.subscribe("tracing:realm:call:asyncEnd", onEnd);
  try {
    const call = madeCall();
    const end = traceCall(call, {}, "acme", URL_OF_CLIENT);
    assert.equal(typeof end, "function");
    end!();
    call.complete({ status: "healthy" });
    await call.result;
    await until(() => ended.length === 1, 3000, "asyncEnd");
    assert.equal(ended[0]["gen_ai.operation.name"], "realm.health");
    assert.equal(ended[0]["realm.tenant_id"], "acme");
  } finally {
    diagnostics.unsubscribe("tracing:realm:call:asyncEnd", onEnd);
  }
});

Deno.test({
  name: "realm:connection traces connection events, never the client's errors",
  ...sanitize,
  fn: () =>
    withStub(async (server) => {
      const published: { event: string }[] = [];
      const onMessage = (message: unknown) => published.push(message as { event: string });
      diagnostics.subscribe("realm:connection", onMessage);
      const client = new RealmWebSocketClient({
        ...FAST,
        url: [server.url, deadUrl()],
        model: "m",
        reconnect: false,
      });
      const errors: RealmError[] = [];
      client.on("error", (error) => errors.push(error));
      try {
        await within(5000, client.connect(), "connect()");
        assert.equal(errors.length, 1, "the unreachable server is reported");
        const events = published.map((m) => m.event);
        assert.ok(events.includes("connected"), `connected is traced: ${events}`);
        assert.ok(!events.includes("error"), `no error is traced: ${events}`);
      } finally {
        diagnostics.unsubscribe("realm:connection", onMessage);
        await within(5000, client.disconnect(), "disconnect()");
      }
    }),
});
