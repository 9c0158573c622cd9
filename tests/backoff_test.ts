import assert from "node:assert/strict";
import { reconnectDelay, retryDelay, sleep } from "../src/backoff.ts";

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

Deno.test("retryDelay: the server rounds its wait down, so the first retry waits [N + 0.5, N + 1] s", () => {
  // "Try again in 0 seconds" means under a second: never at once, never past a second.
  assert.equal(retryDelay(0, 1, () => 0), 500);
  assert.equal(retryDelay(0, 1, () => 0.999), 1000);
  assert.equal(retryDelay(2, 1, () => 0), 2500);
  assert.equal(retryDelay(2, 1, () => 0.5), 2750);
  assert.equal(retryDelay(59, 1, () => 0.999), 60_000);
  assert.equal(retryDelay(-3, 1, () => 0), 500, "a negative wait counts as 0");
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

Deno.test("retryDelay: each further limit of the same call waits longer, [N + 0.5k, N + k] s", () => {
  assert.equal(retryDelay(0, 2, () => 0), 1000);
  assert.equal(retryDelay(0, 2, () => 0.5), 1500);
  assert.equal(retryDelay(1, 3, () => 0), 2500);
  assert.equal(retryDelay(1, 3, () => 0.5), 3250);
  for (let limit = 1; limit < 6; limit++) {
    assert.ok(retryDelay(0, limit + 1, () => 0) > retryDelay(0, limit, () => 0), `limit ${limit}`);
  }
});
