/**
 * Coming from the earlier client (`sdks/nodejs-ws` of the Realm project): the members it had
 * that programs still call (`getModel()`, `onError()`), and `apiKey: ""` (an empty
 * `REALM_API_KEY=` line) meaning no key, as it did there.
 */
import assert from "node:assert/strict";
import { RealmError, RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import { idleStats, rejection, sanitize, until } from "./_helpers.ts";

Deno.test("getModel() returns the model option, before and after connecting", async () => {
  const server = await startStubServer({ tokenDelayMs: 0 });
  const client = new RealmWebSocketClient({ url: server.url, model: "tinyllama-1.1b" });
  try {
    assert.equal(client.getModel(), "tinyllama-1.1b");
    await client.connect();
    assert.equal(client.getModel(), "tinyllama-1.1b");
  } finally {
    await client.disconnect();
    await server.close();
  }
});

Deno.test({
  name: "onError(callback) receives error events, returns nothing, and off('error') removes it",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({ url: server.url, model: "m" });
    const errors: RealmError[] = [];
    const callback = (error: RealmError) => errors.push(error);
    try {
      assert.equal(client.onError(callback), undefined);
      assert.deepEqual(client.stats(), idleStats(0, 1));
      await client.connect();
      server.faults.sendMalformed("not-json");
      await until(() => errors.length === 1, 3000, "the error event");
      assert.ok(errors[0] instanceof RealmError);
      assert.equal(errors[0].code, "PROTOCOL_ERROR");
      client.off("error", callback);
      assert.deepEqual(client.stats(), idleStats(1, 0));
      server.faults.sendMalformed("not-json");
      // A health round trip after the frame: the frame has been handled when it answers.
      assert.equal((await client.health()).status, "healthy");
      assert.equal(errors.length, 1);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: 'apiKey: "" is no key: an open server connects, an authenticating one asks for a key',
  ...sanitize,
  fn: async () => {
    const open = await startStubServer({ tokenDelayMs: 0 });
    const auth = await startStubServer({ tokenDelayMs: 0, apiKeys: { "key-1": "tenant-a" } });
    const openClient = new RealmWebSocketClient({ url: open.url, model: "m", apiKey: "" });
    const authClient = new RealmWebSocketClient({
      url: auth.url,
      model: "m",
      apiKey: "",
      reconnect: false,
    });
    try {
      await openClient.connect();
      assert.equal((await openClient.health()).status, "healthy");
      const error = await rejection(authClient.connect());
      assert.equal(error.code, "UNAUTHORIZED");
      assert.match(error.message, /requires an API key/);
      // No auth frame was sent with an empty key.
      assert.deepEqual(auth.receivedFrames(), []);
    } finally {
      await openClient.disconnect();
      await authClient.disconnect();
      await open.close();
      await auth.close();
    }
  },
});

Deno.test('apiKey: "" over ws:// to another host is no key, so nothing to refuse', () => {
  const client = new RealmWebSocketClient({
    model: "m",
    url: "ws://realm.example.com:8080",
    apiKey: "",
  });
  assert.equal(client.getModel(), "m");
  // A real key there is still refused, and a key that is not a string too.
  for (const apiKey of ["k", 42]) {
    try {
      new RealmWebSocketClient({
        model: "m",
        url: "ws://realm.example.com:8080",
        apiKey: apiKey as string,
      });
      assert.fail("accepted");
    } catch (error) {
      assert.ok(error instanceof RealmError);
      assert.equal(error.code, "INVALID_OPTIONS");
    }
  }
});
