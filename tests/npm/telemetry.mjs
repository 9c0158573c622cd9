/**
 * Tracing on `node:diagnostics_channel` against the installed package: the client reaches the
 * module at run time (`process.getBuiltinModule`) and publishes each call on the `realm:call`
 * TracingChannel and the sockets' life on `realm:connection`; results and streams carry their
 * request ids and timings; `stream.result` never causes an unhandled rejection.
 *
 * Usage: `node telemetry.mjs` (or `bun telemetry.mjs`) from a project that has the package
 * installed. Prints one line per check and `N passed, N failed`.
 *
 * @module
 */
import { deepStrictEqual, equal, ok } from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import process from "node:process";
import { RealmWebSocketClient } from "@realm-ai/ws-client";
import { startStubServer } from "@realm-ai/ws-client/testing";

const watchdog = setTimeout(() => {
  console.error("telemetry.mjs: still running after 60 s, giving up");
  process.exit(2);
}, 60_000);
watchdog.unref?.();

const bun = globalThis.Bun;
console.log(`# telemetry on ${bun ? `Bun ${bun.version}` : `Node ${process.version}`}`);

const unhandled = [];
process.on("unhandledRejection", (reason) => unhandled.push(reason));

const EVENTS = ["start", "end", "asyncStart", "asyncEnd", "error"];
const calls = [];
const connection = [];
const handlers = Object.fromEntries(
  EVENTS.map((event) => [event, (context) => calls.push({ event, context })]),
);
const onConnection = (message) => connection.push(message);
const channel = diagnostics.tracingChannel("realm:call");
const subscribe = () => {
  channel.subscribe(handlers);
  diagnostics.subscribe("realm:connection", onConnection);
};
const unsubscribe = () => {
  channel.unsubscribe(handlers);
  diagnostics.unsubscribe("realm:connection", onConnection);
};
const eventsOf = (id) =>
  calls.filter((c) => c.context["gen_ai.response.id"] === id).map((c) => c.event);
const contextOf = (id) => calls.find((c) => c.context["gen_ai.response.id"] === id).context;

async function until(check, ms, what) {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const server = await startStubServer({ tokenDelayMs: 1 });
const port = Number(new URL(server.url).port);
const client = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b", timeout: 5000 });
const checks = [];
const check = (name, fn) => checks.push({ name, fn });

check("without a subscriber nothing is published; results still carry ids", async () => {
  await client.connect();
  const result = await client.generate({ prompt: "Hi", max_tokens: 3 });
  equal(result.requestId, "1");
  ok(result.durationMs >= 0);
  equal(calls.length + connection.length, 0);
});

check("realm:call: generate's context with GenAI names, in event order", async () => {
  subscribe();
  const result = await client.generate({ prompt: "What is the capital of France?", top_k: 2 });
  deepStrictEqual(eventsOf(result.requestId), ["start", "end", "asyncStart", "asyncEnd"]);
  const { result: data, durationMs, ...attributes } = contextOf(result.requestId);
  deepStrictEqual(attributes, {
    "gen_ai.operation.name": "text_completion",
    "gen_ai.provider.name": "realm",
    "gen_ai.response.id": result.requestId,
    "realm.tenant_id": client.getTenantId(),
    "gen_ai.request.model": "llama-2-7b",
    "gen_ai.request.top_k": 2,
    "gen_ai.request.stream": false,
    "server.address": "127.0.0.1",
    "server.port": port,
    "realm.sent": true,
    "realm.attempts": 1,
    "gen_ai.usage.input_tokens": 6,
    "gen_ai.usage.output_tokens": result.tokens_generated,
  });
  equal(durationMs, result.durationMs);
  equal(data.text, result.text);
});

check("streams: stream.result, time to first chunk, a break ends the call", async () => {
  const stream = client.generateStream({ prompt: "Tell me a story", max_tokens: 5 });
  let text = "";
  for await (const token of stream) text += token;
  const result = await stream.result;
  equal(result.text, text);
  equal(result.tokens_generated, 5);
  equal(result.requestId, stream.requestId);
  const context = contextOf(result.requestId);
  equal(context["gen_ai.response.time_to_first_chunk"], result.timeToFirstTokenMs / 1000);
  equal(context["gen_ai.usage.output_tokens"], 5);

  const broken = client.generateStream({ prompt: "Hi", max_tokens: 50 });
  for await (const _ of broken) break;
  await until(() => eventsOf(broken.requestId).includes("asyncEnd"), 3000, "the break's end");
  deepStrictEqual(eventsOf(broken.requestId), ["start", "end", "asyncStart", "asyncEnd"]);
  equal(contextOf(broken.requestId)["realm.abandoned"], true);
});

check("errors: error event with error.type, the RealmError code", async () => {
  const error = await client.executePipeline("nope", {}).catch((e) => e);
  equal(error.code, "DISPATCH_ERROR");
  deepStrictEqual(eventsOf(error.requestId), ["start", "end", "error", "asyncStart", "asyncEnd"]);
  equal(contextOf(error.requestId)["error.type"], "DISPATCH_ERROR");
  equal(contextOf(error.requestId)["gen_ai.operation.name"], "invoke_workflow");
  equal(contextOf(error.requestId).error, error);
});

check("stream.result: a failed stream nobody awaits is no unhandled rejection", async () => {
  const failed = client.generateStream({ prompt: "Hi" }, { signal: AbortSignal.abort() });
  const error = await (async () => {
    for await (const _ of failed) { /* fails at once */ }
  })().catch((e) => e);
  equal(error.code, "ABORTED");
  const started = client.generateStream({ prompt: "Hi", max_tokens: 50 });
  void started.result; // sends the call; its break below rejects the result
  await started.cancel();
  await new Promise((resolve) => setTimeout(resolve, 50));
  deepStrictEqual(unhandled, []);
});

check("realm:connection: disconnected and connecting, connected with the server", async () => {
  connection.length = 0;
  await client.disconnect();
  await client.connect();
  const where = { "server.address": "127.0.0.1", "server.port": port };
  const named = (event) => connection.find((m) => m.event === event);
  deepStrictEqual(named("disconnected"), {
    event: "disconnected",
    code: 1000,
    reason: "client disconnect",
    willReconnect: false,
    socket: 0,
    url: `ws://127.0.0.1:${port}`,
    ...where,
  });
  deepStrictEqual(named("connecting"), { event: "connecting", attempt: 0, ...where });
  equal(named("connected").socket, 0);
  equal(named("connected")["server.port"], port);
});

let passed = 0;
let failed = 0;
try {
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
  unsubscribe();
  await client.disconnect();
  await server.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
