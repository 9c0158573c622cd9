import assert from "node:assert/strict";
import { type Call, type CallEnd, CallRegistry, type CallSpec, Deadlines } from "../src/calls.ts";
import { RealmError } from "../mod.ts";
import { delay, rejection, until, within } from "./_helpers.ts";

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
