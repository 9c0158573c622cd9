/**
 * `connect()` and `disconnect()` in any order, over loopback: connecting again after a
 * `disconnect()`, what `disconnect()` leaves behind and settles, a `connect()` cancelled before a
 * socket opens or while a server still handshakes, both called from listeners, a `connect()` joined
 * while pending or made while reconnecting, and a call that waits for `connect()`.
 */
import assert from "node:assert/strict";
import {
  type RealmError,
  type RealmEventMap,
  RealmWebSocketClient,
  type StateChange,
} from "../mod.ts";
import { startStubServer } from "../testing.ts";
import {
  assertEdgesAllowed,
  assertNeverOpenWithoutSocket,
  assertOpensFully,
  callFromListener,
  complete,
  deadUrl,
  delay,
  dropNow,
  failedWith,
  FAST,
  idleStats,
  listenerCases,
  outcome,
  recordEvents,
  redirectableWebSocket,
  rejection,
  sanitize,
  scriptedServer,
  silentServer,
  stubAndClientWithStates,
  until,
  WELCOME,
  withClient,
  within,
  withStub,
} from "./_helpers.ts";

Deno.test({
  name: "connect() after disconnect() starts afresh, never hands back a cancelled promise",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates();
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
  name: "disconnect() leaves nothing behind: calls settle, sockets close, no listeners fire",
  ...sanitize,
  fn: () =>
    withClient({ tokenDelayMs: 5 }, {}, async (client) => {
      const disconnected: RealmEventMap["disconnected"][] = [];
      const onDisconnected = (d: RealmEventMap["disconnected"]) => disconnected.push(d);
      client.on("disconnected", onDisconnected);
      await client.connect();
      const inFlight = rejection(
        client.generate({ prompt: "story", stream: true, max_tokens: 50 }),
        3000,
        "the in-flight stream's rejection on disconnect()",
      );
      await client.disconnect();
      const error = await inFlight;
      assert.equal(error.code, "CONNECTION_CLOSED");
      assert.equal(error.sent, true);
      assert.equal(client.isConnected(), false);
      assert.equal(disconnected.length, 1);
      assert.equal(disconnected[0].willReconnect, false);
      client.off("disconnected", onDisconnected);
      assert.deepEqual(client.stats(), idleStats());
      assert.equal((await rejection(client.health())).code, "NOT_CONNECTED");
      // connect() after disconnect() works again.
      await client.connect();
      assert.equal((await client.health()).status, "healthy");
    }),
});

Deno.test({
  name: "a connect() cancelled by disconnect() before it began announces no connecting",
  ...sanitize,
  fn: async () => {
    const client = new RealmWebSocketClient({ url: deadUrl(), model: "m" });
    const connecting: unknown[] = [];
    client.on("connecting", (payload) => connecting.push(payload));
    const connected = client.connect();
    await within(3000, client.disconnect(), "disconnect()");
    const result = (await outcome(connected, 3000, "connect()")) as { error: RealmError };
    assert.equal(result.error?.code, "ABORTED");
    assert.deepEqual(connecting, []);
    assert.equal(client.state, "idle");
  },
});

Deno.test({
  name: "a connecting listener that calls disconnect() stops connect() before any socket opens",
  ...sanitize,
  fn: async () => {
    let requests = 0;
    const controller = new AbortController();
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, signal: controller.signal, onListen: () => {} },
      () => {
        requests++;
        return new Response("no", { status: 503 });
      },
    );
    try {
      const client = new RealmWebSocketClient({
        ...FAST,
        url: `ws://127.0.0.1:${server.addr.port}`,
        model: "m",
      });
      client.on("connecting", () => void client.disconnect());
      const result = (await outcome(client.connect(), 3000, "connect()")) as { error: RealmError };
      assert.equal(result.error?.code, "ABORTED");
      assert.equal(requests, 0, "no socket was opened");
      assert.equal(client.state, "idle");
    } finally {
      controller.abort();
      await server.finished;
    }
  },
});

Deno.test({
  name:
    "a statechange listener that disconnects on open: connect() resolves, every event of the open is heard, then the close",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({ ...FAST, url: server.url, model: "llama-2-7b" });
    const heard: string[] = [];
    client.on("statechange", ({ to }) => {
      heard.push(`state ${to} (client ${client.state})`);
      if (to === "open") void client.disconnect();
    });
    client.on("connected", () => heard.push(`connected (client ${client.state})`));
    client.on("disconnected", () => heard.push(`disconnected (client ${client.state})`));
    try {
      // The open happened: connect() answers its own step; the listener's disconnect() comes after.
      await within(5000, client.connect(), "connect()");
      assert.deepEqual(heard, [
        "state connecting (client connecting)",
        "state open (client open)",
        "connected (client idle)",
        "disconnected (client idle)",
        "state idle (client idle)",
      ]);
      await until(() => server.connectionCount === 0, 3000, "no socket left on the server");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "connect()/disconnect() from inside listeners do what they say",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({}, { connections: 3 });
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

Deno.test({
  name: "connect() while a connect() started by a statechange listener is pending joins it",
  ...sanitize,
  fn: async () => {
    // Server A answers the handshake and drops the socket 200 ms later, well before B times out;
    // server B never answers the upgrade. So connect() ends "reconnecting" (A retrying, B reported
    // and retried), and a listener of that change restarts the client while the first connect()
    // is settling.
    let opened = 0;
    const a = scriptedServer({
      open: (socket) => {
        opened++;
        socket.send(WELCOME);
        setTimeout(() => socket.readyState === WebSocket.OPEN && socket.close(1011, "bye"), 200);
      },
      frame: () => {},
    });
    const silent = silentServer();
    const client = new RealmWebSocketClient({
      ...FAST,
      url: [a.url, silent.url],
      model: "m",
      connectTimeout: 1000,
      reconnectInterval: 60_000,
      maxReconnectInterval: 60_000,
    });
    let restarted: Promise<void> | undefined;
    const restart = ({ to }: { to: string }) => {
      if (to !== "reconnecting") return;
      client.off("statechange", restart);
      void client.disconnect();
      restarted = client.connect();
    };
    client.on("statechange", restart);
    try {
      const first = await outcome(client.connect(), 5000, "first connect()");
      assert.deepEqual(first, { value: undefined });
      assert.ok(restarted, "the listener ran");
      assert.equal(client.state, "connecting");
      const again = client.connect();
      const [second, joined] = await Promise.all([
        outcome(restarted, 5000, "the restarted connect()"),
        outcome(again, 5000, "connect() while it is pending"),
      ]);
      assert.deepEqual(second, { value: undefined });
      assert.deepEqual(joined, { value: undefined });
      assert.equal(opened, 2, "one socket to A for each run, none more");
    } finally {
      await within(5000, client.disconnect(), "disconnect()");
      await silent.close();
      await a.close();
    }
  },
});

Deno.test({
  name: "a server still handshaking when connect() is cancelled is not reported",
  ...sanitize,
  fn: () =>
    withStub(async (server) => {
      const silent = silentServer();
      const client = new RealmWebSocketClient({
        ...FAST,
        url: [server.url, silent.url],
        model: "m",
        connectTimeout: 5000,
      });
      const errors: RealmError[] = [];
      client.on("error", (error) => errors.push(error));
      try {
        const connected = client.connect();
        await until(
          () => server.connectionCount === 1 && silent.accepted() === 1,
          3000,
          "both dialled",
        );
        await until(() => client.stats().openConnections === 1, 3000, "one socket open");
        void client.disconnect();
        const result = (await outcome(connected, 3000, "connect()")) as { error: RealmError };
        assert.equal(result.error?.code, "ABORTED");
        await new Promise((resolve) => setTimeout(resolve, 50));
        assert.deepEqual(errors.map((e) => e.message), []);
      } finally {
        await within(5000, client.disconnect(), "disconnect()");
        await silent.close();
      }
    }),
});

Deno.test({
  name: "connect() while reconnecting settles with the attempt's outcome, not the 60 s backoff",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({}, {
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

Deno.test({
  name: "a call waiting for connect() outlives a socket that gave up while another " +
    "was still opening",
  ...sanitize,
  fn: async () => {
    // The first socket opens, takes the call without answering, and drops; its one retry is
    // refused (503). The second socket is greeted only after that, and answers.
    let first: WebSocket | undefined;
    const server = scriptedServer({
      upgrades: 2,
      open(socket) {
        if (first === undefined) {
          first = socket;
          socket.send(WELCOME);
          setTimeout(() => socket.close(1011, "first one down"), 20);
        } else setTimeout(() => socket.readyState === WebSocket.OPEN && socket.send(WELCOME), 300);
      },
      frame(socket, frame) {
        if (socket !== first) {
          complete(socket, frame.id, { status: "healthy", active_connections: 1 });
        }
      },
    });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      connections: 2,
      maxReconnectAttempts: 1,
    });
    const seen = recordEvents(client);
    try {
      const connected = client.connect();
      const health = outcome(client.health(), 5000, "health() sent on the second socket");
      await within(5000, connected, "connect()");
      assert.equal(seen.disconnected.length, 1, "the first socket dropped during connect()");
      assert.equal(seen.error.length, 1, "and gave up after its one retry");
      const result = await health;
      assert.ok("value" in result, `health() failed: ${"error" in result && result.error}`);
      const answer = result.value;
      assert.deepEqual(answer, {
        status: "healthy",
        active_connections: 1,
        requestId: answer.requestId,
      });
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "disconnect() settles calls in flight, queued and waiting out a rate-limit retry",
  ...sanitize,
  fn: async () => {
    const logged: string[] = [];
    await using t = await stubAndClientWithStates(
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

Deno.test({
  name: "connect() from a listener of every event starts or joins a run that opens",
  ...sanitize,
  fn: async (t) => {
    for (const { name, moment, connections } of listenerCases()) {
      await t.step({
        name,
        ...sanitize,
        fn: async () => {
          await using run = await callFromListener(moment, "connect", connections);
          const called = await within(5000, run.called, "the listener's connect()");
          assert.equal(called.error, undefined, `the listener's connect() failed: ${called.error}`);
          if (run.produced) {
            // The run that fired the event is not torn down by the listener's connect().
            assert.deepEqual(await run.produced, { value: undefined });
          }
          await assertOpensFully(run);
          assertNeverOpenWithoutSocket(run.heard);
        },
      });
    }
  },
});

Deno.test({
  name: "disconnect() from a listener of every event leaves no socket, attempt or timer behind",
  ...sanitize,
  fn: async (t) => {
    for (const { name, moment, connections } of listenerCases()) {
      await t.step({
        name,
        ...sanitize,
        fn: async () => {
          await using run = await callFromListener(moment, "disconnect", connections);
          const called = await within(5000, run.called, "the listener's disconnect()");
          assert.equal(called.error, undefined, `disconnect() failed: ${called.error}`);
          assert.equal(called.state, "idle");
          await run.produced;
          await until(() => run.server.connectionCount === 0, 3000, "no socket on the server");
          // An attempt under way was cancelled: nothing opens or is even tried afterwards.
          const made = run.sockets.made;
          const connected = run.seen.connected.length;
          await delay(150);
          assert.equal(run.server.connectionCount, 0, "a socket opened after disconnect()");
          assert.equal(run.sockets.made, made, "a socket was tried after disconnect()");
          assert.equal(run.seen.connected.length, connected);
          assert.equal(run.client.state, "idle");
          assert.deepEqual(run.client.stats(), idleStats(0, run.client.stats().listeners));
          assertNeverOpenWithoutSocket(run.heard);
          // No disconnect() of the test's own: a timer or socket left is the sanitizers' to see.
          run.leaveAsIs = true;
        },
      });
    }
  },
});

Deno.test({
  name: "after the client gave up, connect() from the error or the closed listener opens again",
  ...sanitize,
  fn: async (t) => {
    for (const type of ["error", "statechange"] as const) {
      await t.step({
        name: type === "error" ? "from the error listener" : 'from a statechange to "closed"',
        ...sanitize,
        fn: async () => {
          const server = await startStubServer({ tokenDelayMs: 0 });
          const sockets = redirectableWebSocket();
          const client = new RealmWebSocketClient({
            ...FAST,
            url: server.url,
            model: "llama-2-7b",
            maxReconnectAttempts: 1,
            WebSocket: sockets.WebSocket,
          });
          const seen = recordEvents(client);
          let again: Promise<{ value: unknown } | { error: unknown }> | undefined;
          const callBack = () => {
            if (again) return;
            sockets.redirect = undefined;
            again = outcome(client.connect(), 3000, "connect() from the listener");
          };
          // With one socket, the first error is the give-up.
          if (type === "error") client.on("error", callBack);
          else client.on("statechange", ({ to }) => to === "closed" && callBack());
          try {
            await within(5000, client.connect(), "connect()");
            sockets.redirect = sockets.dead;
            dropNow(server);
            await until(() => again !== undefined, 3000, "the give-up");
            assert.match(seen.error[0].message, /Call connect\(\) to try again/);
            assert.deepEqual(await again, { value: undefined });
            assert.equal(client.state, "open");
            assert.equal(server.connectionCount, 1);
            assert.deepEqual(
              seen.statechange.map((change) => change.to),
              ["connecting", "open", "reconnecting", "closed", "connecting", "open"],
            );
          } finally {
            await client.disconnect();
            await server.close();
          }
        },
      });
    }
  },
});

Deno.test({
  name: "connect() rejects with TIMEOUT when connectTimeout expires, not after the close grace too",
  ...sanitize,
  fn: async () => {
    const silent = silentServer();
    const client = new RealmWebSocketClient({
      url: silent.url,
      model: "m",
      connectTimeout: 300,
      reconnect: false,
    });
    try {
      // 2 s separates a rejection at the timeout (0.3 s) from one after the close grace (2.3 s).
      const error = await rejection(client.connect(), 2000, "connect() at connectTimeout");
      assert.equal(error.code, "TIMEOUT");
      assert.equal(client.state, "closed");
    } finally {
      await within(5000, client.disconnect(), "disconnect()");
      await silent.close();
    }
  },
});

Deno.test({
  name: "disconnect() resolves while the next run retries a server that never answers the upgrade",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const silent = silentServer();
    const client = new RealmWebSocketClient({
      url: [server.url, silent.url],
      model: "m",
      connectTimeout: 200,
      reconnectInterval: 10,
      maxReconnectInterval: 20,
    });
    try {
      await within(3000, client.connect(), "connect()");
      const stopped = client.disconnect();
      const again = client.connect();
      again.catch(() => {});
      // It waits for the sockets it closed (within their close grace), not for those the next
      // run keeps closing as each of its handshakes with the silent server times out.
      await within(4000, stopped, "disconnect() while the next run retries");
      await within(3000, again, "the next connect()");
    } finally {
      await within(5000, client.disconnect(), "the last disconnect()");
      await silent.close();
      await server.close();
    }
  },
});
