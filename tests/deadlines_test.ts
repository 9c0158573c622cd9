import assert from "node:assert/strict";
import { type Deadline, Deadlines, MAX_TIMER_MS } from "../src/calls.ts";
import { delay, sanitize, withFakeClock } from "./_helpers.ts";

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

Deno.test({
  name: "Deadlines: deadlines due together fire in the order they were set",
  ...sanitize,
  fn: () =>
    withFakeClock((clock) => {
      const deadlines = new Deadlines();
      const fired: string[] = [];
      // Twelve deadlines on three instants, set in a shuffled order (as concurrent calls are).
      const set = [10, 0, 10, 5, 0, 10, 5, 0, 5, 10, 0, 5];
      set.forEach((ms, i) => deadlines.add(ms, () => fired.push(`${ms}:${i}`), clock.now));
      while (clock.next());
      assert.deepEqual(fired, [
        ...["0:1", "0:4", "0:7", "0:10"],
        ...["5:3", "5:6", "5:8", "5:11"],
        ...["10:0", "10:2", "10:5", "10:9"],
      ]);
      assert.equal(deadlines.size, 0);
    }),
});

Deno.test({
  name: "Deadlines: deadlines set for the same instant share one timer",
  ...sanitize,
  fn: () =>
    withFakeClock((clock) => {
      const deadlines = new Deadlines();
      let fired = 0;
      for (let i = 0; i < 3; i++) deadlines.add(10, () => fired++, clock.now);
      assert.deepEqual(clock.delays, [10]);
      assert.equal(clock.timers, 1);
      while (clock.next());
      assert.equal(fired, 3);
      assert.equal(clock.now, 1010);
    }),
});

Deno.test({
  name: "Deadlines: a timer that wakes up to 1 ms early fires its deadline, 2 ms early re-arms",
  ...sanitize,
  fn: () =>
    withFakeClock((clock) => {
      const deadlines = new Deadlines();
      const firedAt: number[] = [];
      deadlines.add(10, () => firedAt.push(clock.now));
      clock.next(1);
      assert.deepEqual(firedAt, [1009]);
      assert.deepEqual(clock.delays, [10]);

      deadlines.add(10, () => firedAt.push(clock.now)); // due at 1019
      clock.next(2); // wakes at 1017: too early, waits the 2 ms left
      assert.deepEqual(firedAt, [1009]);
      assert.deepEqual(clock.delays, [10, 10, 2]);
      clock.next();
      assert.deepEqual(firedAt, [1009, 1019]);
    }),
});

Deno.test({
  name: "Deadlines: a fired deadline is done, and cancelling it afterwards changes nothing",
  ...sanitize,
  fn: () =>
    withFakeClock((clock) => {
      const deadlines = new Deadlines();
      const fired: string[] = [];
      const first = deadlines.add(10, () => fired.push("first"));
      const second = deadlines.add(20, () => fired.push("second"));
      clock.next();
      assert.deepEqual(fired, ["first"]);
      assert.equal(first.done, true);
      assert.equal(second.done, false);
      deadlines.cancel(first); // as a call settling after its timeout fired does
      assert.equal(deadlines.size, 1);
      assert.equal(clock.timers, 1);
      clock.next();
      assert.deepEqual(fired, ["first", "second"]);
      assert.equal(deadlines.size, 0);
    }),
});

Deno.test({
  name: "Deadlines: a deadline cancelled by one due at the same time does not fire",
  ...sanitize,
  fn: () =>
    withFakeClock((clock) => {
      const deadlines = new Deadlines();
      const fired: string[] = [];
      // A call's timeout and its retry wait due together: the timeout fails the call, which
      // cancels the wait.
      let wait: Deadline | undefined = undefined;
      deadlines.add(10, () => {
        fired.push("timeout");
        deadlines.cancel(wait!);
      }, clock.now);
      wait = deadlines.add(10, () => fired.push("retry"), clock.now);
      deadlines.add(30, () => fired.push("later"), clock.now);
      clock.next();
      assert.deepEqual(fired, ["timeout"]);
      assert.equal(deadlines.size, 1);
      while (clock.next());
      assert.deepEqual(fired, ["timeout", "later"]);
      assert.equal(deadlines.size, 0);
    }),
});

Deno.test({
  name: "Deadlines: after firing, the timer is armed once for the next pending deadline",
  ...sanitize,
  fn: async (t) => {
    await t.step("cancelled deadlines in between cost no wake-up", () =>
      withFakeClock((clock) => {
        const deadlines = new Deadlines();
        const fired: [string, number][] = [];
        let b: Deadline | undefined = undefined;
        // A call's timeout fails it, which cancels its retry wait, due next.
        deadlines.add(10, () => {
          fired.push(["a", clock.now]);
          deadlines.cancel(b!);
        });
        b = deadlines.add(20, () => fired.push(["b", clock.now]));
        const c = deadlines.add(30, () => fired.push(["c", clock.now]));
        deadlines.add(40, () => fired.push(["d", clock.now]));
        deadlines.cancel(c); // cancelled before: no wake-up for it either
        while (clock.next());
        assert.deepEqual(fired, [["a", 1010], ["d", 1040]]);
        assert.deepEqual(clock.delays, [10, 30]);
      }));

    await t.step(
      "a deadline set by a firing one is armed for once",
      () =>
        withFakeClock((clock) => {
          const deadlines = new Deadlines();
          const fired: [string, number][] = [];
          // A call's timeout lets the next queued call start, with its own deadline.
          deadlines.add(10, () => {
            fired.push(["a", clock.now]);
            deadlines.add(5, () => fired.push(["next", clock.now]));
          });
          deadlines.add(100, () => fired.push(["c", clock.now]));
          clock.next();
          assert.deepEqual(clock.delays, [10, 5]);
          assert.equal(clock.timers, 1);
          while (clock.next());
          assert.deepEqual(fired, [["a", 1010], ["next", 1015], ["c", 1100]]);
          assert.deepEqual(clock.delays, [10, 5, 85]);
        }),
    );
  },
});

Deno.test({
  name: "Deadlines: a deadline beyond setTimeout's range waits its longest delay, then the rest",
  ...sanitize,
  fn: () =>
    withFakeClock((clock) => {
      const deadlines = new Deadlines();
      let firedAt = 0;
      deadlines.add(2 ** 31 + 1000, () => firedAt = clock.now);
      // A longer delay would fire at once on every runtime.
      assert.equal(MAX_TIMER_MS, 2_147_483_647);
      assert.deepEqual(clock.delays, [2_147_483_647]);
      clock.next();
      assert.equal(firedAt, 0);
      assert.deepEqual(clock.delays, [2_147_483_647, 1001]);
      clock.next();
      assert.equal(firedAt, 1000 + 2 ** 31 + 1000);
    }),
});

Deno.test({
  name: "Deadlines: the idle timer is released 32 microtasks after the last deadline goes",
  ...sanitize,
  fn: () =>
    withFakeClock(async (clock) => {
      const deadlines = new Deadlines();
      deadlines.cancel(deadlines.add(1000, () => {}));
      for (let i = 0; i < 10; i++) await null;
      // Another call made and answered at once: the count starts again from here.
      deadlines.cancel(deadlines.add(1000, () => {}, clock.now));
      deadlines.cancel(deadlines.add(1000, () => {}, clock.now));
      for (let i = 0; i < 31; i++) await null;
      assert.equal(clock.timers, 1, "released before 32 idle microtasks");
      await null;
      assert.equal(clock.timers, 0, "still held after 32 idle microtasks");
      assert.deepEqual(clock.delays, [1000]);
    }),
});
