/**
 * Calls while they wait in the queue or are re-sent: a socket freed by a late final frame, a
 * timeout or an abort while waiting, listeners and callbacks that stop or restart the client
 * mid-failover, a server that drops every socket, `pipelining: 1` under churn, a signal-like
 * object that throws, a logger that stops the client during a rate-limit retry. Every call settles
 * once, with a typed error that says what happened, and nothing is left behind.
 *
 * @module
 */
import assert from "node:assert/strict";
import { RealmError, RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import {
  complete,
  delay,
  dropNow,
  FAST,
  FRANCE,
  rateLimited,
  rejection,
  sanitize,
  type Script,
  scriptedServer,
  until,
  within,
  withScripted,
} from "./_helpers.ts";

Deno.test({
  name: "pipelining 1: a call queued behind a stream the reader left goes once the stream ends",
  ...sanitize,
  async fn() {
    const server = await startStubServer({ tokenDelayMs: 5, longStreams: true });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      pipelining: 1,
      // The abandoned stream is forgotten after this much quiet; it is never quiet here.
      streamIdleTimeout: 20_000,
    });
    try {
      await within(5000, client.connect(), "connect()");
      const stream = client.generateStream({ prompt: FRANCE, max_tokens: 40 });
      for await (const _ of stream) break;
      // The socket is busy with the stream the server still runs (40 tokens, 5 ms each).
      const health = client.health({ timeout: 4000 });
      const answer = await within(3000, health, "health() behind the left stream");
      assert.equal(answer.status, "healthy");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "pipelining 1: a call queued behind one that timed out goes once the server answers it",
  ...sanitize,
  async fn() {
    // A server that answers each call 300 ms after reading it.
    const answerLate: Script = {
      frame: (socket, frame) => setTimeout(() => complete(socket, frame.id, {}), 300),
    };
    await withScripted(answerLate, { ...FAST, pipelining: 1 }, async (client) => {
      const first = client.health({ timeout: 100 });
      const second = client.health({ timeout: 3000 });
      assert.equal((await rejection(first, 1000)).code, "TIMEOUT");
      // The server answers the first at 300 ms; the second then has the socket to itself.
      await within(2000, second, "the call queued behind the one that timed out");
    });
  },
});

Deno.test({
  name: "a call re-sent after its server died times out saying no server could be reached",
  ...sanitize,
  async fn() {
    // A server that reads the call and never answers, so the call is on the wire when it dies.
    const server = scriptedServer({ frame() {} });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      reconnectInterval: 50,
      maxReconnectInterval: 50,
    });
    try {
      await within(5000, client.connect(), "connect()");
      const call = client.health({ timeout: 800 });
      await until(() => server.received.length === 1, 2000, "the call on the wire");
      await server.close();
      const error = await rejection(call, 3000);
      assert.equal(error.code, "TIMEOUT");
      assert.equal(client.stats().resentCalls, 1, "re-sent once");
      assert.match(error.message, /no server could be reached/i);
    } finally {
      await client.disconnect();
    }
  },
});

Deno.test({
  name: "a server that drops every socket on reading a call: the call is sent 4 times, then fails",
  ...sanitize,
  async fn() {
    const poison: Script = { frame: (socket) => socket.close(1011, "poison") };
    const logs: string[] = [];
    const options = { ...FAST, logger: (message: string) => logs.push(message) };
    await withScripted(poison, options, async (client, received) => {
      const error = await rejection(client.health({ timeout: 4000 }), 5000);
      assert.equal(error.code, "CONNECTION_CLOSED");
      assert.match(error.message, /4 times/);
      assert.equal(received.length, 4, "sent once and re-sent 3 times");
      assert.equal(client.stats().resentCalls, 3);
      // The budget: 20 tokens, a withheld retry once a failure takes it below 10. 3 spent.
      const outcomes: string[] = [];
      for (let i = 0; i < 4; i++) {
        const e = await rejection(client.health({ timeout: 4000 }), 5000);
        outcomes.push(e.message.includes("withheld") ? "withheld" : e.message.slice(0, 30));
      }
      assert.ok(outcomes.includes("withheld"), outcomes.join(" | "));
      const stats = client.stats();
      assert.ok(stats.retriesWithheld >= 1, `retriesWithheld ${stats.retriesWithheld}`);
      assert.equal(stats.pendingCalls, 0);
      assert.equal(stats.queuedCalls, 0);
    });
  },
});

type Settled = { value: unknown } | { error: unknown };
const settle = (p: Promise<unknown>): Promise<Settled> =>
  p.then((value) => ({ value }), (error) => ({ error }));

for (
  const action of [
    "disconnect",
    "reconnect",
    "connect",
    "disconnect+connect",
    "calls",
  ] as const
) {
  Deno.test({
    name: `a "disconnected" listener that calls ${action} while the dead socket's calls are ` +
      "re-sent: every call settles, stats() adds up",
    ...sanitize,
    async fn() {
      const a = await startStubServer({ tokenDelayMs: 0 });
      const b = await startStubServer({ tokenDelayMs: 0 });
      const client = new RealmWebSocketClient({
        ...FAST,
        url: [a.url, b.url],
        model: "llama-2-7b",
        timeout: 3000,
      });
      const fromListener: Promise<Settled>[] = [];
      try {
        await within(5000, client.connect(), "connect()");
        a.faults.stall(true);
        const calls: Promise<Settled>[] = [];
        for (let i = 0; i < 10; i++) calls.push(settle(client.health()));
        await until(() => a.callCount >= 1, 2000, "calls on a");
        let once = false;
        client.on("disconnected", () => {
          if (once) return;
          once = true;
          if (action === "disconnect") fromListener.push(settle(client.disconnect()));
          if (action === "reconnect") fromListener.push(settle(client.reconnect()));
          if (action === "connect") fromListener.push(settle(client.connect()));
          if (action === "disconnect+connect") {
            fromListener.push(settle(client.disconnect()));
            fromListener.push(settle(client.connect()));
          }
          if (action === "calls") {
            for (let i = 0; i < 5; i++) fromListener.push(settle(client.health()));
          }
        });
        a.faults.stall(false);
        a.faults.dropAfterFrames(0);
        const outcomes = await within(8000, Promise.all(calls), "every call settled");
        await within(8000, Promise.all(fromListener), "the listener's promises settled");
        for (const outcome of outcomes) {
          if ("error" in outcome) {
            assert.ok(outcome.error instanceof RealmError, String(outcome.error));
            if (action === "disconnect" || action === "disconnect+connect") {
              assert.equal((outcome.error as RealmError).code, "CONNECTION_CLOSED");
            } else assert.fail(`${action}: a call failed: ${outcome.error}`);
          }
        }
        await until(
          () => client.stats().pendingCalls === 0 && client.stats().queuedCalls === 0,
          3000,
          "nothing pending",
        );
        const stats = client.stats();
        assert.equal(stats.callsOnTheWire, 0);
        assert.ok(stats.resentCalls >= 1, `resentCalls ${stats.resentCalls}`);
      } finally {
        a.faults.clear();
        await client.disconnect();
        const stats = client.stats();
        assert.equal(stats.pendingCalls, 0);
        assert.equal(stats.queuedCalls, 0);
        assert.equal(stats.callsOnTheWire, 0);
        await a.close();
        await b.close();
      }
    },
  });
}

Deno.test({
  name: "an onToken callback or a for await body that calls disconnect(): the stream fails once, " +
    "nothing is left",
  ...sanitize,
  async fn(t) {
    const server = await startStubServer({ tokenDelayMs: 2, longStreams: true });
    try {
      await t.step("onToken", async () => {
        const client = new RealmWebSocketClient({ ...FAST, url: server.url, model: "m" });
        await within(5000, client.connect(), "connect()");
        let stopped: Promise<void> | undefined;
        let tokens = 0;
        const result = client.generate({
          prompt: FRANCE,
          max_tokens: 50,
          stream: true,
          onToken: () => {
            tokens++;
            stopped ??= client.disconnect();
          },
        });
        const other = settle(client.health());
        const error = await rejection(result, 3000);
        assert.equal(error.code, "CONNECTION_CLOSED");
        assert.equal(tokens, 1, "no token after disconnect()");
        await within(3000, stopped!, "disconnect()");
        await within(3000, other, "the other call");
        assert.equal(client.stats().pendingCalls, 0);
      });
      await t.step("for await", async () => {
        const client = new RealmWebSocketClient({ ...FAST, url: server.url, model: "m" });
        await within(5000, client.connect(), "connect()");
        const stream = client.generateStream({ prompt: FRANCE, max_tokens: 50 });
        const seen: string[] = [];
        const read = (async () => {
          for await (const token of stream) {
            seen.push(token);
            if (seen.length === 3) await client.disconnect();
          }
        })();
        const error = await rejection(read, 3000);
        assert.equal(error.code, "CONNECTION_CLOSED");
        assert.equal(error.delivered, true);
        await rejection(stream.result, 1000);
        assert.equal(client.stats().pendingCalls, 0);
      });
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name: "a call aborted, or timing out, while it waits to be re-sent fails once with its own error",
  ...sanitize,
  async fn() {
    const server = scriptedServer({ frame() {} });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      reconnectInterval: 200,
      maxReconnectInterval: 200,
    });
    try {
      await within(5000, client.connect(), "connect()");
      const controller = new AbortController();
      const aborted = client.health({ signal: controller.signal, timeout: 5000 });
      const timed = client.metadata({ timeout: 600 });
      await until(() => server.received.length === 2, 2000, "the calls on the wire");
      await server.close();
      await until(() => client.stats().queuedCalls === 2, 2000, "both queued for a re-send");
      controller.abort(new Error("mine"));
      const abortError = await rejection(aborted, 1000);
      assert.equal(abortError.code, "ABORTED");
      assert.equal(client.stats().queuedCalls, 1);
      const timeoutError = await rejection(timed, 2000);
      assert.equal(timeoutError.code, "TIMEOUT");
      assert.equal(timeoutError.sent, false, "never read by the server");
      const stats = client.stats();
      assert.equal(stats.queuedCalls, 0);
      assert.equal(stats.pendingCalls, 0);
    } finally {
      await client.disconnect();
    }
  },
});

Deno.test({
  name: "pipelining 1, long streams beside short calls, a server dropped twice: every call " +
    "settles once, only streams that delivered fail",
  ...sanitize,
  async fn() {
    const servers = await Promise.all(
      [0, 1, 2].map(() => startStubServer({ tokenDelayMs: 3, longStreams: true })),
    );
    const client = new RealmWebSocketClient({
      ...FAST,
      url: servers.map((s) => s.url),
      model: "llama-2-7b",
      pipelining: 1,
      connections: 3,
      timeout: 10_000,
    });
    const resent: number[] = [];
    try {
      await within(5000, client.connect(), "connect()");
      const calls: { kind: string; outcome: Promise<Settled> }[] = [];
      let settledTwice = 0;
      for (let i = 0; i < 60; i++) {
        const kind = i % 4 === 0 ? "stream" : i % 4 === 1 ? "generate" : "health";
        let count = 0;
        const p = kind === "stream"
          ? client.generate({ prompt: FRANCE, max_tokens: 30, stream: true })
          : kind === "generate"
          ? client.generate({ prompt: FRANCE })
          : client.health();
        const outcome = p.then(
          (value) => {
            if (++count > 1) settledTwice++;
            return { value };
          },
          (error) => {
            if (++count > 1) settledTwice++;
            return { error };
          },
        );
        calls.push({ kind, outcome });
      }
      for (const victim of [servers[0], servers[1]]) {
        await delay(60);
        dropNow(victim);
        resent.push(client.stats().resentCalls);
      }
      const outcomes = await within(20_000, Promise.all(calls.map((c) => c.outcome)), "all");
      assert.equal(settledTwice, 0);
      outcomes.forEach((outcome, i) => {
        if (!("error" in outcome)) return;
        const error = outcome.error as RealmError;
        assert.equal(calls[i].kind, "stream", `${calls[i].kind} failed: ${error.message}`);
        assert.equal(error.code, "CONNECTION_CLOSED");
        assert.equal(error.delivered, true, error.message);
      });
      const stats = client.stats();
      assert.ok(stats.resentCalls >= resent[0], "resentCalls never goes down");
      assert.equal(stats.pendingCalls, 0);
      assert.equal(stats.queuedCalls, 0);
      assert.equal(stats.callsOnTheWire, 0);
    } finally {
      await client.disconnect();
      await Promise.all(servers.map((s) => s.close()));
    }
  },
});

Deno.test({
  name: "a signal-like object whose removeEventListener throws: the call still settles, and " +
    "nothing escapes into the runtime",
  ...sanitize,
  async fn() {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({ ...FAST, url: server.url, model: "llama-2-7b" });
    const escaped: unknown[] = [];
    const onError = (event: ErrorEvent) => {
      escaped.push(event.error);
      event.preventDefault();
    };
    globalThis.addEventListener("error", onError);
    try {
      await within(5000, client.connect(), "connect()");
      // The client takes any object shaped like an AbortSignal (another realm's, a polyfill's).
      const signal = {
        aborted: false,
        addEventListener() {},
        removeEventListener() {
          throw new Error("a polyfill's bug");
        },
      } as unknown as AbortSignal;
      const outcome = await within(3000, settle(client.health({ signal })), "health()");
      assert.ok("value" in outcome || outcome.error instanceof Error);
      await delay(50);
      assert.deepEqual(escaped.map(String), []);
      assert.equal(client.stats().pendingCalls, 0);
    } finally {
      globalThis.removeEventListener("error", onError);
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "a logger that calls disconnect() on a rate-limit retry leaves no timer behind",
  ...sanitize,
  async fn() {
    const server = scriptedServer(rateLimited(0));
    let stopped: Promise<void> | undefined;
    const client: RealmWebSocketClient = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      maxRetries: 1,
      logger: (message) => {
        if (message.startsWith("rate limited")) stopped ??= client.disconnect();
      },
    });
    try {
      await within(5000, client.connect(), "connect()");
      const error = await rejection(client.health(), 3000);
      assert.equal(error.code, "CONNECTION_CLOSED");
      await within(3000, stopped!, "the logger's disconnect()");
      assert.equal(client.state, "idle");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});
