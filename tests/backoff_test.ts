import assert from "node:assert/strict";
import { MIN_RETRY_DELAY_MS, reconnectDelay, retryDelay, sleep } from "../src/backoff.ts";

Deno.test("reconnectDelay: full jitter between 0 and twice the step, centred on the step", () => {
  assert.equal(reconnectDelay(1, 5000, 60_000, () => 0), 0);
  assert.equal(reconnectDelay(1, 5000, 60_000, () => 0.5), 5000);
  assert.equal(reconnectDelay(1, 5000, 60_000, () => 0.999), 9990);
});

Deno.test("reconnectDelay grows exponentially up to the cap", () => {
  const mid = () => 0.5;
  assert.deepEqual(
    [1, 2, 3, 4, 5].map((attempt) => reconnectDelay(attempt, 100, 1000, mid)),
    [100, 200, 400, 800, 1000],
  );
  assert.equal(reconnectDelay(50, 100, 1000, () => 0.999), 1000);
  assert.equal(reconnectDelay(1_000_000, 5000, 60_000, mid), 60_000);
});

Deno.test("reconnectDelay stays in range over many random draws", () => {
  for (let attempt = 1; attempt <= 12; attempt++) {
    const step = Math.min(1000, 50 * 2 ** (attempt - 1));
    for (let i = 0; i < 200; i++) {
      const delay = reconnectDelay(attempt, 50, 1000);
      assert.ok(delay >= 0 && delay <= Math.min(1000, 2 * step), `${delay} for attempt ${attempt}`);
    }
  }
});

Deno.test("retryDelay honours retryAfter and never retries at once when it is 0", () => {
  assert.equal(retryDelay(0, () => 0), MIN_RETRY_DELAY_MS);
  assert.ok(retryDelay(0, () => 0.999) < 2 * MIN_RETRY_DELAY_MS + 1);
  assert.equal(retryDelay(2, () => 0), 2000 + MIN_RETRY_DELAY_MS);
  assert.ok(retryDelay(2, () => 0.999) <= 2000 + MIN_RETRY_DELAY_MS + 400);
});

Deno.test({
  name: "sleep resolves after the delay and rejects at once on abort, leaving no timer",
  sanitizeOps: true,
  sanitizeResources: true,
  fn: async () => {
    await sleep(1);
    const controller = new AbortController();
    const waiting = sleep(60_000, controller.signal);
    controller.abort(new Error("stop"));
    await assert.rejects(waiting, /stop/);
    await assert.rejects(sleep(10, controller.signal), /stop/);
  },
});

Deno.test("retryDelay: exact waits, with 20 % of the server's wait as jitter (at least 100 ms)", () => {
  assert.equal(retryDelay(0, () => 0.5), 150);
  assert.equal(retryDelay(10, () => 0), 10_100);
  assert.equal(retryDelay(10, () => 0.5), 11_100);
  assert.equal(retryDelay(59, () => 0.25), 59_000 + 100 + 2_950);
  assert.equal(retryDelay(-3, () => 0.5), 150, "a negative wait counts as 0");
});
