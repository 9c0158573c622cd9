/**
 * What the client façade (src/client.ts, its first half: events and logging of reconnects, a
 * failed send, `reconnect()`, `getModel()`) promises, pinned where the mutation run found no test
 * that would notice a change. Every test runs the client against stub servers over loopback.
 * @module
 */
import assert from "node:assert/strict";
import { type RealmClientOptions, type RealmError, RealmWebSocketClient } from "../mod.ts";
import { startStubServer, type StubServer } from "../testing.ts";
import {
  delay,
  failedWith,
  idleStats,
  muteOnFirstHealth,
  outcome,
  recordEvents,
  sanitize,
  until,
  within,
} from "./_helpers.ts";

const FAST: Partial<RealmClientOptions> = {
  reconnectInterval: 10,
  maxReconnectInterval: 50,
  timeout: 5000,
  connectTimeout: 2000,
};

/** Drops every open connection of `server` now (new ones are not affected). */
function dropNow(server: StubServer): void {
  server.faults.dropAfterFrames(0);
  server.faults.clear();
}

/**
 * Runs `body` with `Math.random()` returning 0.5, so a reconnect delay is exactly its
 * exponential step (`reconnectInterval` for the first attempt).
 */
async function withPinnedRandom(body: () => Promise<void>): Promise<void> {
  const random = Math.random;
  Math.random = () => 0.5;
  try {
    await body();
  } finally {
    Math.random = random;
  }
}

Deno.test({
  name: "client: getModel() is the model option",
  fn: () => {
    assert.equal(new RealmWebSocketClient({ model: "llama-2-7b" }).getModel(), "llama-2-7b");
    assert.equal(
      new RealmWebSocketClient({ url: "ws://127.0.0.1:9", model: "mistral-7b" }).getModel(),
      "mistral-7b",
    );
  },
});

Deno.test({
  name: "client: a socket's reconnect attempt is announced and logged, and so is its failure",
  ...sanitize,
  fn: () =>
    withPinnedRandom(async () => {
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
  name: "client: a send that throws drops that socket only; the call goes out on another",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 5, longStreams: true });
    const mute = muteOnFirstHealth();
    const client = new RealmWebSocketClient({
      url: server.url,
      model: "llama-2-7b",
      connections: 2,
      WebSocket: mute.WebSocket,
      ...FAST,
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect()");
      // Socket 0 streams, so the health call goes to socket 1, whose send throws.
      const story = client.generate({ prompt: "Tell me a story", max_tokens: 40, stream: true });
      // A failing assert below is reported as itself, not as these calls' unhandled rejections.
      story.catch(() => {});
      await until(() => client.stats().callsOnTheWire === 1, 3000, "the stream on the wire");
      const health = client.health();
      health.catch(() => {});
      assert.deepEqual(seen.disconnected, [
        { code: 1006, reason: "send failed", willReconnect: true, socket: 1, url: server.url },
      ]);
      assert.equal((await within(5000, health, "health on socket 0")).status, "healthy");
      assert.equal((await within(5000, story, "the stream on socket 0")).tokens_generated, 40);
      assert.equal(mute.sends(), 2, "the health call was sent once more, on socket 0");
      await until(() => client.stats().openConnections === 2, 3000, "socket 1 back");
      assert.equal(seen.disconnected.length, 1, "socket 0 was never dropped");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name:
    "client: a socket that reports its close inside a throwing send: the call waits, is answered",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    let sends = 0;
    /**
     * A WebSocket that, on the first `health` send, finds its connection dead: it fires its close
     * event at once, then throws (the socket is out of the pool before the send fails).
     */
    class DeadOnSend extends WebSocket {
      override send(data: string) {
        if (JSON.parse(data).function === "health" && ++sends === 1) {
          super.close();
          this.dispatchEvent(new CloseEvent("close", { code: 1006, reason: "gone" }));
          throw new Error("gone");
        }
        super.send(data);
      }
    }
    const client = new RealmWebSocketClient({
      url: server.url,
      model: "llama-2-7b",
      WebSocket: DeadOnSend,
      ...FAST,
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect()");
      const health = await outcome(client.health(), 5000, "health");
      assert.ok("value" in health, `health failed: ${"error" in health && health.error}`);
      assert.equal((health.value as { status: string }).status, "healthy");
      assert.equal(sends, 2, "sent once more, on the new socket");
      assert.deepEqual(seen.disconnected, [
        { code: 1006, reason: "gone", willReconnect: true, socket: 0, url: server.url },
      ]);
      assert.equal(client.stats().pendingCalls, 0);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "client: reconnect() while connect() runs is that connect(), and opens nothing more",
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
  name: "client: reconnect() reopens at once a socket that gave up, beside the dropped ones",
  ...sanitize,
  fn: () =>
    withPinnedRandom(async () => {
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
  name: "client: disconnect() from a listener during reconnect() leaves no socket to reopen",
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
    const down = { state: "down", openConnections: 0, callsOnTheWire: 0 };
    assert.deepEqual(client.stats(), {
      ...idleStats(0, 7),
      servers: [{ url: a.url, ...down, failures: 0 }, { url: b.url, ...down, failures: 1 }],
    });
    assert.equal(client.state, "idle");
  },
});

Deno.test({
  name: "client: with reconnect off, only reconnect() reopens; a later drop closes the client",
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
