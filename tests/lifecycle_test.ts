/**
 * The connection lifecycle: the state machine and its events, `reconnect()`,
 * and every call settled once whatever the order of `connect()`,
 * `disconnect()`, listeners that call back in, odd input and odd servers.
 * Each numbered behaviour of the lifecycle issue has its test here.
 */
import assert from "node:assert/strict";
import { Lifecycle } from "../src/lifecycle.ts";
import {
  type ConnectionState,
  type RealmClientOptions,
  RealmError,
  RealmWebSocketClient,
  STATE_EDGES,
  type StateChange,
} from "../mod.ts";
import { startStubServer, type StubServerOptions } from "../testing.ts";
import {
  delay,
  dropNow,
  failedWith,
  FAST,
  idleStats,
  muteOnFirstHealth,
  outcome,
  recordEvents,
  sanitize,
  scriptedServer,
  stubAndClient,
  until,
  WELCOME,
  within,
} from "./_helpers.ts";

/** Sends a frame from a scripted server: an object as JSON, a string as it is. */
const send = (socket: WebSocket, frame: unknown) =>
  socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));

async function setup(
  serverOptions: StubServerOptions = {},
  clientOptions: Partial<RealmClientOptions> = {},
) {
  const fixture = await stubAndClient(serverOptions, { ...FAST, ...clientOptions });
  const changes: StateChange[] = [];
  fixture.client.on("statechange", (change) => changes.push(change));
  /** The states entered, in order. */
  const path = () => changes.map((c) => c.to);
  return Object.assign(fixture, { changes, path });
}

function assertEdgesAllowed(changes: StateChange[]): void {
  let state: ConnectionState = "idle";
  for (const { from, to } of changes) {
    assert.equal(from, state, `a move from ${from} while the state was ${state}`);
    assert.ok(STATE_EDGES[from].includes(to), `${from} → ${to} is not an allowed edge`);
    state = to;
  }
}

// -- the state machine ----------------------------------------------------------------------------

Deno.test("Lifecycle: only the table's edges, each announced once, runs renewed", () => {
  const seen: string[] = [];
  const life = new Lifecycle(({ from, to }) => seen.push(`${from}>${to}`));
  assert.equal(life.state, "idle");
  const run = life.start();
  assert.equal(life.state, "connecting");
  life.update({ open: 1, retrying: 0 });
  assert.equal(life.state, "open");
  life.started({ open: 1, retrying: 0 });
  life.update({ open: 0, retrying: 1 });
  assert.equal(life.state, "reconnecting");
  life.update({ open: 0, retrying: 0 });
  assert.equal(life.state, "closed");
  assert.notEqual(life.run, run, "giving up ends the run");
  assert.equal(life.running, false);
  life.update({ open: 1, retrying: 0 });
  assert.equal(life.state, "closed", "a closed client moves only on connect()");
  life.start();
  life.stop();
  assert.equal(life.state, "idle");
  assert.deepEqual(seen, [
    "idle>connecting",
    "connecting>open",
    "open>reconnecting",
    "reconnecting>closed",
    "closed>connecting",
    "connecting>idle",
  ]);
  // Every state can reach idle, and idle leads only to connecting.
  for (const state of Object.keys(STATE_EDGES) as ConnectionState[]) {
    if (state !== "idle") assert.ok(STATE_EDGES[state].includes("idle"), state);
  }
  assert.deepEqual(STATE_EDGES.idle, ["connecting"]);
});

Deno.test("Lifecycle: starting, give-ups, fresh run numbers and refused moves", async (t) => {
  const reason = new RealmError("UNAUTHORIZED", "The server refused the API key.");
  await t.step("starting is true only between start() and started()", () => {
    const seen: StateChange[] = [];
    const life = new Lifecycle((change) => seen.push(change));
    assert.equal(life.starting, false);
    life.start();
    assert.equal(life.starting, true);
    // While connect() opens its sockets, none open yet is not a give-up.
    life.update({ open: 0, retrying: 0 });
    assert.equal(life.state, "connecting");
    life.started({ open: 0, retrying: 0 }, reason);
    assert.equal(life.starting, false);
    assert.equal(life.state, "closed");
    assert.deepEqual(seen.at(-1), { from: "connecting", to: "closed", reason });
  });
  await t.step("giveUp() ends the run and the start; it does nothing when not running", () => {
    const seen: StateChange[] = [];
    const life = new Lifecycle((change) => seen.push(change));
    life.giveUp(reason);
    assert.equal(life.state, "idle");
    assert.equal(life.run, 0);
    assert.deepEqual(seen, []);
    const first = life.start();
    life.giveUp(reason);
    assert.equal(life.state, "closed");
    assert.equal(life.starting, false);
    assert.deepEqual(seen.at(-1), { from: "connecting", to: "closed", reason });
    // Work of the given-up run must never look current to the next one.
    const second = life.start();
    assert.ok(second > first, `run ${second} after run ${first}`);
    life.update({ open: 0, retrying: 0 });
    life.started({ open: 0, retrying: 0 });
    const third = life.start();
    assert.ok(third > second + 1, `run ${third} after run ${second} closed`);
  });
  await t.step("a move outside STATE_EDGES throws and changes nothing", () => {
    const seen: StateChange[] = [];
    const life = new Lifecycle((change) => seen.push(change));
    life.start();
    life.started({ open: 1, retrying: 0 });
    assert.throws(() => life.start(), /Realm client bug: state open cannot move to connecting/);
    assert.equal(life.state, "open");
    assert.equal(seen.length, 2);
  });
});

Deno.test({
  name: "state: idle → connecting → open → reconnecting → open → idle, with statechange events",
  ...sanitize,
  fn: async () => {
    await using t = await setup();
    assert.equal(t.client.state, "idle");
    await t.client.connect();
    assert.equal(t.client.state, "open");
    dropNow(t.server);
    // The reconnecting phase can be shorter than a poll: read the recorded moves.
    await until(() => t.path().length === 4, 3000, "reconnecting, then open again");
    await t.client.disconnect();
    assert.equal(t.client.state, "idle");
    assert.deepEqual(t.path(), ["connecting", "open", "reconnecting", "open", "idle"]);
    const drop = t.changes[2];
    assert.equal(drop.reason?.code, "CONNECTION_CLOSED", "the drop says why");
    assertEdgesAllowed(t.changes);
  },
});

Deno.test({
  name: "state: a failed connect() is closed with its reason; connect() from closed starts over",
  ...sanitize,
  fn: async () => {
    await using t = await setup({ apiKeys: { sk_good: "tenant-a" } }, { apiKey: "sk_bad" });
    failedWith(await outcome(t.client.connect(), 3000, "refused key"), "UNAUTHORIZED");
    assert.equal(t.client.state, "closed");
    assert.equal(t.changes.at(-1)?.reason?.code, "UNAUTHORIZED");
    t.server.setApiKey("sk_bad", "tenant-b");
    await within(3000, t.client.connect(), "connect after closed");
    assert.equal(t.client.state, "open");
    assert.equal(t.client.getTenantId(), "tenant-b");
    assert.deepEqual(t.path(), ["connecting", "closed", "connecting", "open"]);
  },
});

Deno.test({
  name: "state: with reconnect off a drop closes the client; queued calls fail at once",
  ...sanitize,
  fn: async () => {
    await using t = await setup({}, { reconnect: false });
    await t.client.connect();
    dropNow(t.server);
    await until(() => t.client.state === "closed", 2000, "closed");
    failedWith(await outcome(t.client.health(), 1000, "health when closed"), "NOT_CONNECTED");
    assert.deepEqual(t.path(), ["connecting", "open", "closed"]);
  },
});

Deno.test({
  name: "state: gave up after maxReconnectAttempts is closed, and the error event says why",
  ...sanitize,
  fn: async () => {
    await using t = await setup({}, { maxReconnectAttempts: 2 });
    const errors: string[] = [];
    t.client.on("error", (error) => errors.push(error.code));
    await t.client.connect();
    t.server.faults.rejectConnections(true);
    dropNow(t.server);
    t.server.faults.rejectConnections(true);
    await until(() => t.client.state === "closed", 3000, "gave up");
    assert.deepEqual(t.path(), ["connecting", "open", "reconnecting", "closed"]);
    assert.match(t.changes.at(-1)!.reason!.message, /after 2 attempts/);
    assert.deepEqual(errors, ["CONNECTION_CLOSED"]);
  },
});

// -- reconnect() -----------------------------------------------------------------------------------

Deno.test({
  name: "reconnect(): drops the sockets and reconnects at once, whatever the backoff",
  ...sanitize,
  fn: async () => {
    await using t = await setup({ tokenDelayMs: 5 }, {
      reconnectInterval: 60_000,
      maxReconnectInterval: 60_000,
      connections: 2,
    });
    await t.client.connect();
    const stream = outcome(
      t.client.generate({ prompt: "story", max_tokens: 200, stream: true }),
      3000,
      "a stream cut by reconnect()",
    );
    await delay(20);
    const health = t.client.health();
    await within(2000, t.client.reconnect(), "reconnect() with a 60 s backoff");
    assert.equal(t.client.state, "open");
    const cut = failedWith(await stream, "CONNECTION_CLOSED");
    assert.equal(cut.sent, true);
    assert.equal((await within(2000, health, "health resent")).status, "healthy");
    await until(() => t.client.stats().openConnections === 2, 2000, "both sockets back");
    assert.deepEqual(t.path(), ["connecting", "open", "reconnecting", "open"]);
  },
});

Deno.test({
  name: "reconnect(): from idle it connects; from closed it starts over",
  ...sanitize,
  fn: async () => {
    await using t = await setup({}, { reconnect: false });
    await within(2000, t.client.reconnect(), "reconnect from idle");
    assert.equal(t.client.state, "open");
    dropNow(t.server);
    await until(() => t.client.state === "closed", 2000, "closed");
    await within(2000, t.client.reconnect(), "reconnect from closed");
    assert.equal(t.client.state, "open");
  },
});

// -- 1. input that cannot become JSON ----------------------------------------------------------------

Deno.test({
  name: "1. BigInt, cycles and throwing toJSON reject with INVALID_PARAMS before anything is sent",
  ...sanitize,
  fn: async () => {
    await using t = await setup({}, {});
    t.server.faults.stall(true);
    const connecting = t.client.connect();
    const queued = t.client.health();
    const cycle: Record<string, unknown> = { a: 1 };
    cycle.self = cycle;
    const inputs: Record<string, unknown>[] = [
      { n: 10n },
      { deep: [{ n: 1n }] },
      cycle,
      {
        bad: {
          toJSON: () => {
            throw new Error("no JSON today");
          },
        },
      },
    ];
    for (const input of inputs) {
      const error = failedWith(
        await outcome(t.client.executePipeline("rag-pipeline", input), 1000, "bad input"),
        "INVALID_PARAMS",
      );
      assert.match(error.message, /cannot be sent as JSON/);
      assert.equal(error.sent, false);
    }
    assert.equal(t.client.stats().pendingCalls, 1, "only the good call is held");
    t.server.faults.stall(false);
    await within(2000, connecting, "connect() undisturbed");
    assert.equal((await within(2000, queued, "queued call")).status, "healthy");
    assert.equal(t.server.callCount, 1, "only the good call reached the server");
  },
});

// -- 2. the user's own code throws ----------------------------------------------------------------

Deno.test({
  name: "2. throwing listeners and logger: nothing escapes, reconnection goes on",
  ...sanitize,
  fn: async () => {
    const logged: string[] = [];
    await using t = await setup({}, {
      logger: (message) => {
        logged.push(message);
        throw new Error("logger broke");
      },
    });
    for (const type of ["connected", "disconnected", "reconnecting", "statechange"] as const) {
      t.client.on(type, () => {
        throw new Error(`${type} listener broke`);
      });
    }
    t.client.addEventListener("connected", () => {
      throw new Error("addEventListener broke");
    });
    t.client.addEventListener("connected", {
      handleEvent() {
        throw new Error("listener object broke");
      },
    });
    await within(2000, t.client.connect(), "connect with throwing listeners");
    dropNow(t.server);
    await until(() => t.changes.length >= 4 && t.client.state === "open", 3000, "back");
    assert.equal((await within(2000, t.client.health(), "health")).status, "healthy");
    assert.ok(logged.some((line) => line.startsWith('a "connected" listener threw')));
    assert.deepEqual(t.path(), ["connecting", "open", "reconnecting", "open"]);
  },
});

Deno.test({
  name: "2. a throwing onToken rejects its call with that error and the socket stays usable",
  ...sanitize,
  fn: async () => {
    await using t = await setup({ tokenDelayMs: 0 }, {});
    await t.client.connect();
    const thrown = new Error("my onToken broke");
    const result = await outcome(
      t.client.generate({
        prompt: "story",
        max_tokens: 5,
        stream: true,
        onToken: () => {
          throw thrown;
        },
      }),
      2000,
      "throwing onToken",
    );
    assert.ok("error" in result && result.error === thrown);
    assert.equal((await within(2000, t.client.health(), "health after")).status, "healthy");
  },
});

Deno.test({
  name: "2. a WebSocket option whose constructor or send throws fails typed, never escapes",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    try {
      class Refusing extends WebSocket {
        constructor(url: string | URL) {
          super(url);
          this.close();
          throw new Error("no sockets here");
        }
      }
      const refused = new RealmWebSocketClient({
        url: server.url,
        model: "m",
        WebSocket: Refusing,
      });
      const error = failedWith(
        await outcome(refused.connect(), 2000, "throwing ctor"),
        "INVALID_OPTIONS",
      );
      assert.match(error.message, /no sockets here/);
      assert.equal(refused.state, "closed");
      await refused.disconnect();

      const client = new RealmWebSocketClient({
        url: server.url,
        model: "m",
        WebSocket: muteOnFirstHealth().WebSocket,
        ...FAST,
      });
      await client.connect();
      // The first send throws: the socket is dropped, the call goes out on the next one.
      assert.equal(
        (await within(3000, client.health(), "health after a failed send")).status,
        "healthy",
      );
      await client.disconnect();
    } finally {
      await server.close();
    }
  },
});

// -- 3. time options beyond what timers hold --------------------------------------------------------

Deno.test({
  name: "3. Infinity means no limit; delays past 2^31-1 ms are refused, never fire at once",
  ...sanitize,
  fn: async () => {
    for (const name of ["timeout", "streamIdleTimeout", "connectTimeout"] as const) {
      new RealmWebSocketClient({ model: "m", [name]: Infinity });
      assert.throws(
        () => new RealmWebSocketClient({ model: "m", [name]: 2 ** 31 }),
        (e: { code?: string; message: string }) =>
          e.code === "INVALID_OPTIONS" && /up to 2147483647/.test(e.message),
      );
    }
    for (
      const name of [
        "reconnectInterval",
        "maxReconnectInterval",
        "heartbeatInterval",
        "heartbeatTimeout",
      ] as const
    ) {
      assert.throws(
        () => new RealmWebSocketClient({ model: "m", [name]: Infinity }),
        (e: { code?: string }) => e.code === "INVALID_OPTIONS",
        name,
      );
      assert.throws(
        () => new RealmWebSocketClient({ model: "m", [name]: 2 ** 31 }),
        (e: { code?: string }) => e.code === "INVALID_OPTIONS",
        name,
      );
    }
    await using t = await setup({}, { timeout: Infinity });
    await t.client.connect();
    t.server.faults.stall(true);
    const forever = outcome(t.client.health(), 300, "a call with no time limit");
    const tooLong = await outcome(t.client.health({ timeout: 2 ** 31 }), 500, "refused");
    failedWith(tooLong, "INVALID_PARAMS");
    const noLimit = outcome(t.client.health({ timeout: Infinity }), 300, "no limit per call");
    // Neither fires at once: both are still pending when the bounded wait runs out.
    await assert.rejects(forever, /still pending after 300 ms/);
    await assert.rejects(noLimit, /still pending after 300 ms/);
    assert.equal(t.client.stats().pendingCalls, 2);
  },
});

// -- 4. connect() and disconnect() in any order -----------------------------------------------------

Deno.test({
  name: "4. connect() after disconnect() starts afresh, never hands back a cancelled promise",
  ...sanitize,
  fn: async () => {
    await using t = await setup();
    for (let i = 0; i < 5; i++) {
      await t.client.disconnect();
      const first = t.client.connect();
      first.catch(() => {});
      void t.client.disconnect();
      const second = t.client.connect();
      assert.notEqual(second, first);
      await within(2000, second, `connect #${i} after disconnect`);
      failedWith(await outcome(first, 2000, "the cancelled connect"), "ABORTED");
      assert.equal(t.client.state, "open");
    }
    await t.client.disconnect();
    await until(() => t.server.connectionCount === 0, 2000, "no socket left on the server");
  },
});

Deno.test({
  name: "4. connect()/disconnect() from inside listeners do what they say",
  ...sanitize,
  fn: async () => {
    await using t = await setup({}, { connections: 3 });
    let maxOpen = 0;
    const watch = setInterval(() => maxOpen = Math.max(maxOpen, t.server.connectionCount), 1);
    try {
      // disconnect() from the first connected event: connect() rejects ABORTED, nothing stays open.
      const stopOnConnected = () => void t.client.disconnect();
      t.client.on("connected", stopOnConnected);
      failedWith(
        await outcome(t.client.connect(), 2000, "connect stopped in a listener"),
        "ABORTED",
      );
      t.client.off("connected", stopOnConnected);
      assert.equal(t.client.state, "idle");
      await until(() => t.server.connectionCount === 0, 2000, "all closed");

      // connect() from a statechange to closed (a refused key would loop; a drop does not).
      let restarted = 0;
      const restart = ({ to }: StateChange) => {
        if (to === "idle" && restarted++ === 0) void t.client.connect();
      };
      t.client.on("statechange", restart);
      await t.client.connect();
      await t.client.disconnect();
      await until(() => t.client.state === "open", 2000, "reconnected from the idle listener");
      t.client.off("statechange", restart);

      // connect() from disconnected and error listeners while reconnecting.
      t.client.on("disconnected", () => void t.client.connect().catch(() => {}));
      t.client.on("error", () => void t.client.connect().catch(() => {}));
      dropNow(t.server);
      await until(() => t.client.stats().openConnections === 3, 3000, "all three back");
      await delay(50);
      assert.ok(maxOpen <= 3, `the server saw ${maxOpen} sockets at once`);
      await t.client.disconnect();
      await until(() => t.server.connectionCount === 0, 2000, "none left");
      assertEdgesAllowed(t.changes);
    } finally {
      clearInterval(watch);
    }
  },
});

// -- 5. connect() while reconnecting is bounded ---------------------------------------------------------

Deno.test({
  name: "5. connect() while reconnecting settles with the attempt's outcome, not the 60 s backoff",
  ...sanitize,
  fn: async () => {
    await using t = await setup({}, {
      reconnectInterval: 60_000,
      maxReconnectInterval: 60_000,
    });
    await t.client.connect();
    t.server.faults.rejectConnections(true);
    dropNow(t.server);
    t.server.faults.rejectConnections(true);
    await until(() => t.client.state === "reconnecting", 2000, "reconnecting");
    failedWith(
      await outcome(t.client.connect(), 3000, "connect() while the server refuses"),
      "CONNECTION_CLOSED",
    );
    assert.equal(t.client.state, "reconnecting", "the background reconnect goes on");
    t.server.faults.rejectConnections(false);
    await within(3000, t.client.connect(), "connect() once the server is back");
    assert.equal(t.client.state, "open");
  },
});

// -- 6. disconnect() settles everything ------------------------------------------------------------------

Deno.test({
  name: "6. disconnect() settles calls in flight, queued and waiting out a rate-limit retry",
  ...sanitize,
  fn: async () => {
    const logged: string[] = [];
    await using t = await setup(
      { apiKeys: { sk_test: "tenant-a" }, rateLimit: { perMinute: 60, burst: 1 } },
      {
        apiKey: "sk_test",
        maxRetries: 3,
        timeout: 10_000,
        connections: 2,
        logger: (line) => logged.push(line),
      },
    );
    await t.client.connect();
    await t.client.health();
    // Out of tokens: this one waits out its retry on the client's timer.
    const retrying = outcome(t.client.generate({ prompt: "hi" }), 2000, "retrying call");
    await until(() => logged.includes("rate limited; retrying"), 2000, "the retry wait");
    const stream = outcome(
      t.client.generate({ prompt: "story", max_tokens: 100, stream: true }),
      2000,
      "stream",
    );
    assert.equal(t.client.stats().pendingCalls, 2);
    await within(3000, t.client.disconnect(), "disconnect");
    const waited = failedWith(await retrying, "CONNECTION_CLOSED");
    assert.equal(waited.sent, false);
    failedWith(await stream, "CONNECTION_CLOSED");
    assert.deepEqual(t.client.stats(), idleStats(0, 1));
  },
});

// -- 7. a rate limit that cannot be waited out -----------------------------------------------------------

Deno.test({
  name: "7. a retryAfter past the call's timeout fails at once with RATE_LIMIT_EXCEEDED",
  ...sanitize,
  fn: async () => {
    const server = scriptedServer({
      frame: (socket, frame) =>
        send(socket, {
          id: frame.id,
          status: "error",
          error: {
            code: "RATE_LIMIT_EXCEEDED",
            message: "Rate limit exceeded. Try again in 59 seconds.",
          },
        }),
    });
    const client = new RealmWebSocketClient({ url: server.url, model: "m", maxRetries: 5 });
    try {
      await client.connect();
      const started = performance.now();
      const error = failedWith(
        await outcome(client.health({ timeout: 10_000 }), 2000, "limited call"),
        "RATE_LIMIT_EXCEEDED",
      );
      assert.equal(error.retryAfter, 59);
      assert.ok(performance.now() - started < 2000);
      assert.equal(server.received.length, 1, "no retry was sent");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

// -- 8. calls the server will never finish -----------------------------------------------------------------

Deno.test({
  name: "8. an abandoned stream leaves the wire; an id:unknown error goes to the listening call",
  ...sanitize,
  fn: async () => {
    const server = scriptedServer({
      frame: (socket, frame) => {
        const params = frame.params as { prompt?: string };
        if (params.prompt === "silent") {
          // One token, then nothing: the real server can stop a stream this way.
          send(socket, { id: frame.id, status: "streaming", data: { text: "A", index: 0 } });
        } else if (frame.function === "health") {
          send(socket, {
            id: "unknown",
            status: "error",
            error: { code: "INTERNAL_ERROR", message: "Invalid function call: oops" },
          });
        }
      },
    });
    const client = new RealmWebSocketClient({
      url: server.url,
      model: "m",
      streamIdleTimeout: 100,
    });
    const errors: string[] = [];
    client.on("error", (error) => errors.push(error.code));
    try {
      await client.connect();
      const silent = client.generateStream({ prompt: "silent" });
      const tokens: string[] = [];
      const ended = await outcome(
        (async () => {
          for await (const token of silent) tokens.push(token);
        })(),
        2000,
        "idle stream",
      );
      failedWith(ended, "TIMEOUT");
      assert.deepEqual(tokens, ["A"]);
      await until(() => client.stats().callsOnTheWire === 0, 1000, "the dead stream forgotten");
      const health = await outcome(client.health(), 2000, "health answered by id:unknown");
      const error = failedWith(health, "INTERNAL_ERROR");
      assert.match(error.message, /Invalid function call/);
      assert.deepEqual(errors, ["INTERNAL_ERROR"]);
      assert.deepEqual(client.stats(), idleStats(1, 1));
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

// -- 9. token streams read by several next() at once -------------------------------------------------------

Deno.test({
  name: "9. several next() before the first settles settle in order, like an async generator",
  ...sanitize,
  fn: async () => {
    await using t = await setup({ tokenDelayMs: 2 }, {});
    await t.client.connect();
    const stream = t.client.generateStream({ prompt: "Tell", max_tokens: 4 });
    const iterator = stream[Symbol.asyncIterator]();
    const reads = [iterator.next(), iterator.next(), iterator.next(), iterator.next()];
    const extra = iterator.next();
    const results = await within(2000, Promise.all(reads), "four reads");
    assert.deepEqual(results.map((r) => r.value), ["The ", "capital ", "of ", "France "]);
    assert.deepEqual(await within(2000, extra, "the fifth read"), {
      done: true,
      value: undefined,
    });
  },
});

// -- 10. wrongly typed call options and out-of-range integers ------------------------------------------------

Deno.test({
  name: "10. a signal that is no AbortSignal and integers past the server's types are refused",
  ...sanitize,
  fn: async () => {
    await using t = await setup();
    await t.client.connect();
    const fakeSignal = { aborted: false } as unknown as AbortSignal;
    const badSignal = failedWith(
      await outcome(t.client.health({ signal: fakeSignal }), 1000, "fake signal"),
      "INVALID_PARAMS",
    );
    assert.match(badSignal.message, /`signal` must be an AbortSignal/);
    for (const options of [{ max_tokens: 1e300 }, { max_tokens: 2 ** 53 }, { top_k: 1e20 }]) {
      failedWith(
        await outcome(t.client.generate({ prompt: "x", ...options }), 1000, "huge integer"),
        "INVALID_PARAMS",
      );
    }
    failedWith(
      await outcome(t.client.health(null as unknown as undefined), 1000, "null options"),
      "INVALID_PARAMS",
    );
    assert.equal(t.server.callCount, 0);
  },
});

// -- 11. what the server sends is checked ----------------------------------------------------------------------

Deno.test({
  name: "11. a bad tenant id from the server fails the handshake with PROTOCOL_ERROR",
  ...sanitize,
  fn: async () => {
    for (
      const frames of [
        [{ status: "connected", version: "0.1.0", tenant_id: "x" }],
        [{ type: "auth_success", tenant_id: "no spaces allowed" }, WELCOME],
      ]
    ) {
      const server = scriptedServer({
        open: (socket) => frames.forEach((frame) => send(socket, frame)),
        frame: () => {},
      });
      const client = new RealmWebSocketClient({ url: server.url, model: "m" });
      try {
        const error = failedWith(
          await outcome(client.connect(), 2000, "bad tenant"),
          "PROTOCOL_ERROR",
        );
        assert.match(error.message, /tenant id/);
        assert.equal(client.state, "closed");
      } finally {
        await client.disconnect();
        await server.close();
      }
    }
  },
});

Deno.test({
  name: "11. a token whose text is not a string fails its call with PROTOCOL_ERROR",
  ...sanitize,
  fn: async () => {
    const server = scriptedServer({
      frame: (socket, frame) => {
        if (frame.function !== "generate") {
          return send(socket, { id: frame.id, status: "complete", data: { status: "healthy" } });
        }
        send(socket, { id: frame.id, status: "streaming", data: { text: "ok ", index: 0 } });
        send(socket, { id: frame.id, status: "streaming", data: { text: 42, index: 1 } });
        send(socket, { id: frame.id, status: "complete", data: { tokens_generated: 2 } });
      },
    });
    const client = new RealmWebSocketClient({ url: server.url, model: "m" });
    try {
      await client.connect();
      const tokens: string[] = [];
      const result = await outcome(
        client.generate({ prompt: "x", stream: true, onToken: (token) => tokens.push(token) }),
        2000,
        "bad token",
      );
      failedWith(result, "PROTOCOL_ERROR");
      assert.deepEqual(tokens, ["ok "]);
      assert.equal((await within(2000, client.health(), "health after")).status, "healthy");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

// -- 12. a WebSocket that fires error and never close ------------------------------------------------------------

/** Acts like Node 22's WebSocket on a refused connection: `error`, no `close`, readyState 0. */
class ErrorOnly extends EventTarget {
  static created = 0;
  readyState = 0;
  onerror: ((event: Event) => void) | null = null;
  onclose: ((event: Event) => void) | null = null;
  onmessage: ((event: Event) => void) | null = null;
  onopen: ((event: Event) => void) | null = null;
  constructor(_url: string) {
    super();
    ErrorOnly.created++;
    queueMicrotask(() => this.onerror?.(new Event("error")));
  }
  send() {
    throw new Error("not open");
  }
  close() {}
}

Deno.test({
  name: "12. a WebSocket that fires error but never close fails connect() at once",
  ...sanitize,
  fn: async () => {
    ErrorOnly.created = 0;
    const client = new RealmWebSocketClient({
      url: "ws://127.0.0.1:9",
      model: "m",
      connectTimeout: 60_000,
      reconnectInterval: 1,
      maxReconnectInterval: 2,
      maxReconnectAttempts: 20,
      WebSocket: ErrorOnly as unknown as typeof WebSocket,
    });
    const error = failedWith(
      await outcome(client.connect(), 1000, "error-only connect"),
      "CONNECTION_CLOSED",
    );
    assert.match(error.message, /Could not connect to ws:\/\/127.0.0.1:9/);
    assert.equal(client.state, "closed");
    await client.disconnect();
  },
});

Deno.test({
  name: "12. reconnect attempts against an error-only WebSocket do not each wait connectTimeout",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    let failing = false;
    class Flaky extends WebSocket {
      constructor(url: string | URL) {
        if (failing) return new ErrorOnly(String(url)) as unknown as Flaky;
        super(url);
      }
    }
    const client = new RealmWebSocketClient({
      url: server.url,
      model: "m",
      connectTimeout: 60_000,
      reconnectInterval: 1,
      maxReconnectInterval: 2,
      maxReconnectAttempts: 10,
      WebSocket: Flaky,
    });
    try {
      await client.connect();
      failing = true;
      ErrorOnly.created = 0;
      dropNow(server);
      await until(() => client.state === "closed", 2000, "ten quick failures, then give up");
      assert.equal(ErrorOnly.created, 10);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

// -- 13. a peer that never answers the close handshake ----------------------------------------------------------

Deno.test({
  name: "13. heartbeats replacing dead sockets never pile up sockets on the server",
  ...sanitize,
  fn: async () => {
    await using t = await setup({}, {
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
  name: "state: with `reconnect` off, the close of the last socket moves to closed with an " +
    "unsent CONNECTION_CLOSED",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      reconnect: false,
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect()");
      dropNow(server);
      await until(() => client.state === "closed", 3000, "the closed state");
      const change = seen.statechange.at(-1)!;
      assert.equal(change.from, "open");
      assert.equal(change.to, "closed");
      const { code } = seen.disconnected[0];
      assert.equal(change.reason?.code, "CONNECTION_CLOSED");
      assert.equal(
        change.reason?.message,
        `The connection closed (code ${code}) and \`reconnect\` is off. Call connect() again.`,
      );
      assert.equal(change.reason?.sent, false);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});
