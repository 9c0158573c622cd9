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
  rateLimited,
  rejection,
  sanitize,
  scriptedServer,
  sendFrame,
  sentCalls,
  serverAnswer,
  withClient,
  within,
  withScripted,
} from "./_helpers.ts";

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
        // Waits of [0.5, 1], [1, 2] and [1.5, 3] s: at most 6 s for three retries.
        const error = await rejection(
          client.generate({ prompt: "p" }, { maxRetries, timeout: 10_000 }),
          10_000,
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

Deno.test({
  name:
    "rate limit: five calls at once against 120 a minute with a burst of 2 all succeed within maxRetries 3, about two frames a call",
  ...sanitize,
  fn: () =>
    withClient(
      { apiKeys: { k: "acme-corp" }, rateLimit: { perMinute: 120, burst: 2 } },
      { apiKey: "k", maxRetries: 3, timeout: 20_000 },
      async (client, server) => {
        await within(5000, client.connect(), "connect()");
        const calls = Array.from({ length: 5 }, () => client.health());
        const results = await within(20_000, Promise.all(calls), "five limited calls");
        assert.deepEqual(results.map((r) => r.status), Array(5).fill("healthy"));
        const frames = sentCalls(server).length;
        // 5 first tries; the server rounds "under a second" down to 0, and waits of [0.5, 1] s
        // (then longer) leave it time to refill: a handful of retries, not a storm.
        assert.ok(frames <= 11, `${frames} call frames for 5 calls`);
        assert.equal(client.stats().retriesWithheld, 0);
      },
    ),
});

Deno.test({
  name: "rate limit: a retry keeps the call's first deadline: timeout 1200 ends it near 1.2 s",
  ...sanitize,
  fn: () =>
    withScripted(rateLimited(0), {}, async (client, received) => {
      const started = performance.now();
      const error = await rejection(
        client.health({ timeout: 1200, maxRetries: 10 }),
        5000,
        "the limited call",
      );
      const took = performance.now() - started;
      // A retry whose wait would pass the deadline is not made: the call fails with the limit.
      assert.equal(error.code, "RATE_LIMIT_EXCEEDED");
      // Each retry waits at least 0.5 s: a clock restarted by a retry would let it run for many
      // seconds with 10 retries; the first deadline ends it before 1.2 s.
      assert.ok(took < 1200, `${Math.round(took)} ms`);
      assert.ok(callFrames(received).length <= 3);
    }),
});
