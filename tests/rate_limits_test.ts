/**
 * Rate limits over loopback: `retryAfter` read from the server's message, how many frames
 * `maxRetries` sends, a retry that then succeeds, and a wait longer than the call's timeout.
 */
import assert from "node:assert/strict";
import { RealmWebSocketClient } from "../mod.ts";
import {
  callFrames,
  complete,
  failedWith,
  outcome,
  rejection,
  sanitize,
  type Script,
  scriptedServer,
  sendFrame,
  sentCalls,
  serverAnswer,
  withClient,
  within,
  withScripted,
} from "./_helpers.ts";

/** A server that rate-limits every call with this wait in its message, as the real one words it. */
function rateLimited(seconds: number): Script {
  return {
    frame: (socket, frame) =>
      socket.send(JSON.stringify({
        id: frame.id,
        status: "error",
        error: {
          code: "RATE_LIMIT_EXCEEDED",
          message: `Rate limit exceeded. Try again in ${seconds} seconds.`,
        },
      })),
  };
}

Deno.test({
  name: 'rate limit: retryAfter is 59 for "Try again in 59 seconds."',
  ...sanitize,
  fn: () =>
    withScripted(rateLimited(59), {}, async (client, received) => {
      const error = await rejection(client.health(), 5000);
      assert.equal(error.code, "RATE_LIMIT_EXCEEDED");
      assert.equal(error.retryAfter, 59);
      assert.equal(error.message, "Rate limit exceeded. Try again in 59 seconds.");
      assert.equal(error.sent, true);
      assert.equal(callFrames(received).length, 1, "maxRetries defaults to 0: no retry");
    }),
});

Deno.test({
  name: "quirk: rate limit without retry_after gives retryAfter parsed from the message",
  ...sanitize,
  fn: () =>
    withClient(
      { apiKeys: { k: "acme-corp" }, rateLimit: { perMinute: 1, burst: 1 } },
      { apiKey: "k" },
      async (client, server) => {
        await client.connect();
        await client.health();
        const error = await rejection(client.health());
        assert.equal(error.code, "RATE_LIMIT_EXCEEDED");
        const said = /^Rate limit exceeded\. Try again in (\d+) seconds\.$/.exec(error.message);
        assert.ok(said, error.message);
        // One call a minute, the burst spent a moment ago: the wait is most of a minute.
        assert.ok(Number(said[1]) >= 50, error.message);
        assert.equal(error.retryAfter, Number(said[1]), "retryAfter is the message's number");
        assert.equal(error.requestId, sentCalls(server).at(-1)!.id, "the id of the call sent");
      },
    ),
});

for (const maxRetries of [0, 1, 3]) {
  Deno.test({
    name: `rate limit: maxRetries ${maxRetries} sends exactly ${maxRetries + 1} frames, ` +
      "then RATE_LIMIT_EXCEEDED",
    ...sanitize,
    fn: () =>
      withScripted(rateLimited(0), {}, async (client, received) => {
        const error = await rejection(
          client.generate({ prompt: "p" }, { maxRetries }),
          5000,
          "the last retry's error",
        );
        assert.equal(error.code, "RATE_LIMIT_EXCEEDED");
        assert.equal(error.retryAfter, 0);
        assert.equal(error.sent, true);
        const frames = callFrames(received);
        assert.equal(frames.length, maxRetries + 1);
        // Every try is the same call: same id, function and params.
        assert.equal(new Set(frames.map((f) => JSON.stringify(f))).size, 1);
        assert.equal(client.stats().pendingCalls, 0);
      }),
  });
}

Deno.test({
  name: "rate limit: the client option maxRetries is used when the call gives none",
  ...sanitize,
  fn: () =>
    withScripted(rateLimited(0), { maxRetries: 2 }, async (client, received) => {
      const error = await rejection(client.health(), 5000);
      assert.equal(error.code, "RATE_LIMIT_EXCEEDED");
      assert.equal(callFrames(received).length, 3);
    }),
});

Deno.test({
  name: "rate limit: a retry that then succeeds resolves to the server's answer",
  ...sanitize,
  fn: () => {
    let tries = 0;
    return withScripted(
      {
        frame: (socket, frame) => {
          if (++tries < 3) return rateLimited(0).frame(socket, frame);
          complete(socket, frame.id, { status: "healthy", version: "0.1.0", uptime_seconds: 7 });
        },
      },
      {},
      async (client, received) => {
        const health = await within(5000, client.health({ maxRetries: 5 }), "health with retries");
        assert.deepStrictEqual(serverAnswer(health), {
          status: "healthy",
          version: "0.1.0",
          uptime_seconds: 7,
        });
        assert.equal(callFrames(received).length, 3);
      },
    );
  },
});

Deno.test({
  name: "rate limit: a retryAfter past the call's timeout fails at once with RATE_LIMIT_EXCEEDED",
  ...sanitize,
  fn: async () => {
    const server = scriptedServer({
      frame: (socket, frame) =>
        sendFrame(socket, {
          id: frame.id,
          status: "error",
          error: {
            code: "RATE_LIMIT_EXCEEDED",
            message: "Rate limit exceeded. Try again in 59 seconds.",
          },
        }),
    });
    const client = new RealmWebSocketClient({ url: server.url, model: "m", maxRetries: 5 });
    try {
      await client.connect();
      const started = performance.now();
      const error = failedWith(
        await outcome(client.health({ timeout: 10_000 }), 2000, "limited call"),
        "RATE_LIMIT_EXCEEDED",
      );
      assert.equal(error.retryAfter, 59);
      assert.ok(performance.now() - started < 2000);
      assert.equal(server.received.length, 1, "no retry was sent");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});
