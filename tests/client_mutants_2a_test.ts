/**
 * What the client façade (src/client.ts: `on`/`off`/`onError`, its `EventTarget` methods, the
 * order in which events reach listeners, the browser's network events and the start of a
 * `connect()`) promises, pinned where the mutation run found no test that would notice a change.
 * @module
 */
import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import { type RealmClientOptions, type RealmError, RealmWebSocketClient } from "../mod.ts";
import { startStubServer, type StubServer } from "../testing.ts";
import { outcome, sanitize, until, within } from "./_helpers.ts";

const FAST: Partial<RealmClientOptions> = {
  reconnectInterval: 10,
  maxReconnectInterval: 50,
  timeout: 5000,
  connectTimeout: 2000,
};

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

/** A TCP port nothing listens on: connecting to it is refused at once. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
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
      const down = `ws://127.0.0.1:${closedPort()}`;
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
        url: [server.url, `ws://127.0.0.1:${closedPort()}`],
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
