/**
 * Streamed calls over loopback: `generate({ stream: true })` and `generateStream()`, their tokens
 * in order, `onToken`, the `readable`, a reader that breaks off or lags behind, and a stream that
 * stops, goes silent or loses its socket.
 */
import assert from "node:assert/strict";
import { type RealmError, type RealmEventMap, RealmWebSocketClient } from "../mod.ts";
import {
  delay,
  failedWith,
  FRANCE,
  idleStats,
  outcome,
  rejection,
  sanitize,
  scriptedServer,
  sendFrame,
  sentCalls,
  serverAnswer,
  simulatedTokens,
  stubAndClientWithStates,
  until,
  withClient,
  within,
} from "./_helpers.ts";

Deno.test({
  name:
    "generate({stream:true}) joins the tokens (the complete frame has no text) and calls onToken",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client) => {
      await client.connect();
      const seen: string[] = [];
      const result = await client.generate({
        prompt: FRANCE,
        max_tokens: 100,
        stream: true,
        onToken: (t) => seen.push(t),
      });
      assert.deepStrictEqual(seen, simulatedTokens(FRANCE, 100));
      assert.deepStrictEqual(serverAnswer(result, "1"), {
        text: seen.join(""),
        tokens_generated: 100,
      });
      assert.equal(typeof result.timeToFirstTokenMs, "number");
    }),
});

Deno.test({
  name: "generateStream yields the server's `text` tokens in order",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client, server) => {
      await client.connect();
      const tokens: string[] = [];
      for await (const token of client.generateStream({ prompt: FRANCE, max_tokens: 100 })) {
        tokens.push(token);
      }
      assert.deepStrictEqual(tokens, simulatedTokens(FRANCE, 100));
      const whole = await client.generate({ prompt: FRANCE, max_tokens: 100, stream: true });
      assert.equal(tokens.join(""), whole.text);
      assert.equal((sentCalls(server)[0].params as Record<string, unknown>).stream, true);
    }),
});

Deno.test({
  name: "generateStream's readable pipes through TextEncoderStream into a Response",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client) => {
      await client.connect();
      const stream = client.generateStream({ prompt: FRANCE, max_tokens: 100 });
      const body = await new Response(stream.readable.pipeThrough(new TextEncoderStream())).text();
      assert.equal(body, simulatedTokens(FRANCE, 100).join(""));
    }),
});

Deno.test({
  name: "break out of a stream: nothing leaks, late frames are dropped, the next call works",
  ...sanitize,
  fn: () =>
    withClient({ tokenDelayMs: 2 }, {}, async (client) => {
      const errors: RealmError[] = [];
      client.on("error", (e) => errors.push(e));
      await client.connect();
      let count = 0;
      for await (const _ of client.generateStream({ prompt: "Tell me a story", max_tokens: 30 })) {
        if (++count === 3) break;
      }
      assert.equal(count, 3);
      assert.equal(client.stats().pendingCalls, 0);
      // The server finishes the abandoned stream first; its frames must not surface anywhere.
      const health = await client.health();
      assert.equal(health.status, "healthy");
      assert.deepEqual(errors, []);
      assert.equal(client.stats().callsOnTheWire, 0);
    }),
});

Deno.test({
  name: "a stream is not sent until it is read",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client, server) => {
      await client.connect();
      const stream = client.generateStream({ prompt: "p", max_tokens: 2 });
      await client.health();
      assert.deepEqual(sentCalls(server).map((c) => c.function), ["health"]);
      const tokens = [];
      for await (const t of stream) tokens.push(t);
      assert.deepStrictEqual(tokens, ["The ", "capital "]);
    }),
});

Deno.test({
  name: "quirk: a stream that stops without a final frame ends by streamIdleTimeout",
  ...sanitize,
  fn: () =>
    withClient({ tokenDelayMs: 2 }, {}, async (client, server) => {
      await client.connect();
      const tokens: string[] = [];
      const reading = (async () => {
        for await (
          const token of client.generateStream(
            { prompt: "Tell me a story", max_tokens: 50 },
            { streamIdleTimeout: 100 },
          )
        ) {
          tokens.push(token);
          if (tokens.length === 2) server.faults.stall(true);
        }
      })();
      const error = await rejection(reading, 3000, "the 100 ms stream idle timeout");
      assert.equal(error.code, "TIMEOUT");
      assert.match(error.message, /streamIdleTimeout/);
      assert.equal(error.sent, true);
      assert.equal(error.requestId, sentCalls(server).at(-1)!.id);
      assert.ok(tokens.length >= 2);
    }),
});

Deno.test({
  name: "the server dropping mid-stream ends the stream with CONNECTION_CLOSED at once",
  ...sanitize,
  fn: () =>
    withClient(
      { tokenDelayMs: 2 },
      { reconnect: false, timeout: 20_000 },
      async (client, server) => {
        const disconnected: RealmEventMap["disconnected"][] = [];
        client.on("disconnected", (d) => disconnected.push(d));
        await client.connect();
        server.faults.dropAfterFrames(3);
        const tokens: string[] = [];
        const started = performance.now();
        const error = await rejection(
          (async () => {
            for await (const t of client.generateStream({ prompt: "story", max_tokens: 50 })) {
              tokens.push(t);
            }
          })(),
          3000,
          "the stream's end when its socket closes",
        );
        assert.equal(error.code, "CONNECTION_CLOSED");
        assert.equal(error.sent, true);
        assert.ok(performance.now() - started < 10_000, "not after the call's timeout");
        assert.equal(tokens.length, 3);
        assert.equal(disconnected.length, 1);
        assert.equal(disconnected[0].willReconnect, false);
        assert.equal(client.isConnected(), false);
        assert.equal((await rejection(client.health())).code, "NOT_CONNECTED");
      },
    ),
});

Deno.test({
  name: "a slow reader of a fast stream (tokenDelayMs 0) gets every token, in order, exactly",
  ...sanitize,
  fn: () =>
    withClient({ tokenDelayMs: 0 }, {}, async (client) => {
      await client.connect();
      const tokens: string[] = [];
      const reading = (async () => {
        for await (const token of client.generateStream({ prompt: FRANCE, max_tokens: 300 })) {
          tokens.push(token);
          // The server sends faster than this reader reads: tokens wait in the stream.
          if (tokens.length % 25 === 0) await delay(5);
        }
      })();
      await within(10_000, reading, "reading 300 tokens");
      assert.equal(tokens.join(""), simulatedTokens(FRANCE, 300).join(""));
      assert.equal(tokens.length, 300);
    }),
});

Deno.test({
  name: "a slow reader that breaks (tokenDelayMs 0) reads nothing after the break",
  ...sanitize,
  fn: () =>
    withClient({ tokenDelayMs: 0 }, {}, async (client, server) => {
      const errors: RealmError[] = [];
      client.on("error", (e) => errors.push(e));
      await client.connect();
      const read: string[] = [];
      const reading = (async () => {
        for await (const token of client.generateStream({ prompt: FRANCE, max_tokens: 500 })) {
          read.push(token);
          if (read.length === 10) break;
          // Slow: the rest of the stream piles up behind this reader meanwhile.
          await delay(2);
        }
      })();
      await within(5000, reading, "ten tokens and a break");
      assert.deepStrictEqual(read, simulatedTokens(FRANCE, 10));
      // The server goes on sending the abandoned stream; the next call is answered after it.
      const health = await within(10_000, client.health(), "health behind the abandoned stream");
      assert.equal(health.status, "healthy");
      assert.deepStrictEqual(read, simulatedTokens(FRANCE, 10), "no token read after the break");
      assert.deepStrictEqual(errors, []);
      assert.deepStrictEqual(client.stats(), idleStats(1, 1));
      assert.equal(server.callCount, 2);
    }),
});

Deno.test({
  name: "a slow reader's iterator yields nothing after return(), even with tokens buffered",
  ...sanitize,
  fn: () =>
    withClient({ tokenDelayMs: 0 }, {}, async (client) => {
      await client.connect();
      const iterator = client.generateStream({ prompt: FRANCE, max_tokens: 500 })
        [Symbol.asyncIterator]();
      for (let i = 0; i < 10; i++) {
        await within(3000, iterator.next(), "a token");
        await delay(2);
      }
      // What `break` does in a for await loop; by now the whole stream has arrived.
      await iterator.return!();
      await within(10_000, client.health(), "health behind the stream");
      assert.deepStrictEqual(await iterator.next(), { done: true, value: undefined });
    }),
});

Deno.test({
  name: "an onToken callback that throws rejects its call; the socket handler stays intact",
  ...sanitize,
  fn: () =>
    withClient({ tokenDelayMs: 1 }, {}, async (client) => {
      await client.connect();
      const failure = new Error("my callback broke");
      await assert.rejects(
        client.generate({
          prompt: "story",
          stream: true,
          max_tokens: 10,
          onToken: () => {
            throw failure;
          },
        }),
        (error) => error === failure,
      );
      assert.equal(client.stats().pendingCalls, 0);
      assert.equal((await client.health()).status, "healthy");
    }),
});

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
