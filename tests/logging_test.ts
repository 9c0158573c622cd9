/** What the `logger` option receives (never the API key), and that nothing is printed unasked. */
import assert from "node:assert/strict";
import { RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import { dropNow, FAST, recordEvents, sanitize, until, within } from "./_helpers.ts";

Deno.test({
  name: "a dropped socket is logged with its close code, reason, retry and socket",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const lines: [string, Record<string, unknown> | undefined][] = [];
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      reconnect: false,
      logger: (message, data) => lines.push([message, data]),
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect()");
      dropNow(server);
      await until(() => seen.disconnected.length === 1, 3000, "the disconnected event");
      const { code, reason } = seen.disconnected[0];
      assert.deepEqual(lines.filter(([message]) => message === "disconnected"), [
        ["disconnected", { code, reason, willReconnect: false, socket: 0 }],
      ]);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});
