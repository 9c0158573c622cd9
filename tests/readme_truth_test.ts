/**
 * Statements of the README's API reference that were once not what the code did: the events'
 * payloads (with `socket` and `url`), `stats()` after `disconnect()` while `on()` listeners remain, and
 * `getWebSocketSource()` before `connect()`.
 */
import assert from "node:assert/strict";
import { type RealmEventMap, RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import { idleStats, sanitize } from "./_helpers.ts";

Deno.test({
  name:
    "README: payloads carry socket and url; stats() after disconnect() counts the remaining listeners",
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
