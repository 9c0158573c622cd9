/**
 * Reconnecting over loopback: `reconnect()` (at once whatever the backoff, from idle or closed,
 * joined with a pending `connect()`, reopening a socket that gave up, called from listeners, with
 * `reconnect` off), and a dropped socket's own attempt, announced and logged.
 */
import assert from "node:assert/strict";
import { type RealmError, RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import {
  assertNeverOpenWithoutSocket,
  assertOpensFully,
  attemptUnderWay,
  callFromListener,
  deadUrl,
  delay,
  dropNow,
  ejectedServers,
  failedWith,
  FAST,
  idleStats,
  listenerCases,
  outcome,
  recordEvents,
  sanitize,
  scriptedServer,
  stubAndClientWithStates,
  until,
  WELCOME,
  within,
  withRandom,
} from "./_helpers.ts";

Deno.test({
  name: "reconnect(): drops the sockets and reconnects at once, whatever the backoff",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({ tokenDelayMs: 5 }, {
      reconnectInterval: 60_000,
      maxReconnectInterval: 60_000,
      connections: 2,
    });
    await t.client.connect();
    let tokens = 0;
    const stream = outcome(
      t.client.generate({
        prompt: "story",
        max_tokens: 200,
        stream: true,
        onToken: () => tokens++,
      }),
      3000,
      "a stream cut by reconnect()",
    );
    // A stream that has delivered tokens is cut, never restarted.
    await until(() => tokens > 0, 2000, "the stream's first token");
    const health = t.client.health();
    await within(2000, t.client.reconnect(), "reconnect() with a 60 s backoff");
    assert.equal(t.client.state, "open");
    const cut = failedWith(await stream, "CONNECTION_CLOSED");
    assert.equal(cut.sent, true);
    assert.equal(cut.delivered, true);
    assert.equal((await within(2000, health, "health re-sent")).status, "healthy");
    await until(() => t.client.stats().openConnections === 2, 2000, "both sockets back");
    assert.deepEqual(t.path(), ["connecting", "open", "reconnecting", "open"]);
  },
});

Deno.test({
  name: "reconnect(): from idle it connects; from closed it starts over",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({}, { reconnect: false });
    await within(2000, t.client.reconnect(), "reconnect from idle");
    assert.equal(t.client.state, "open");
    dropNow(t.server);
    await until(() => t.client.state === "closed", 2000, "closed");
    await within(2000, t.client.reconnect(), "reconnect from closed");
    assert.equal(t.client.state, "open");
  },
});

Deno.test({
  name: "a socket's reconnect attempt is announced and logged, and so is its failure",
  ...sanitize,
  fn: () =>
    withRandom(0.5, async () => {
      const server = await startStubServer({ apiKeys: { "key-1": "acme" }, tokenDelayMs: 0 });
      const lines: [string, Record<string, unknown> | undefined][] = [];
      const client = new RealmWebSocketClient({
        url: server.url,
        model: "llama-2-7b",
        apiKey: "key-1",
        ...FAST,
        logger: (message, data) => lines.push([message, data]),
      });
      const seen = recordEvents(client);
      try {
        await within(5000, client.connect(), "connect()");
        // The next handshake is refused: UNAUTHORIZED is fatal, so the one attempt is the last.
        server.revokeApiKey("key-1", "disabled");
        dropNow(server);
        await until(() => seen.error.length === 1, 3000, "the give-up's error event");
        const error = seen.error[0] as RealmError;
        assert.equal(error.code, "UNAUTHORIZED");
        assert.deepEqual(seen.connecting, [
          { attempt: 0 },
          { attempt: 1, socket: 0, url: server.url },
        ]);
        assert.deepEqual(seen.reconnecting, [
          { attempt: 1, delay: 10, socket: 0, url: server.url },
        ]);
        const logged = (message: string) =>
          lines.filter(([m]) => m === message).map(([, data]) => data);
        assert.deepEqual(logged("reconnecting"), [{ attempt: 1, delayMs: 10, socket: 0 }]);
        assert.deepEqual(logged("reconnect failed"), [{ socket: 0, error: error.message }]);
        assert.equal(client.state, "closed");
      } finally {
        await client.disconnect();
        await server.close();
      }
    }),
});

Deno.test({
  name: "reconnect() while connect() runs is that connect(), and opens nothing more",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b", ...FAST });
    const seen = recordEvents(client);
    try {
      const connecting = client.connect();
      assert.equal(client.reconnect(), connecting);
      await within(3000, connecting, "connect()");
      await delay(50);
      assert.equal(server.connectionCount, 1);
      assert.equal(seen.connected.length, 1);
      assert.deepEqual(seen.disconnected, []);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

/**
 * Two servers, one socket each, and a client whose socket 1 (on `b`) gave up reconnecting while
 * socket 0 (on `a`) stays open.
 */
async function oneSocketGaveUp() {
  const a = await startStubServer({ tokenDelayMs: 0 });
  const b = await startStubServer({ tokenDelayMs: 0 });
  const client = new RealmWebSocketClient({
    url: [a.url, b.url],
    model: "llama-2-7b",
    ...FAST,
    maxReconnectAttempts: 1,
  });
  const seen = recordEvents(client);
  await within(5000, client.connect(), "connect()");
  dropNow(b);
  b.faults.rejectConnections(true);
  await until(() => seen.error.length === 1, 3000, "socket 1 giving up");
  assert.match(seen.error[0].message, /^Gave up reconnecting to /);
  b.faults.clear();
  assert.equal(client.state, "open");
  assert.equal(client.stats().openConnections, 1);
  return {
    a,
    b,
    client,
    seen,
    async [Symbol.asyncDispose]() {
      await client.disconnect();
      await a.close();
      await b.close();
    },
  };
}

Deno.test({
  name: "reconnect() reopens at once a socket that gave up, beside the dropped ones",
  ...sanitize,
  fn: () =>
    withRandom(0.5, async () => {
      await using fixture = await oneSocketGaveUp();
      const { a, b, client, seen } = fixture;
      seen.reconnecting.length = 0;
      await within(3000, client.reconnect(), "reconnect()");
      await until(() => client.stats().openConnections === 2, 3000, "both sockets open");
      assert.deepEqual(seen.reconnecting.toSorted((x, y) => x.socket - y.socket), [
        { attempt: 1, delay: 0, socket: 0, url: a.url },
        { attempt: 1, delay: 0, socket: 1, url: b.url },
      ]);
      assert.equal(a.connectionCount, 1);
      assert.equal(b.connectionCount, 1);
    }),
});

Deno.test({
  name: "disconnect() from a listener during reconnect() leaves no socket to reopen",
  ...sanitize,
  fn: async () => {
    await using fixture = await oneSocketGaveUp();
    const { a, b, client, seen } = fixture;
    client.on("disconnected", () => void client.disconnect());
    const connectedBefore = seen.connected.length;
    const reconnecting = client.reconnect();
    assert.equal(client.state, "idle");
    failedWith(await outcome(reconnecting, 2000, "reconnect()"), "ABORTED");
    // A socket reopened now would be open within a few ms (its attempt has no delay).
    await delay(200);
    assert.equal(seen.connected.length, connectedBefore, "no socket opened after disconnect()");
    assert.equal(a.connectionCount + b.connectionCount, 0);
    const down = {
      state: "down",
      openConnections: 0,
      callsOnTheWire: 0,
      resentCalls: 0,
      retriesWithheld: 0,
    };
    assert.deepEqual(client.stats(), {
      ...idleStats(0, 7),
      // reconnect() is an explicit request: it forgave both servers' failures.
      servers: [{ url: a.url, ...down, failures: 0 }, { url: b.url, ...down, failures: 0 }],
    });
    assert.equal(client.state, "idle");
  },
});

Deno.test({
  name: "with reconnect off, only reconnect() reopens; a later drop closes the client",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({
      url: server.url,
      model: "llama-2-7b",
      ...FAST,
      reconnect: false,
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect()");
      await within(3000, client.reconnect(), "reconnect()");
      assert.equal(client.state, "open");
      dropNow(server);
      await until(() => seen.disconnected.length === 2, 3000, "the server's drop");
      assert.deepEqual(
        seen.disconnected.map(({ willReconnect, socket }) => ({
          willReconnect,
          socket,
        })),
        [{ willReconnect: true, socket: 0 }, { willReconnect: false, socket: 0 }],
      );
      assert.deepEqual(seen.disconnected[0], {
        code: 1000,
        reason: "client reconnect",
        willReconnect: true,
        socket: 0,
        url: server.url,
      });
      assert.equal(client.state, "closed");
      await delay(50);
      assert.equal(seen.reconnecting.length, 1, "only reconnect()'s own attempt");
      assert.equal(server.connectionCount, 0);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "reconnect() called by a connected listener resolves only once a new socket is open",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({ ...FAST, url: server.url, model: "llama-2-7b" });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect()");
      let reconnected: Promise<number> | undefined;
      client.on("connected", () => {
        reconnected ??= client.reconnect().then(() => client.stats().openConnections);
      });
      dropNow(server);
      await until(() => reconnected !== undefined, 3000, "the socket to reopen");
      assert.equal(await within(3000, reconnected!, "reconnect()"), 1);
      assert.equal(seen.connected.length, 3, "the first socket, its reopening, and reconnect()'s");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "reconnect() from a listener of every event resolves once a socket is open again",
  ...sanitize,
  fn: async (t) => {
    for (const { name, moment, connections } of listenerCases()) {
      await t.step({
        name,
        ...sanitize,
        fn: async () => {
          await using run = await callFromListener(moment, "reconnect", connections);
          const called = await within(5000, run.called, "the listener's reconnect()");
          assert.equal(
            called.error,
            undefined,
            `reconnect() from the listener failed: ${called.error}`,
          );
          assert.ok(called.openConnections >= 1, "reconnect() resolved with no socket open");
          if (run.produced) assert.deepEqual(await run.produced, { value: undefined });
          await assertOpensFully(run);
          assertNeverOpenWithoutSocket(run.heard);
        },
      });
    }
  },
});

/** A scripted server that greets its sockets only once released, while `held` is set. */
function greetsWhenReleased() {
  const held: WebSocket[] = [];
  let holding = false;
  const server = scriptedServer({
    open: (socket) => holding ? held.push(socket) : socket.send(WELCOME),
    frame: () => {},
  });
  return {
    server,
    hold: () => void (holding = true),
    /** Greets every socket held: their handshakes succeed. */
    release() {
      holding = false;
      for (const socket of held.splice(0)) socket.send(WELCOME);
    },
    /** Closes every socket held before its greeting: their handshakes fail. */
    refuse() {
      holding = false;
      for (const socket of held.splice(0)) socket.close(1011, "not now");
    },
    held: () => held.length,
  };
}

Deno.test({
  name: "reconnect() over a list waits for every socket's attempt: one server down does not " +
    "fail it while another reopens",
  ...sanitize,
  fn: () =>
    withRandom(0.5, async () => {
      const a = await startStubServer({ tokenDelayMs: 0 });
      const b = greetsWhenReleased();
      // A 60 s backoff: only the attempts reconnect() asks for happen during the test.
      const client = new RealmWebSocketClient({
        ...FAST,
        url: [a.url, b.server.url],
        model: "llama-2-7b",
        reconnectInterval: 60_000,
        maxReconnectInterval: 60_000,
        logger: (message, data) => message === "reconnect failed" && failed.push(data!.socket),
      });
      const failed: unknown[] = [];
      const failuresOf = (socket: number) => failed.filter((s) => s === socket).length;
      try {
        await within(5000, client.connect(), "connect()");
        for (const ending of ["b opens", "b fails too"] as const) {
          const failedBefore = failuresOf(0);
          a.faults.rejectConnections(true);
          b.hold();
          let settled = false;
          const reconnected = outcome(client.reconnect(), 5000, `reconnect() (${ending})`);
          void reconnected.then(() => settled = true);
          // a's socket was refused (its next attempt waits out the backoff).
          await until(() => failuresOf(0) === failedBefore + 1, 3000, "a's attempt to fail");
          await until(() => b.held() === 1, 3000, "b's handshake under way");
          await delay(20);
          assert.equal(settled, false, "reconnect() settled before b's attempt had its outcome");
          if (ending === "b opens") {
            b.release();
            assert.deepEqual(await reconnected, { value: undefined });
            assert.equal(client.state, "open");
            assert.equal(client.stats().servers![1].openConnections, 1);
          } else {
            b.refuse();
            failedWith(await reconnected, "CONNECTION_CLOSED");
            assert.equal(client.state, "reconnecting");
          }
        }
      } finally {
        await within(5000, client.disconnect(), "disconnect()");
        await a.close();
        await b.server.close();
      }
    }),
});

Deno.test({
  name: "reconnect() from a disconnected listener with a server of the list down resolves",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: [server.url, deadUrl()],
      model: "llama-2-7b",
    });
    try {
      await within(5000, client.connect(), "connect() with one server of two down");
      let reconnected: Promise<{ value: unknown } | { error: unknown }> | undefined;
      client.on("disconnected", () => {
        reconnected ??= outcome(client.reconnect(), 5000, "reconnect() from the listener");
      });
      dropNow(server);
      await until(() => reconnected !== undefined, 3000, "the drop");
      assert.deepEqual(await reconnected, { value: undefined });
      assert.equal(client.state, "open");
    } finally {
      await within(5000, client.disconnect(), "disconnect()");
      await server.close();
    }
  },
});

Deno.test({
  name: "reconnect() or connect() while reconnecting tries every server now, ejected ones " +
    "included, never after the backoff",
  ...sanitize,
  fn: async (t) => {
    for (const method of ["reconnect", "connect"] as const) {
      await t.step({
        name: `${method}()`,
        ...sanitize,
        fn: () =>
          withRandom(0.5, async () => {
            await using fixture = await ejectedServers();
            const { a, client } = fixture;
            // The backoff and the ejections last 60 s: only trying at once opens within seconds.
            await within(3000, client[method](), `${method}() with both servers ejected`);
            assert.equal(client.state, "open");
            await until(() => a.connectionCount === 3, 3000, "a's three sockets back");
          }),
      });
    }
  },
});

Deno.test({
  name: "reconnect() or connect() asked while an attempt is under way is not lost when it fails",
  ...sanitize,
  fn: async (t) => {
    for (const method of ["reconnect", "connect"] as const) {
      await t.step({
        name: `${method}()`,
        ...sanitize,
        fn: () =>
          withRandom(0.5, async () => {
            await using fixture = await attemptUnderWay();
            const { server, client } = fixture;
            // The server is back; a request comes in the middle of the attempt, which then fails.
            fixture.serverBack();
            const second = outcome(client[method](), 5000, `${method}() mid-attempt`);
            await fixture.failAttempt();
            assert.deepEqual(await second, { value: undefined });
            assert.equal(client.state, "open");
            assert.equal(server.connectionCount, 1);
          }),
      });
    }
  },
});

Deno.test({
  name: 'a drop moves to "reconnecting" with a reason that tells of the reconnect',
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({}, { connections: 2 });
    await t.client.connect();
    dropNow(t.server);
    await until(() => t.path().includes("reconnecting"), 3000, "reconnecting");
    const { reason } = t.changes.find(({ to }) => to === "reconnecting")!;
    assert.ok(reason, "the move has a reason");
    assert.equal(reason.code, "CONNECTION_CLOSED");
    assert.doesNotMatch(reason.message, /`reconnect` is off/);
    assert.match(reason.message, /reconnecting/);
    await until(() => t.client.state === "open", 3000, "open again");
  },
});

Deno.test({
  name: "a call that times out while no server can be reached says so, not to raise its timeout",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({}, {});
    await t.client.connect();
    dropNow(t.server);
    // From now on every attempt is answered with HTTP 503: no server can be reached.
    t.server.faults.rejectConnections(true);
    await until(() => t.client.state === "reconnecting", 3000, "reconnecting");
    const error = failedWith(
      await outcome(t.client.health({ timeout: 300 }), 2000, "a call while no server answers"),
      "TIMEOUT",
    );
    assert.equal(
      error.message,
      `No answer to health (call ${error.requestId}) within 300 ms. No server could be reached ` +
        "to send it (see the `error` events).",
    );
    assert.equal(error.sent, false);
    t.server.faults.rejectConnections(false);
  },
});
