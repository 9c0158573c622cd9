import assert from "node:assert/strict";
import { Deadlines } from "../src/calls.ts";
import { delay, sanitize } from "./_helpers.ts";

/** Counts the timers armed and cleared while `body` runs (the real functions still do the work). */
async function countingTimers(
  body: () => Promise<void>,
): Promise<{ armed: number; cleared: number }> {
  const counts = { armed: 0, cleared: 0 };
  const { setTimeout: set, clearTimeout: clear } = globalThis;
  globalThis.setTimeout = ((...args: Parameters<typeof set>) => {
    counts.armed++;
    return set(...args);
  }) as typeof set;
  globalThis.clearTimeout = ((id?: number) => {
    if (id !== undefined) counts.cleared++;
    return clear(id);
  }) as typeof clear;
  try {
    await body();
  } finally {
    globalThis.setTimeout = set;
    globalThis.clearTimeout = clear;
  }
  return counts;
}

Deno.test({
  name: "Deadlines: calls made one after another share one timer, released once idle",
  ...sanitize,
  fn: async () => {
    const deadlines = new Deadlines();
    let fired = 0;
    const counts = await countingTimers(async () => {
      for (let i = 0; i < 1000; i++) {
        const deadline = deadlines.add(30_000, () => fired++);
        // The answer arrives, and its awaiter makes the next call a microtask later.
        await Promise.resolve();
        deadlines.cancel(deadline);
        await Promise.resolve();
      }
      // Idle now: the timer goes within a few microtasks, before any other task runs.
      await new Promise<void>((resolve) => queueMicrotask(() => setTimeout(resolve, 0)));
    });
    assert.equal(fired, 0);
    assert.equal(deadlines.size, 0);
    // One shared timer for the 1,000 deadlines, plus the test's own wait; cleared once.
    assert.deepEqual(counts, { armed: 2, cleared: 1 });
  },
});

Deno.test({
  name: "Deadlines: a deadline set after the timer's fires on time (the timer wakes and re-arms)",
  ...sanitize,
  fn: async () => {
    const deadlines = new Deadlines();
    const start = performance.now();
    deadlines.cancel(deadlines.add(20, () => assert.fail("cancelled, yet fired")));
    let firedAt = -1;
    const late = deadlines.add(60, () => firedAt = performance.now() - start);
    assert.equal(late.done, false);
    const limit = performance.now() + 3000;
    while (firedAt < 0 && performance.now() < limit) await delay(5);
    assert.ok(firedAt >= 59, `fired after ${firedAt} ms, not 60`);
    assert.ok(firedAt < 3000, "never fired");
    assert.equal(deadlines.size, 0);
  },
});
