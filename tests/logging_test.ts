/** What the `logger` option receives (never the API key), and that nothing is printed unasked. */
import assert from "node:assert/strict";
import { type RealmError, RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import {
  dropNow,
  FAST,
  FRANCE,
  printedDuring,
  recordEvents,
  rejection,
  sanitize,
  until,
  withClient,
  within,
} from "./_helpers.ts";

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

Deno.test({
  name: "the logger receives lines, none of them with the API key; nothing is printed",
  ...sanitize,
  fn: async () => {
    const lines: string[] = [];
    const printed = await printedDuring(() =>
      withClient(
        { apiKeys: { "super-secret-key": "acme-corp" } },
        {
          apiKey: "super-secret-key",
          logger: (message, data) => lines.push(`${message} ${JSON.stringify(data ?? {})}`),
        },
        async (client) => {
          await client.connect();
          await client.health();
        },
      )
    );
    assert.ok(lines.some((l) => l.startsWith("connected")), lines.join("\n"));
    for (const line of lines) assert.ok(!line.includes("super-secret-key"), line);
    assert.deepEqual(printed, []);
  },
});

Deno.test({
  name: "without a logger nothing is printed, through errors, drops and reconnects too",
  ...sanitize,
  fn: async () => {
    const printed = await printedDuring(() =>
      withClient(
        { tokenDelayMs: 1 },
        { reconnectInterval: 5, maxReconnectInterval: 20 },
        async (client, server) => {
          const errors: RealmError[] = [];
          client.on("error", (e) => errors.push(e));
          await client.connect();
          await client.generate({ prompt: FRANCE });
          await rejection(client.executePipeline("nope", {}));
          await rejection(client.generate({ prompt: "p", max_tokens: 0 }));
          server.faults.sendMalformed("not-json");
          await until(() => errors.length === 1, 3000, "the protocol error event");
          let connected = 0;
          client.on("connected", () => connected++);
          dropNow(server);
          await until(() => connected === 1, 3000, "the reconnect after a drop");
          assert.equal((await client.health()).status, "healthy");
        },
      )
    );
    assert.deepEqual(printed, []);
  },
});
