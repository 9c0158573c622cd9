/**
 * What the client façade (src/client.ts: `on`/`off`/`onError`, its `EventTarget` methods, the
 * order in which events reach listeners, the browser's network events and the start of a
 * `connect()`) promises, pinned where the mutation run found no test that would notice a change.
 * @module
 */
import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import { type RealmError, RealmWebSocketClient } from "../mod.ts";
import { startStubServer, type StubServer } from "../testing.ts";
import {
  deadUrl,
  FAST,
  outcome,
  sanitize,
  scriptedServer,
  until,
  WELCOME,
  within,
} from "./_helpers.ts";

async function withStub(
  body: (server: StubServer) => Promise<void>,
): Promise<void> {
  const server = await startStubServer({ tokenDelayMs: 0 });
  try {
    await body(server);
  } finally {
    await server.close();
  }
}

Deno.test({
  name: "client: off() of a listener never added, even for a type never listened to, does nothing",
  fn: () => {
    const client = new RealmWebSocketClient({ model: "m" });
    const callback = () => {};
    assert.equal(client.off("connected", callback), client);
    client.on("disconnected", () => {});
    assert.equal(client.off("disconnected", callback), client);
    client.removeEventListener("connected", () => {});
    client.removeEventListener("connected", null);
    client.addEventListener("connected", null);
  },
});

Deno.test({
  name:
    "client: addEventListener keeps EventTarget's rules (once per listener and type, handleEvent objects)",
  fn: () => {
    const client = new RealmWebSocketClient({ model: "m" });
    const seen: string[] = [];
    const listener = (event: Event) => seen.push(event.type);
    client.addEventListener("a", listener);
    client.addEventListener("a", listener);
    client.addEventListener("b", listener);
    client.dispatchEvent(new Event("a"));
    assert.deepEqual(seen, ["a"], "a listener added twice for a type runs once");
    client.removeEventListener("a", listener);
    client.dispatchEvent(new Event("a"));
    client.dispatchEvent(new Event("b"));
    assert.deepEqual(seen, ["a", "b"], "removed from one type, still listening to the other");
    client.removeEventListener("b", listener);
    client.dispatchEvent(new Event("b"));
    assert.deepEqual(seen, ["a", "b"]);

    const handled: string[] = [];
    const object = { handleEvent: (event: Event) => handled.push(event.type) };
    client.addEventListener("c", object);
    client.dispatchEvent(new Event("c"));
    client.removeEventListener("c", object);
    client.dispatchEvent(new Event("c"));
    assert.deepEqual(handled, ["c"]);
  },
});

Deno.test({
  name: "client: a listener that throws is logged with its error, and the next listener still runs",
  fn: () => {
    const lines: [string, Record<string, unknown> | undefined][] = [];
    const client = new RealmWebSocketClient({
      model: "m",
      logger: (message, data) => lines.push([message, data]),
    });
    const after: string[] = [];
    client.addEventListener("connected", () => {
      throw new Error("boom");
    });
    client.addEventListener("connected", (event) => after.push(event.type));
    client.dispatchEvent(new Event("connected"));
    assert.deepEqual(after, ["connected"]);
    assert.deepEqual(lines, [[`a "connected" listener threw; the client went on`, {
      error: "Error: boom",
    }]]);
  },
});

Deno.test({
  name: "client: onError() hears the client's errors, and off('error') removes it",
  ...sanitize,
  fn: () =>
    withStub(async (server) => {
      const down = deadUrl();
      const client = new RealmWebSocketClient({
        ...FAST,
        url: [server.url, down],
        model: "m",
        reconnect: false,
      });
      const errors: RealmError[] = [];
      const onError = (error: RealmError) => errors.push(error);
      client.onError(onError);
      try {
        await within(5000, client.connect(), "connect()");
        assert.equal(errors.length, 1);
        assert.equal(errors[0].code, "CONNECTION_CLOSED");
        assert.match(
          errors[0].message,
          /^The server at ws:\/\/127\.0\.0\.1:\d+ could not be used: /,
        );
        assert.deepEqual(errors[0].details, { url: down });
        client.off("error", onError);
      } finally {
        await within(5000, client.disconnect(), "disconnect()");
      }
    }),
});

Deno.test({
  name: "client: realm:connection traces connection events, never the client's errors",
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

Deno.test({
  name: "client: events fired by a listener's disconnect() reach listeners after the current event",
  ...sanitize,
  fn: () =>
    withStub(async (server) => {
      const client = new RealmWebSocketClient({ ...FAST, url: server.url, model: "m" });
      const log: string[] = [];
      client.on("connected", () => {
        log.push("connected (first listener)");
        void client.disconnect();
      });
      client.on("connected", () => log.push("connected (second listener)"));
      client.on("disconnected", () => log.push("disconnected"));
      client.on("statechange", ({ to }) => log.push(`state ${to}`));
      await outcome(client.connect(), 5000, "connect()");
      await until(() => client.state === "idle" && log.includes("disconnected"), 3000, "idle");
      assert.deepEqual(log, [
        "state connecting",
        "state open",
        "connected (first listener)",
        "connected (second listener)",
        "disconnected",
        "state idle",
      ]);
    }),
});

Deno.test({
  name: "client: during disconnect(), listeners hear of it once the client is idle",
  ...sanitize,
  fn: () =>
    withStub(async (server) => {
      const client = new RealmWebSocketClient({ ...FAST, url: server.url, model: "m" });
      await within(5000, client.connect(), "connect()");
      const states: string[] = [];
      client.on("disconnected", () => states.push(`disconnected in ${client.state}`));
      const closed = client.disconnect();
      assert.deepEqual(states, ["disconnected in idle"]);
      await within(5000, closed, "disconnect()");
    }),
});

/**
 * Stands in for a browser's `window` and `document` (the client watches their network and page
 * events only where both exist) until disposed.
 */
function fakeBrowser() {
  const listeners = new Map<string, () => void>();
  const target = (prefix: string) => ({
    addEventListener: (type: string, listener: () => void) =>
      listeners.set(prefix + type, listener),
    removeEventListener: (type: string, listener: () => void) => {
      if (listeners.get(prefix + type) === listener) listeners.delete(prefix + type);
    },
  });
  const document = { visibilityState: "visible", ...target("document:") };
  (globalThis as { window?: unknown }).window = { ...target("window:"), document };
  return {
    listeners,
    fire(name: string) {
      const listener = listeners.get(name);
      assert.ok(listener, `the client listens to ${name}`);
      listener();
    },
    [Symbol.dispose]() {
      delete (globalThis as { window?: unknown }).window;
    },
  };
}

Deno.test({
  name:
    "client: in a browser, offline drops the sockets, and online or the page coming back reconnects now",
  ...sanitize,
  fn: () =>
    withStub(async (server) => {
      using browser = fakeBrowser();
      // A backoff this long means that only the browser's events can bring the socket back in time.
      const client = new RealmWebSocketClient({
        ...FAST,
        url: server.url,
        model: "m",
        reconnectInterval: 60_000,
        maxReconnectInterval: 60_000,
      });
      const dropped: { code: number; reason: string }[] = [];
      client.on("disconnected", ({ code, reason }) => dropped.push({ code, reason }));
      try {
        await within(5000, client.connect(), "connect()");
        assert.deepEqual([...browser.listeners.keys()].sort(), [
          "document:visibilitychange",
          "window:offline",
          "window:online",
          "window:pageshow",
        ]);
        browser.fire("window:offline");
        await until(() => client.state === "reconnecting", 3000, "reconnecting after offline");
        assert.deepEqual(dropped, [{ code: 1001, reason: "browser offline" }]);
        browser.fire("window:online");
        await until(() => client.state === "open", 3000, "open again after online");

        browser.fire("window:offline");
        await until(() => client.state === "reconnecting", 3000, "reconnecting after offline");
        browser.fire("window:pageshow");
        await until(() => client.state === "open", 3000, "open again after pageshow");
      } finally {
        await within(5000, client.disconnect(), "disconnect()");
      }
      assert.equal(browser.listeners.size, 0, "disconnect() stops watching the browser");
    }),
});

Deno.test({
  name:
    "client: without a WebSocket, connect() fails with INVALID_OPTIONS; the one picked first is kept",
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
      assert.match(error.error.message, /has no global WebSocket/);
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
  name: "client: a connect() cancelled by disconnect() before it began announces no connecting",
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
  name:
    "client: a connecting listener that calls disconnect() stops connect() before any socket opens",
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
  name: "client: a server still handshaking when connect() is cancelled is not reported",
  ...sanitize,
  fn: () =>
    withStub(async (server) => {
      // Accepts TCP connections and never answers the WebSocket upgrade.
      const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const conns: Deno.Conn[] = [];
      const accepting = (async () => {
        for await (const conn of silent) conns.push(conn);
      })();
      const client = new RealmWebSocketClient({
        ...FAST,
        url: [server.url, `ws://127.0.0.1:${(silent.addr as Deno.NetAddr).port}`],
        model: "m",
        connectTimeout: 5000,
      });
      const errors: RealmError[] = [];
      client.on("error", (error) => errors.push(error));
      try {
        const connected = client.connect();
        await until(() => server.connectionCount === 1 && conns.length === 1, 3000, "both dialled");
        await until(() => client.stats().openConnections === 1, 3000, "one socket open");
        void client.disconnect();
        const result = (await outcome(connected, 3000, "connect()")) as { error: RealmError };
        assert.equal(result.error?.code, "ABORTED");
        await new Promise((resolve) => setTimeout(resolve, 50));
        assert.deepEqual(errors.map((e) => e.message), []);
      } finally {
        await within(5000, client.disconnect(), "disconnect()");
        silent.close();
        for (const conn of conns) conn.close();
        await accepting;
      }
    }),
});

Deno.test({
  name: "client: connect() while a connect() started by a statechange listener is pending joins it",
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
    const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const conns: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of silent) conns.push(conn);
    })();
    const client = new RealmWebSocketClient({
      ...FAST,
      url: [a.url, `ws://127.0.0.1:${(silent.addr as Deno.NetAddr).port}`],
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
      silent.close();
      for (const conn of conns) conn.close();
      await accepting;
      await a.close();
    }
  },
});
