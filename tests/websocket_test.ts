/**
 * The WebSocket implementation: which one the client picks (the option, else the runtime's global,
 * else the registered fallback, the npm package's `ws` on Node 20, else a clear INVALID_OPTIONS),
 * and, over loopback, the client with one that misbehaves.
 */
import assert from "node:assert/strict";
import { resolveWebSocket, setWebSocketFallback } from "../src/websocket.ts";
import { RealmError, RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import {
  deadUrl,
  dropNow,
  failedWith,
  FAST,
  muteOnFirstHealth,
  outcome,
  recordEvents,
  sanitize,
  until,
  within,
  withStub,
} from "./_helpers.ts";

class OptionSocket extends WebSocket {}
class FallbackSocket extends WebSocket {}

/** Runs `fn` as on a runtime without a global WebSocket. */
async function withoutGlobal(fn: () => Promise<void>): Promise<void> {
  const global = globalThis.WebSocket;
  // deno-lint-ignore no-explicit-any
  delete (globalThis as any).WebSocket;
  try {
    await fn();
  } finally {
    globalThis.WebSocket = global;
    setWebSocketFallback(undefined as never);
  }
}

Deno.test("resolveWebSocket: the option first, then the global", async () => {
  assert.deepStrictEqual(await resolveWebSocket(OptionSocket), {
    WebSocket: OptionSocket,
    source: "option",
  });
  assert.deepStrictEqual(await resolveWebSocket(undefined), {
    WebSocket: globalThis.WebSocket,
    source: "global",
  });
});

Deno.test("resolveWebSocket: the fallback only without a global, and an error without either", async () => {
  let loads = 0;
  setWebSocketFallback(() => {
    loads++;
    return Promise.resolve(FallbackSocket);
  });
  assert.equal((await resolveWebSocket(undefined)).source, "global");
  assert.equal(loads, 0, "the fallback is not loaded while a global exists");
  await withoutGlobal(async () => {
    setWebSocketFallback(() => Promise.resolve(FallbackSocket));
    assert.deepStrictEqual(await resolveWebSocket(undefined), {
      WebSocket: FallbackSocket,
      source: "fallback",
    });
    assert.equal((await resolveWebSocket(OptionSocket)).source, "option");
    setWebSocketFallback(undefined as never);
    const error = await resolveWebSocket(undefined).then(() => undefined, (e) => e);
    assert.ok(error instanceof RealmError);
    assert.equal(error.code, "INVALID_OPTIONS");
    assert.match(error.message, /No global WebSocket/);
  });
});

// -- the client with a WebSocket that misbehaves, over loopback -----------------------------------

Deno.test({
  name: "without a WebSocket, connect() fails with INVALID_OPTIONS; the one picked first is kept",
  ...sanitize,
  fn: async () => {
    const global = globalThis as { WebSocket?: unknown };
    const saved = global.WebSocket;
    try {
      delete global.WebSocket;
      const client = new RealmWebSocketClient({
        url: deadUrl(),
        model: "m",
      });
      const error = (await outcome(client.connect(), 3000, "connect()")) as { error: RealmError };
      assert.equal(error.error?.code, "INVALID_OPTIONS");
      assert.match(error.error.message, /o global WebSocket/);
      assert.equal(client.state, "closed");
    } finally {
      global.WebSocket = saved;
    }
    await withStub(async (server) => {
      const client = new RealmWebSocketClient({ ...FAST, url: server.url, model: "m" });
      await within(5000, client.connect(), "first connect()");
      await within(5000, client.disconnect(), "disconnect()");
      // A global that changes after the first connect() is not picked up: the sockets keep one
      // implementation for the client's life.
      let made = 0;
      global.WebSocket = class extends (saved as typeof WebSocket) {
        constructor(url: string | URL, protocols?: string | string[]) {
          made++;
          super(url, protocols);
        }
      };
      try {
        await within(5000, client.connect(), "second connect()");
        assert.equal(made, 0);
        assert.equal(client.getWebSocketSource(), "global");
      } finally {
        global.WebSocket = saved;
        await within(5000, client.disconnect(), "disconnect()");
      }
    });
  },
});

Deno.test({
  name: "a send that throws drops that socket only; the call goes out on another",
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
      // One socket streams, so the health call goes to the other, whose send throws.
      const story = client.generate({ prompt: "Tell me a story", max_tokens: 40, stream: true });
      // A failing assert below is reported as itself, not as these calls' unhandled rejections.
      story.catch(() => {});
      await until(() => client.stats().callsOnTheWire === 1, 3000, "the stream on the wire");
      const health = client.health();
      health.catch(() => {});
      const [dropped] = seen.disconnected;
      assert.deepEqual(seen.disconnected, [
        {
          code: 1006,
          reason: "send failed",
          willReconnect: true,
          socket: dropped.socket,
          url: server.url,
        },
      ]);
      assert.equal((await within(5000, health, "health on the other")).status, "healthy");
      assert.equal((await within(5000, story, "the stream")).tokens_generated, 40);
      assert.equal(mute.sends(), 2, "the health call was sent once more, on the streaming socket");
      await until(() => client.stats().openConnections === 2, 3000, "the dropped socket back");
      assert.equal(seen.disconnected.length, 1, "the streaming socket was never dropped");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "a socket that reports its close inside a throwing send: the call waits, is answered",
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
  name: "a WebSocket option whose constructor or send throws fails typed, never escapes",
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
  name: "a WebSocket that fires error but never close fails connect() at once",
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
  name: "reconnect attempts against an error-only WebSocket do not each wait connectTimeout",
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
