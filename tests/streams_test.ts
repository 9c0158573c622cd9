/**
 * Streamed calls over loopback: `generate({ stream: true })` and `generateStream()`, their tokens
 * in order, `onToken`, the `readable`, a reader that breaks off or lags behind, and a stream that
 * stops, goes silent or loses its socket.
 */
import assert from "node:assert/strict";
import { RealmWebSocketClient } from "../mod.ts";
import {
  failedWith,
  idleStats,
  outcome,
  sanitize,
  scriptedServer,
  sendFrame,
  stubAndClientWithStates,
  until,
  within,
} from "./_helpers.ts";

Deno.test({
  name:
    "a throwing onToken, its tokens back to back (tokenDelayMs 0), rejects its call with that error",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({ tokenDelayMs: 0 }, {});
    await t.client.connect();
    const thrown = new Error("my onToken broke");
    const result = await outcome(
      t.client.generate({
        prompt: "story",
        max_tokens: 5,
        stream: true,
        onToken: () => {
          throw thrown;
        },
      }),
      2000,
      "throwing onToken",
    );
    assert.ok("error" in result && result.error === thrown);
    assert.equal((await within(2000, t.client.health(), "health after")).status, "healthy");
  },
});

Deno.test({
  name: "an abandoned stream leaves the wire; an id:unknown error goes to the listening call",
  ...sanitize,
  fn: async () => {
    const server = scriptedServer({
      frame: (socket, frame) => {
        const params = frame.params as { prompt?: string };
        if (params.prompt === "silent") {
          // One token, then nothing: the real server can stop a stream this way.
          sendFrame(socket, { id: frame.id, status: "streaming", data: { text: "A", index: 0 } });
        } else if (frame.function === "health") {
          sendFrame(socket, {
            id: "unknown",
            status: "error",
            error: { code: "INTERNAL_ERROR", message: "Invalid function call: oops" },
          });
        }
      },
    });
    const client = new RealmWebSocketClient({
      url: server.url,
      model: "m",
      streamIdleTimeout: 100,
    });
    const errors: string[] = [];
    client.on("error", (error) => errors.push(error.code));
    try {
      await client.connect();
      const silent = client.generateStream({ prompt: "silent" });
      const tokens: string[] = [];
      const ended = await outcome(
        (async () => {
          for await (const token of silent) tokens.push(token);
        })(),
        2000,
        "idle stream",
      );
      failedWith(ended, "TIMEOUT");
      assert.deepEqual(tokens, ["A"]);
      await until(() => client.stats().callsOnTheWire === 0, 1000, "the dead stream forgotten");
      const health = await outcome(client.health(), 2000, "health answered by id:unknown");
      const error = failedWith(health, "INTERNAL_ERROR");
      assert.match(error.message, /Invalid function call/);
      assert.deepEqual(errors, ["INTERNAL_ERROR"]);
      assert.deepEqual(client.stats(), idleStats(1, 1));
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "several next() before the first settles settle in order, like an async generator",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({ tokenDelayMs: 2 }, {});
    await t.client.connect();
    const stream = t.client.generateStream({ prompt: "Tell", max_tokens: 4 });
    const iterator = stream[Symbol.asyncIterator]();
    const reads = [iterator.next(), iterator.next(), iterator.next(), iterator.next()];
    const extra = iterator.next();
    const results = await within(2000, Promise.all(reads), "four reads");
    assert.deepEqual(results.map((r) => r.value), ["The ", "capital ", "of ", "France "]);
    assert.deepEqual(await within(2000, extra, "the fifth read"), {
      done: true,
      value: undefined,
    });
  },
});

Deno.test({
  name: "a token whose text is not a string fails its call with PROTOCOL_ERROR",
  ...sanitize,
  fn: async () => {
    const server = scriptedServer({
      frame: (socket, frame) => {
        if (frame.function !== "generate") {
          return sendFrame(socket, {
            id: frame.id,
            status: "complete",
            data: { status: "healthy" },
          });
        }
        sendFrame(socket, { id: frame.id, status: "streaming", data: { text: "ok ", index: 0 } });
        sendFrame(socket, { id: frame.id, status: "streaming", data: { text: 42, index: 1 } });
        sendFrame(socket, { id: frame.id, status: "complete", data: { tokens_generated: 2 } });
      },
    });
    const client = new RealmWebSocketClient({ url: server.url, model: "m" });
    try {
      await client.connect();
      const tokens: string[] = [];
      const result = await outcome(
        client.generate({ prompt: "x", stream: true, onToken: (token) => tokens.push(token) }),
        2000,
        "bad token",
      );
      failedWith(result, "PROTOCOL_ERROR");
      assert.deepEqual(tokens, ["ok "]);
      assert.equal((await within(2000, client.health(), "health after")).status, "healthy");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});
