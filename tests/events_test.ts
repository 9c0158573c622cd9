/**
 * The client's events over loopback: `on`/`off`/`onError` and `EventTarget`'s rules, the order
 * listeners hear events in, a throwing listener kept from the client and from the other
 * listeners, and what each payload carries.
 */
import assert from "node:assert/strict";
import { type RealmError, type RealmEventMap, RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import {
  deadUrl,
  dropNow,
  FAST,
  idleStats,
  outcome,
  sanitize,
  stubAndClientWithStates,
  until,
  withClient,
  within,
  withStub,
} from "./_helpers.ts";

Deno.test({
  name: "on() and off(): payloads for callbacks, removal works, the same callback is added once",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client) => {
      let count = 0;
      const callback = () => count++;
      client.on("connected", callback).on("connected", callback);
      assert.equal(client.stats().listeners, 1);
      await client.connect();
      assert.equal(count, 1);
      client.off("connected", callback);
      await client.disconnect();
      await client.connect();
      assert.equal(count, 1);
    }),
});

Deno.test({
  name: "off() of a listener never added, even for a type never listened to, does nothing",
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
    "addEventListener keeps EventTarget's rules (once per listener and type, handleEvent objects)",
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
  name: "onError() hears the client's errors, and off('error') removes it",
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
        assert.deepEqual(errors[0].details, { url: down, socket: 1 });
        client.off("error", onError);
      } finally {
        await within(5000, client.disconnect(), "disconnect()");
      }
    }),
});

Deno.test({
  name: "event payloads carry socket and url; stats() after disconnect() counts the listeners left",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({ url: server.url, model: "m", tenantId: "tenant-a" });
    const seen: [string, unknown][] = [];
    for (const type of ["connecting", "connected", "disconnected"] as const) {
      client.on(type, (payload: RealmEventMap[typeof type]) => seen.push([type, payload]));
    }
    try {
      assert.equal(client.getWebSocketSource(), undefined);
      await client.connect();
      assert.equal(client.getWebSocketSource(), "global");
    } finally {
      await client.disconnect();
      await server.close();
    }
    assert.deepEqual(seen, [
      ["connecting", { attempt: 0 }],
      ["connected", { tenantId: "tenant-a", version: "0.1.0", socket: 0, url: server.url }],
      ["disconnected", {
        code: 1000,
        reason: "client disconnect",
        willReconnect: false,
        socket: 0,
        url: server.url,
      }],
    ]);
    assert.deepEqual(client.stats(), idleStats(0, 3));
  },
});

Deno.test({
  name: "events fired by a listener's disconnect() reach listeners after the current event",
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
  name: "during disconnect(), listeners hear of it once the client is idle",
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

Deno.test({
  name: "a listener that throws is logged with its error, and the next listener still runs",
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
    assert.deepEqual(lines, [[`a "connected" listener threw`, {
      error: "Error: boom",
    }]]);
  },
});

Deno.test({
  name: "a listener added for two events that throws is logged under each event's name",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const lines: string[] = [];
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      logger: (message) => lines.push(message),
    });
    const throwing = () => {
      throw new Error("listener bug");
    };
    client.addEventListener("connecting", throwing);
    client.addEventListener("connected", throwing);
    try {
      await within(5000, client.connect(), "connect()");
      assert.deepEqual(lines.filter((line) => line.includes("listener threw")), [
        'a "connecting" listener threw',
        'a "connected" listener threw',
      ]);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "throwing listeners and a throwing logger: nothing escapes, reconnection goes on",
  ...sanitize,
  fn: async () => {
    const logged: string[] = [];
    await using t = await stubAndClientWithStates({}, {
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
