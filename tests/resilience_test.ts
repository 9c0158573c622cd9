/**
 * Faults injected through the stub server's switches, all over loopback:
 * drops, outages, stalls, revoked keys, garbage frames, rate-limit storms,
 * many reconnect cycles and a soak.
 */
import assert from "node:assert/strict";
import { type RealmClientOptions, RealmError, type RealmEventMap } from "../mod.ts";
import { startStubServer, type StubServer, type StubServerOptions } from "../testing.ts";
import {
  delay,
  dropNow,
  failedWith,
  FAST,
  idleStats,
  outcome,
  rejection,
  sanitize,
  stubAndClient,
  stubAndClientWithStates,
  until,
  within,
} from "./_helpers.ts";

async function setup(
  serverOptions: StubServerOptions = {},
  clientOptions: Partial<RealmClientOptions> = {},
) {
  const fixture = await stubAndClient(serverOptions, { ...FAST, ...clientOptions });
  const events: { type: string; detail: unknown }[] = [];
  for (
    const type of ["connecting", "connected", "disconnected", "reconnecting", "error"] as const
  ) {
    fixture.client.on(type, (detail: unknown) => events.push({ type, detail }));
  }
  return Object.assign(fixture, { events });
}

function count(events: { type: string }[], type: string): number {
  return events.filter((e) => e.type === type).length;
}

function callsOf(server: StubServer, fn: string): number {
  return server.receivedFrames().filter((f) => f.includes(`"function":"${fn}"`)).length;
}

Deno.test({
  name: "a drop mid-stream: the iterator throws CONNECTION_CLOSED at once, the client reconnects",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({ tokenDelayMs: 2 }, { timeout: 20_000 });
    const { server, client, events } = fixture;
    await client.connect();
    server.faults.dropAfterFrames(4);
    const tokens: string[] = [];
    const started = performance.now();
    const error = await rejection(
      (async () => {
        for await (const t of client.generateStream({ prompt: "story", max_tokens: 40 })) {
          tokens.push(t);
        }
      })(),
      3000,
      "the stream's end when its socket drops",
    );
    assert.equal(error.code, "CONNECTION_CLOSED");
    assert.equal(error.sent, true);
    assert.ok(performance.now() - started < 5000, "not by the 20 s timeout");
    assert.equal(tokens.length, 4);
    server.faults.clear();
    await until(() => client.isConnected(), 3000, "reconnect");
    assert.equal((await client.health()).status, "healthy");
    const disconnected = events.find((e) => e.type === "disconnected")!
      .detail as RealmEventMap["disconnected"];
    assert.equal(disconnected.willReconnect, true);
    const reconnecting = events.find((e) => e.type === "reconnecting")!
      .detail as RealmEventMap["reconnecting"];
    assert.equal(reconnecting.attempt, 1);
    assert.ok(reconnecting.delay >= 0 && reconnecting.delay <= 50);
    assert.equal(count(events, "connected"), 2);
  },
});

Deno.test({
  name: "an outage: calls made meanwhile wait, then are answered in order on the same port",
  ...sanitize,
  fn: async () => {
    let { server, client, events } = await setup({}, { reconnectInterval: 20 });
    const port = server.port;
    try {
      await client.connect();
      await server.close();
      await until(() => !client.isConnected(), 2000, "the drop");
      const answered: number[] = [];
      const calls = [0, 1, 2, 3, 4].map((i) =>
        (i % 2 ? client.health() : client.generate({ prompt: `call ${i}` })).then(() => {
          answered.push(i);
        })
      );
      assert.equal(client.stats().queuedCalls, 5);
      await until(() => count(events, "reconnecting") >= 3, 5000, "a few backoff steps");
      server = await startStubServer({ port, tokenDelayMs: 1 });
      await within(5000, Promise.all(calls), "the waiting calls after the outage");
      assert.deepEqual(answered, [0, 1, 2, 3, 4]);
      assert.deepEqual(
        server.receivedFrames().map((f) => JSON.parse(f).id),
        [...server.receivedFrames().map((f) => JSON.parse(f).id)].sort((a, b) => a - b),
      );
    } finally {
      await client.disconnect();
      await server.close();
    }
    void events;
  },
});

Deno.test({
  name: "a server that accepts but never answers: connect() and calls end by their timeouts",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({}, { connectTimeout: 100, reconnect: false });
    const { server, client } = fixture;
    server.faults.stall(true);
    const error = await rejection(client.connect(), 3000, "the 100 ms connectTimeout");
    assert.equal(error.code, "TIMEOUT");
    assert.match(error.message, /connectTimeout/);
    assert.equal(client.isConnected(), false);
    server.faults.stall(false);
    await client.connect();
    server.faults.stall(true);
    const callError = await rejection(
      client.generate({ prompt: "p" }, { timeout: 80 }),
      3000,
      "the 80 ms call timeout",
    );
    assert.equal(callError.code, "TIMEOUT");
    assert.equal(callError.sent, true);
  },
});

Deno.test({
  name: "a key revoked between connections: the reconnect stops with UNAUTHORIZED, no loop",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({ apiKeys: { "key-1": "acme" } }, {
      apiKey: "key-1",
    });
    const { server, client, events } = fixture;
    await client.connect();
    server.revokeApiKey("key-1", "disabled");
    dropNow(server);
    await until(() => count(events, "error") === 1, 3000, "the error event");
    const error = events.find((e) => e.type === "error")!.detail as RealmError;
    assert.equal(error.code, "UNAUTHORIZED");
    assert.match(error.message, /API key is disabled/);
    await delay(100);
    assert.equal(count(events, "reconnecting"), 1, "one try, no retry loop");
    assert.equal(client.isConnected(), false);
    const callError = await rejection(client.health());
    assert.equal(callError.code, "NOT_CONNECTED");
  },
});

Deno.test({
  name: "garbage mid-traffic (bad JSON, unknown ids, binary replies): every real call settles",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({ tokenDelayMs: 1 });
    const { server, client, events } = fixture;
    await client.connect();
    const kinds = ["not-json", "unknown-id", "binary-reply"] as const;
    const noise = setInterval(() => server.faults.sendMalformed(kinds[Math.random() * 3 | 0]), 2);
    const results = await Promise.allSettled([
      ...Array.from({ length: 10 }, () => client.health()),
      ...Array.from(
        { length: 5 },
        () => client.generate({ prompt: "story", stream: true, max_tokens: 10 }),
      ),
    ]);
    clearInterval(noise);
    assert.ok(results.every((r) => r.status === "fulfilled"));
    assert.ok(count(events, "error") > 0);
    for (const e of events.filter((e) => e.type === "error")) {
      assert.equal((e.detail as RealmError).code, "PROTOCOL_ERROR");
    }
  },
});

Deno.test({
  name:
    "a rate-limit storm with maxRetries: every call succeeds or fails typed; waits honour retryAfter",
  ...sanitize,
  fn: async () => {
    const waits: { delayMs: number; retryAfter: number }[] = [];
    await using fixture = await setup(
      { apiKeys: { k: "acme" }, rateLimit: { perMinute: 1200, burst: 3 } },
      {
        apiKey: "k",
        maxRetries: 3,
        logger: (message, data) => {
          if (message.startsWith("rate limited")) waits.push(data as typeof waits[number]);
        },
      },
    );
    const { client } = fixture;
    await client.connect();
    const results = await within(
      10_000,
      Promise.allSettled(Array.from({ length: 12 }, () => client.health())),
      "12 calls with their rate-limit retries",
    );
    let ok = 0;
    for (const r of results) {
      if (r.status === "fulfilled") ok++;
      else assert.equal((r.reason as RealmError).code, "RATE_LIMIT_EXCEEDED");
    }
    assert.ok(ok > 3, `retries made more calls succeed than the burst (${ok})`);
    assert.ok(waits.length > 0);
    for (const w of waits) assert.ok(w.delayMs >= w.retryAfter * 1000 + 100, JSON.stringify(w));
    // Without maxRetries the error reaches the caller unchanged.
    const plain = await Promise.allSettled(
      Array.from({ length: 6 }, () => client.health({ maxRetries: 0 })),
    );
    const limited = plain.filter((r) => r.status === "rejected");
    assert.ok(limited.length > 0);
    for (const r of limited) {
      const e = (r as PromiseRejectedResult).reason as RealmError;
      assert.equal(e.code, "RATE_LIMIT_EXCEEDED");
      const said = /Try again in (\d+) seconds\./.exec(e.message);
      assert.ok(said, e.message);
      assert.equal(e.retryAfter, Number(said[1]), "retryAfter is the message's number");
    }
  },
});

Deno.test({
  name:
    "a drop: the call being served and the calls behind it are re-sent on the new socket, a pipeline being served only when safe to repeat",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({ tokenDelayMs: 2 });
    const { server, client } = fixture;
    await client.connect();
    for (const safeToRepeat of [false, true]) {
      server.faults.stall(true);
      // The pipeline is served first; generate and health wait behind it, never read.
      const pipeline = client.executePipeline("rag", { query: "q" }, { safeToRepeat });
      const generate = client.generate({ prompt: "What is the capital of France?" });
      const health = client.health();
      for (const call of [pipeline, generate, health]) call.catch(() => {});
      const before = [callsOf(server, "pipeline"), callsOf(server, "generate")];
      await until(() => callsOf(server, "generate") > before[1], 2000, "all three sent");
      server.faults.clear();
      dropNow(server);
      assert.equal((await within(3000, generate, "the re-sent generate")).text, "Paris");
      assert.equal((await within(3000, health, "the re-sent health")).status, "healthy");
      const result = await outcome(pipeline, 3000, "the pipeline");
      if (safeToRepeat) {
        // Re-sent: the stub's answer to a pipeline, not the closed connection.
        const error = failedWith(result, "DISPATCH_ERROR");
        assert.equal(callsOf(server, "pipeline"), before[0] + 2);
        assert.equal(error.sent, true);
      } else {
        const error = failedWith(result, "CONNECTION_CLOSED");
        assert.equal(error.sent, true);
        assert.match(error.message, /safeToRepeat/);
        assert.equal(callsOf(server, "pipeline"), before[0] + 1, "never sent twice");
      }
      assert.equal(callsOf(server, "generate"), before[1] + 2, "written twice, run once");
    }
    assert.equal(client.stats().resentCalls, 5);
  },
});

Deno.test({
  name: "the queue of calls waiting for a connection is bounded by maxQueuedCalls",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({}, {
      maxQueuedCalls: 2,
      reconnectInterval: 10_000,
      maxReconnectInterval: 10_000,
    });
    const { server, client } = fixture;
    await client.connect();
    dropNow(server);
    server.faults.rejectConnections(true);
    await until(() => !client.isConnected(), 2000, "the drop");
    const waiting = [client.health(), client.health()];
    const error = await rejection(client.health());
    assert.equal(error.code, "QUEUE_FULL");
    assert.equal(error.sent, false);
    assert.match(error.message, /maxQueuedCalls/);
    await client.disconnect();
    for (const call of waiting) {
      const e = await rejection(call);
      assert.equal(e.code, "CONNECTION_CLOSED");
      assert.equal(e.sent, false);
    }
  },
});

Deno.test({
  name: "connect(): the same promise while connecting; disconnect() cancels it; works again after",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({}, { connectTimeout: 5000 });
    const { server, client } = fixture;
    server.faults.stall(true);
    const first = client.connect();
    assert.equal(client.connect(), first);
    await delay(20);
    await client.disconnect();
    const error = await rejection(first, 3000, "connect() cancelled by disconnect()");
    assert.equal(error.code, "ABORTED");
    server.faults.stall(false);
    await client.connect();
    assert.equal(client.isConnected(), true);
  },
});

Deno.test({
  name: "disconnect() during a reconnect wait cancels it cleanly",
  ...sanitize,
  fn: async () => {
    const { server, client, events } = await setup({}, {
      reconnectInterval: 60_000,
      maxReconnectInterval: 60_000,
    });
    try {
      await client.connect();
      dropNow(server);
      await until(() => count(events, "reconnecting") === 1, 2000, "the reconnect wait");
      const queued = client.health();
      await client.disconnect();
      assert.equal((await rejection(queued, 3000, "the queued call")).code, "CONNECTION_CLOSED");
      assert.equal(count(events, "connecting"), 1, "the wait never ended in an attempt");
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name: "maxReconnectAttempts: the client gives up, says so, and rejects waiting calls",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({}, { maxReconnectAttempts: 3 });
    const { server, client, events } = fixture;
    await client.connect();
    dropNow(server);
    server.faults.rejectConnections(true);
    await until(() => !client.isConnected(), 2000, "the drop");
    const queued = client.health();
    const error = await rejection(queued, 5000, "giving up after 3 reconnect attempts");
    assert.equal(error.code, "CONNECTION_CLOSED");
    assert.match(error.message, /after 3 attempts/);
    assert.equal(count(events, "reconnecting"), 3);
    assert.equal((await rejection(client.health())).code, "NOT_CONNECTED");
    server.faults.clear();
    await client.connect();
    assert.equal((await client.health()).status, "healthy");
    // A fresh connect() starts a fresh count: the next drop reconnects again.
    dropNow(server);
    await until(() => count(events, "connected") === 3, 3000, "a reconnect after connect()");
  },
});

Deno.test({
  name: "a server that accepts and drops at once does not reset the backoff (no tight loop)",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({}, {
      reconnectInterval: 40,
      maxReconnectInterval: 40,
    });
    const { server, client, events } = fixture;
    await client.connect();
    // Every new socket is dropped right after its welcome frame.
    dropNow(server);
    server.faults.dropAfterFrames(1);
    await until(() => count(events, "reconnecting") >= 5, 5000, "five attempts");
    const attempts = events.filter((e) => e.type === "reconnecting")
      .map((e) => (e.detail as RealmEventMap["reconnecting"]).attempt);
    assert.deepEqual(attempts.slice(0, 5), [1, 2, 3, 4, 5]);
  },
});

Deno.test({
  name: "heartbeat: a silent server is detected and the socket replaced",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({}, {
      heartbeatInterval: 30,
      heartbeatTimeout: 50,
    });
    const { server, client, events } = fixture;
    await client.connect();
    await delay(80);
    assert.ok(callsOf(server, "health") >= 1, "heartbeats are health calls");
    assert.equal(count(events, "disconnected"), 0, "answered heartbeats keep the socket");
    server.faults.stall(true);
    await until(() => count(events, "disconnected") === 1, 2000, "the heartbeat timeout");
    const detail = events.find((e) => e.type === "disconnected")!
      .detail as RealmEventMap["disconnected"];
    assert.equal(detail.code, 4000);
    server.faults.stall(false);
    await until(() => count(events, "connected") === 2, 3000, "the reconnect");
    assert.equal((await client.health()).status, "healthy");
  },
});

Deno.test({
  name: "heartbeat never runs while a call is in flight",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({}, {
      heartbeatInterval: 20,
      heartbeatTimeout: 20,
    });
    const { server, client, events } = fixture;
    await client.connect();
    server.faults.stall(true);
    const error = await rejection(
      client.generate({ prompt: "p" }, { timeout: 200 }),
      3000,
      "the 200 ms call timeout",
    );
    assert.equal(error.code, "TIMEOUT");
    assert.equal(count(events, "disconnected"), 0);
    assert.equal(callsOf(server, "health"), 0);
  },
});

Deno.test({
  name: "heartbeats replacing dead sockets never pile up sockets on the server",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({}, {
      heartbeatInterval: 30,
      heartbeatTimeout: 30,
      reconnectInterval: 5,
      maxReconnectInterval: 10,
    });
    let replaced = 0;
    t.client.on("disconnected", ({ reason }) => reason === "heartbeat timeout" && replaced++);
    await t.client.connect();
    let most = 0;
    for (let round = 0; round < 3; round++) {
      t.server.faults.stall(true);
      await until(() => replaced > round, 3000, `heartbeat #${round} noticed`);
      t.server.faults.stall(false);
      await until(() => t.client.state === "open", 3000, "open again");
      most = Math.max(most, t.server.connectionCount);
    }
    await until(() => t.server.connectionCount === 1, 3000, "one socket at the end");
    assert.ok(most <= 2, `the server held ${most} sockets of one client`);
  },
});

Deno.test({
  name: "200 drop-and-reconnect cycles leave no extra timers, listeners, calls or sockets",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({}, {
      reconnectInterval: 0,
      maxReconnectInterval: 0,
    });
    const { server, client, events } = fixture;
    await client.connect();
    for (let cycle = 0; cycle < 200; cycle++) {
      assert.equal((await client.health()).status, "healthy");
      const connectedBefore = count(events, "connected");
      dropNow(server);
      await until(() => count(events, "connected") > connectedBefore, 3000, `cycle ${cycle}`);
    }
    assert.equal(count(events, "disconnected"), 200);
    await until(() => client.isConnected(), 3000, "the last reconnect");
    assert.deepEqual(client.stats(), idleStats(1, 5));
    await until(() => server.connectionCount === 1, 3000, "old sockets closed");
  },
});

Deno.test({
  name: "soak: 1,000 mixed calls under random drops each settle once, streams intact",
  ...sanitize,
  fn: async () => {
    await using fixture = await setup({ tokenDelayMs: 0 }, {
      connections: 2,
      reconnectInterval: 1,
      maxReconnectInterval: 5,
      maxQueuedCalls: 2000,
    });
    const { server, client, events } = fixture;
    await client.connect();
    const prompt = "Tell me a story";
    const reference = (await client.generate({ prompt, max_tokens: 8, stream: true })).text;
    const france = (await client.generate({ prompt: "What is the capital of France?" })).text;
    let stop = false;
    const chaos = (async () => {
      while (!stop) {
        await delay(2 + Math.random() * 6);
        server.faults.dropAfterFrames(Math.floor(Math.random() * 30));
        await delay(2);
        server.faults.clear();
      }
    })();
    const outcomes = new Map<number, number>();
    let succeeded = 0;
    const one = async (i: number) => {
      try {
        switch (i % 4) {
          case 0:
            assert.equal((await client.health()).status, "healthy");
            break;
          case 1:
            assert.equal(
              (await client.generate({ prompt: "What is the capital of France?" })).text,
              france,
            );
            break;
          case 2: {
            let text = "";
            for await (const t of client.generateStream({ prompt, max_tokens: 8 })) text += t;
            assert.equal(text, reference, "no token missing or doubled");
            break;
          }
          default:
            assert.equal(
              (await client.generate({ prompt, max_tokens: 8, stream: true })).text,
              reference,
            );
        }
        succeeded++;
      } catch (error) {
        if (!(error instanceof RealmError)) throw error;
        assert.ok(
          ["CONNECTION_CLOSED", "TIMEOUT", "QUEUE_FULL"].includes(error.code),
          error.code,
        );
      }
      outcomes.set(i, (outcomes.get(i) ?? 0) + 1);
    };
    // 20 users making 50 calls each, so drops land between and during calls.
    await within(
      60_000,
      Promise.all(Array.from({ length: 20 }, async (_, user) => {
        for (let n = 0; n < 50; n++) await one(user * 50 + n);
      })),
      "1,000 calls under drops",
    );
    stop = true;
    await chaos;
    assert.equal(outcomes.size, 1000);
    assert.ok(succeeded >= 500, `most calls succeed despite the drops (${succeeded})`);
    assert.ok(count(events, "disconnected") >= 3, "the soak really saw drops");
    assert.ok([...outcomes.values()].every((n) => n === 1));
    assert.equal(client.stats().pendingCalls, 0);
  },
});
