import assert from "node:assert/strict";
import { Call, type CallEnd, CallRegistry, type CallSpec, Deadlines } from "../src/calls.ts";
import { RealmError } from "../mod.ts";
import { delay, rejection, until, withFakeClock, within } from "./_helpers.ts";

const timers = { sanitizeOps: true, sanitizeResources: true };

function spec(overrides: Partial<CallSpec> = {}): CallSpec {
  return {
    fn: "health",
    paramsJson: "{}",
    stream: false,
    timeout: 1000,
    idleTimeout: 1000,
    maxRetries: 0,
    ...overrides,
  };
}

function registry() {
  const ends: [string, CallEnd][] = [];
  const calls = new CallRegistry();
  const create = (s: CallSpec): Call => calls.create(s, (call, end) => ends.push([call.id, end]));
  return { calls, create, ends };
}

Deno.test({
  name: "a call settles exactly once and leaves the registry",
  ...timers,
  fn: async () => {
    const { calls, create, ends } = registry();
    const call = create(spec());
    assert.equal(calls.size, 1);
    call.complete({ status: "healthy" });
    call.complete({ status: "second" });
    call.fail(new RealmError("INTERNAL_ERROR", "late"));
    assert.deepEqual(await call.result, { status: "healthy", requestId: call.id });
    assert.equal(calls.size, 0);
    assert.deepEqual(ends, [[call.id, "answered"]]);
  },
});

Deno.test({
  name: "ids are unique among a client's calls",
  ...timers,
  fn: () => {
    const { create } = registry();
    const ids = new Set(Array.from({ length: 100 }, () => {
      const call = create(spec());
      call.complete(null);
      return call.id;
    }));
    assert.equal(ids.size, 100);
  },
});

Deno.test({
  name: "a call with no answer by its timeout rejects with TIMEOUT and says whether it was sent",
  ...timers,
  fn: async () => {
    const { calls, create, ends } = registry();
    const call = create(spec({ timeout: 10 }));
    call.sent = true;
    const error = await rejection(call.result, 1000, "the 10 ms timeout");
    assert.equal(error.code, "TIMEOUT");
    assert.equal(error.sent, true);
    assert.equal(error.requestId, call.id);
    assert.match(error.message, /within 10 ms/);
    assert.equal(calls.size, 0);
    assert.deepEqual(ends, [[call.id, "abandoned"]]);
  },
});

Deno.test({
  name:
    "a timeout says what the call waited for: a server to reach, or its answer behind other calls",
  ...timers,
  fn: async () => {
    const { create } = registry();
    const timedOut = async (setUp: (call: Call) => void) => {
      const call = create(spec({ timeout: 5 }));
      setUp(call);
      return (await rejection(call.result, 1000, "the 5 ms timeout")).message;
    };
    const see = "could be reached to send it (see the `error` events).";
    // Queued while no server could be reached: more time or sockets would not have helped.
    const unreachable = await timedOut((call) => call.waitsForServer = true);
    assert.equal(unreachable, `No answer to health (call 1) within 5 ms. No server ${see}`);
    const droppedThenUnreachable = await timedOut((call) => {
      call.attempts = 1;
      call.waitsForServer = true;
    });
    assert.match(
      droppedThenUnreachable,
      new RegExp(`Its connection closed, and no server ${see.replace(/[()`.]/g, "\\$&")}$`),
    );
    for (const message of [unreachable, droppedThenUnreachable]) {
      assert.doesNotMatch(message, /raise|connections/, "no advice that cannot help");
    }
    // Queued behind full sockets, or sent and waiting behind other calls: more time or sockets.
    for (const setUp of [() => {}, (call: Call) => call.sent = true]) {
      assert.match(
        await timedOut(setUp),
        /waited behind other calls: raise `timeout`, `connections` or `pipelining`\.$/,
      );
    }
  },
});

Deno.test({
  name: "an abort rejects at once with ABORTED, also when the signal was aborted before",
  ...timers,
  fn: async () => {
    const { calls, create } = registry();
    const controller = new AbortController();
    const call = create(spec({ signal: controller.signal, timeout: 60_000 }));
    controller.abort(new Error("user"));
    const error = await rejection(call.result, 1000, "the abort");
    assert.equal(error.code, "ABORTED");
    assert.equal(error.sent, false);
    assert.equal((error.cause as Error).message, "user");

    const early = create(spec({ signal: AbortSignal.abort(), timeout: 60_000 }));
    assert.equal((await rejection(early.result)).code, "ABORTED");
    assert.equal(calls.size, 0);
  },
});

Deno.test({
  name: "a stream is bounded by its idle gap after the first token, not by the total timeout",
  ...timers,
  fn: async () => {
    const { create } = registry();
    const tokens: string[] = [];
    const call = create(
      spec({ stream: true, timeout: 40, idleTimeout: 40, onToken: (t) => tokens.push(t) }),
    );
    // Tokens every 15 ms for 120 ms: three times the total timeout, never idle for 40 ms.
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 15));
      call.token(`t${i}`);
    }
    call.complete({ tokens_generated: 8 });
    assert.deepEqual(await within(1000, call.result, "the completed stream"), {
      tokens_generated: 8,
      requestId: call.id,
    });
    assert.equal(tokens.length, 8);

    const quiet = create(spec({ stream: true, timeout: 1000, idleTimeout: 20 }));
    quiet.token("only");
    const error = await rejection(quiet.result, 1000, "the 20 ms idle timeout");
    assert.equal(error.code, "TIMEOUT");
    assert.match(error.message, /no token for 20 ms/);
  },
});

Deno.test({
  name: "abandon() resolves silently and wake() never fires for a settled call",
  ...timers,
  fn: async () => {
    const { create, ends } = registry();
    const call = create(spec());
    let woke = false;
    call.wake(5, () => woke = true);
    call.abandon();
    assert.equal(await call.result, undefined);
    await new Promise((r) => setTimeout(r, 15));
    assert.equal(woke, false);
    assert.deepEqual(ends, [[call.id, "abandoned"]]);
  },
});

Deno.test({
  name: "Deadlines: one timer fires every deadline once, in order, never early",
  ...timers,
  fn: async () => {
    const deadlines = new Deadlines();
    const fired: [number, number][] = [];
    const start = performance.now();
    for (const ms of [30, 10, 20, 10, 0]) {
      deadlines.add(ms, () => fired.push([ms, performance.now() - start]));
    }
    assert.equal(deadlines.size, 5);
    await until(() => fired.length === 5, 2000, "all deadlines");
    assert.deepEqual(fired.map(([ms]) => ms), [0, 10, 10, 20, 30]);
    for (const [ms, at] of fired) assert.ok(at >= ms - 1, `${ms} ms fired at ${at}`);
    assert.equal(deadlines.size, 0);
  },
});

Deno.test({
  name: "Deadlines: cancelled deadlines never fire, and an empty set holds no timer",
  ...timers,
  fn: async () => {
    const deadlines = new Deadlines();
    let fired = 0;
    const all = Array.from({ length: 1000 }, (_, i) => deadlines.add(5 + i % 10, () => fired++));
    for (const deadline of all.slice(0, 999)) deadlines.cancel(deadline);
    deadlines.cancel(all[0]); // twice is harmless
    await until(() => fired === 1, 2000, "the one left");
    await delay(30);
    assert.equal(fired, 1);
    assert.equal(deadlines.size, 0);
    // The sanitizers fail this test if a timer was left behind.
  },
});

/** How a call's result settled, once it has (`"pending"` until then). */
function settledAs(call: Call): () => unknown {
  let outcome: unknown = "pending";
  call.result.then((value) => outcome = { value }, (error) => outcome = { error });
  return () => outcome;
}

Deno.test({
  name: "a silent stream ends 1 to 1.25 × idleTimeout after its last token, never sooner",
  ...timers,
  fn: () =>
    withFakeClock(async (clock) => {
      const { create } = registry();
      const call = create(spec({ stream: true, timeout: 1000, idleTimeout: 40 }));
      const outcome = settledAs(call);
      call.token("a"); // at 1000: the 1,000 ms timeout gives way to idle checks every 10 ms
      clock.advance(12);
      call.token("b"); // at 1012, just after the first check
      let endedAt = 0;
      while (!call.settled && clock.next()) endedAt = clock.now;
      await null;
      // Checks at 1020 (saw "b"), 1030, 1040, 1050 and 1060: four quiet quarters in a row.
      assert.equal(endedAt, 1060);
      assert.deepEqual(clock.delays, [1000, 10, 10, 10, 10, 10, 10]);
      const { error } = outcome() as { error: RealmError };
      assert.equal(error.code, "TIMEOUT");
      assert.match(error.message, /no token for 40 ms/);
      assert.equal(clock.timers, 0);
    }),
});

Deno.test({
  name: "deadlineAt is the timeout's instant until the first token, then Infinity",
  ...timers,
  fn: () =>
    withFakeClock(async () => {
      const { create } = registry();
      const call = create(spec({ stream: true, timeout: 500, idleTimeout: 40 }));
      assert.equal(call.deadlineAt, 1500);
      call.token("a");
      assert.equal(call.deadlineAt, Infinity); // a streaming call is not retried against a deadline
      call.complete({});
      assert.equal(call.deadlineAt, Infinity);
      await call.result;

      const unbounded = create(spec({ timeout: Infinity }));
      assert.equal(unbounded.deadlineAt, Infinity);
      unbounded.complete({});
      assert.equal(unbounded.deadlineAt, Infinity);
      await unbounded.result;
    }),
});

Deno.test({
  name: "a settled call ignores late tokens and answers, and holds no timer for them",
  ...timers,
  fn: async () => {
    const deadlines = new Deadlines();
    const seen: string[] = [];
    const ends: CallEnd[] = [];
    // A call made on its own, outside any registry.
    const call = new Call(
      "7",
      spec({ stream: true, onToken: (t) => seen.push(t) }),
      (_, end) => ends.push(end),
      deadlines,
    );
    call.complete({ tokens_generated: 0 });
    call.token("late");
    const lateAnswer = { tokens_generated: 1 };
    call.complete(lateAnswer);
    assert.deepEqual(await call.result, { tokens_generated: 0, requestId: "7" });
    assert.deepEqual(seen, []);
    assert.equal(call.tokens, 0);
    assert.equal(deadlines.size, 0);
    assert.deepEqual(lateAnswer, { tokens_generated: 1 }); // not even stamped with the id
    assert.deepEqual(ends, ["answered"]);
  },
});

Deno.test({
  name: "an answer that is not an object is handed over as is",
  ...timers,
  fn: async () => {
    const { create } = registry();
    for (const data of ["pong", 42, true, [1, 2], null]) {
      const call = create(spec());
      call.complete(data);
      assert.deepEqual(await call.result, data);
    }
  },
});

Deno.test({
  name: "every wake() wait is dropped when the call settles, also one set before another",
  ...timers,
  fn: async () => {
    const { create } = registry();
    const call = create(spec());
    const woke: string[] = [];
    call.wake(5, () => woke.push("first"));
    call.wake(10, () => woke.push("second"));
    call.fail(new RealmError("INTERNAL_ERROR", "failed"));
    await rejection(call.result, 1000, "the failure");
    await delay(30);
    assert.deepEqual(woke, []);
  },
});

Deno.test({
  name: "a signal shared by many calls keeps no listener for those that settled",
  ...timers,
  fn: async () => {
    const { create } = registry();
    const controller = new AbortController();
    const listening = new Set<unknown>();
    const { signal } = controller;
    const add = signal.addEventListener.bind(signal);
    const remove = signal.removeEventListener.bind(signal);
    signal.addEventListener = ((type: string, listener: EventListener, options?: unknown) => {
      listening.add(listener);
      add(type, listener, options as AddEventListenerOptions);
    }) as typeof signal.addEventListener;
    signal.removeEventListener = ((type: string, listener: EventListener) => {
      listening.delete(listener);
      remove(type, listener);
    }) as typeof signal.removeEventListener;
    const calls = Array.from({ length: 3 }, () => create(spec({ signal })));
    assert.equal(listening.size, 3);
    const failure = rejection(calls[1].result, 1000, "the failure");
    calls[0].complete({});
    calls[1].fail(new RealmError("INTERNAL_ERROR", "failed"));
    calls[2].abandon();
    assert.equal((await failure).code, "INTERNAL_ERROR");
    assert.equal(listening.size, 0);
    controller.abort();
    assert.deepEqual(await calls[0].result, { requestId: calls[0].id });
    assert.equal(await calls[2].result, undefined);
  },
});

Deno.test({
  name: "issued() knows exactly the ids this registry gave out",
  ...timers,
  fn: () => {
    const { calls, create } = registry();
    for (let i = 0; i < 3; i++) create(spec()).complete(null);
    for (const id of ["1", "2", "3"]) assert.equal(calls.issued(id), true, id);
    for (const id of ["0", "-1", "4", "1.5", "2.0", "01", " 1", "1e0", "0x1", "", "abc"]) {
      assert.equal(calls.issued(id), false, JSON.stringify(id));
    }
  },
});
