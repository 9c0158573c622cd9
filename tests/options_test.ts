import assert from "node:assert/strict";
import { RealmError, RealmWebSocketClient } from "../mod.ts";
import { idleStats, printedDuring, rejection } from "./_helpers.ts";

function optionError(options: unknown): RealmError {
  try {
    new RealmWebSocketClient(options as never);
  } catch (error) {
    assert.ok(error instanceof RealmError);
    return error;
  }
  assert.fail("the constructor accepted bad options");
}

Deno.test("model is required, with a message that shows what to pass", () => {
  for (const options of [undefined, {}, { model: "" }, { model: "  " }, { model: 3 }]) {
    const error = optionError(options);
    assert.equal(error.code, "INVALID_OPTIONS");
  }
  assert.match(optionError({}).message, /`model` is required/);
});

Deno.test("url must be ws:// or wss://, and an http URL gets a suggestion", () => {
  assert.match(
    optionError({ model: "m", url: "http://example.com/x" }).message,
    /ws:\/\/example\.com\/x/,
  );
  assert.equal(optionError({ model: "m", url: "not a url" }).code, "INVALID_OPTIONS");
  assert.equal(optionError({ model: "m", url: "ftp://x" }).code, "INVALID_OPTIONS");
  new RealmWebSocketClient({ model: "m", url: "wss://realm.example.com" });
});

Deno.test("an API key is not sent over plain ws:// to another host unless allowed", () => {
  const error = optionError({ model: "m", url: "ws://realm.example.com", apiKey: "secret-key" });
  assert.match(error.message, /allowInsecureAuth/);
  assert.ok(!error.message.includes("secret-key"), "the key never appears in a message");
  new RealmWebSocketClient({
    model: "m",
    url: "ws://realm.example.com",
    apiKey: "k",
    allowInsecureAuth: true,
  });
  for (const url of ["ws://localhost:1", "ws://127.0.0.1:1", "ws://[::1]:1", "wss://x.example"]) {
    new RealmWebSocketClient({ model: "m", url, apiKey: "k" });
  }
});

Deno.test("tenantId follows the server's rule; without one a UUID is assigned", () => {
  assert.equal(optionError({ model: "m", tenantId: "ab" }).code, "INVALID_OPTIONS");
  assert.equal(optionError({ model: "m", tenantId: "bad tenant" }).code, "INVALID_OPTIONS");
  assert.equal(
    new RealmWebSocketClient({ model: "m", tenantId: "my-tenant" }).getTenantId(),
    "my-tenant",
  );
  const assigned = new RealmWebSocketClient({ model: "m" }).getTenantId();
  assert.match(assigned, /^[0-9a-f-]{36}$/);
  assert.notEqual(assigned, new RealmWebSocketClient({ model: "m" }).getTenantId());
});

Deno.test("numeric options are checked and name the allowed range", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { timeout: 0 },
      /`timeout` must be a number of milliseconds > 0, up to 2147483647, or Infinity; got 0/,
    ],
    [{ timeout: "5" }, /`timeout`/],
    [{ reconnectInterval: -1 }, /`reconnectInterval`/],
    [{ reconnectInterval: 100, maxReconnectInterval: 50 }, /`maxReconnectInterval`/],
    [{ maxReconnectAttempts: 1.5 }, /`maxReconnectAttempts` must be an integer/],
    [{ connections: 0 }, /`connections` must be an integer from 1 to 64/],
    [{ maxRetries: -1 }, /`maxRetries`/],
    [{ heartbeatInterval: NaN }, /`heartbeatInterval`/],
    [{ reconnect: "yes" }, /`reconnect` must be true or false/],
    [{ WebSocket: 5 }, /`WebSocket` must be a WebSocket constructor/],
  ];
  for (const [extra, message] of cases) {
    const error = optionError({ model: "m", ...extra });
    assert.equal(error.code, "INVALID_OPTIONS");
    assert.match(error.message, message);
  }
});

Deno.test("a new client is quiet and idle: no socket, no timer, nothing printed", async () => {
  // The test's sanitizers (on by default) fail it if a socket or a timer is left open.
  const printed = await printedDuring(() => {
    const client = new RealmWebSocketClient({ model: "m" });
    assert.equal(client.isConnected(), false);
    assert.equal(client.getServerVersion(), undefined);
    assert.deepEqual(client.stats(), idleStats());
  });
  assert.deepEqual(printed, []);
});

Deno.test("calls before connect() reject at once with NOT_CONNECTED", async () => {
  const client = new RealmWebSocketClient({ model: "m" });
  const error = await rejection(client.health());
  assert.equal(error.code, "NOT_CONNECTED");
  assert.equal(error.sent, false);
  assert.match(error.message, /connect\(\)/);
  assert.equal(client.stats().pendingCalls, 0);
});

Deno.test("without crypto.randomUUID (insecure browser pages) the tenant is still a UUID", () => {
  const original = crypto.randomUUID;
  // deno-lint-ignore no-explicit-any
  (crypto as any).randomUUID = undefined;
  try {
    const ids = new Set(
      Array.from({ length: 50 }, () => new RealmWebSocketClient({ model: "m" }).getTenantId()),
    );
    assert.equal(ids.size, 50);
    for (const id of ids) {
      assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    }
  } finally {
    crypto.randomUUID = original;
  }
});

Deno.test({
  name: "getModel() is the model option",
  fn: () => {
    assert.equal(new RealmWebSocketClient({ model: "llama-2-7b" }).getModel(), "llama-2-7b");
    assert.equal(
      new RealmWebSocketClient({ url: "ws://127.0.0.1:9", model: "mistral-7b" }).getModel(),
      "mistral-7b",
    );
  },
});
