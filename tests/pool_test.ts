/**
 * The pool on its own, with a scripted WebSocket: ejection of a server of a list (its growing
 * period, its log line, what counts towards it, waiting it out), the backoff and its reset after a
 * stable connection only, `reconnect(slot, now)` and its give-up, a socket that opens around
 * `closeAll()` (closed, never used, waited for), which slots a server coming back wakes, and the
 * least-busy pick's tie-break.
 */
import assert from "node:assert/strict";
import { EJECT_AFTER, Pool, type PoolHandlers, type Slot } from "../src/pool.ts";
import { resolveOptions } from "../src/validate.ts";
import type { RealmClientOptions, RealmError, WebSocketConstructor } from "../mod.ts";
import {
  delay,
  failedWith,
  outcome,
  ScriptedSocketBase,
  until,
  WELCOME,
  within,
  withRandom,
} from "./_helpers.ts";

/** How each address answers: a handshake, a refusal, or nothing until the test says. */
const behaviour = new Map<string, "open" | "refuse" | "hold">();
/** The sockets of "hold" addresses, in the order they were made. */
const held: ScriptedSocket[] = [];

class ScriptedSocket extends ScriptedSocketBase {
  sent: string[] = [];
  /** The code and reason of the client's close, if it closed. */
  closedWith: [number, string] | undefined;
  constructor(readonly url: string) {
    super();
    const how = behaviour.get(url) ?? "open";
    if (how === "open") queueMicrotask(() => this.welcome());
    else if (how === "hold") held.push(this);
    else queueMicrotask(() => this.error());
  }
  /** The server accepts the socket and greets it: the handshake of an open server. */
  welcome() {
    if (this.readyState !== 0) return;
    this.open();
    this.receive(WELCOME);
  }
  /** The socket cannot connect (Node 22's WebSocket reports only an error). */
  error() {
    this.onerror?.(new Event("error"));
  }
  send(text: string) {
    this.sent.push(text);
  }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.closedWith = [code, reason];
    queueMicrotask(() => this.onclose?.(new CloseEvent("close", { code, reason })));
  }
}

function pool(options: Partial<RealmClientOptions>) {
  const events: string[] = [];
  const delays: number[] = [];
  /** When each `connecting` was reported (`performance.now()`). */
  const connectingAt: number[] = [];
  const failures: { error: RealmError; fatal: boolean }[] = [];
  const gaveUp: RealmError[] = [];
  const logs: [string, Record<string, unknown> | undefined][] = [];
  const handlers: PoolHandlers = {
    opened: (slot) => events.push(`opened ${slot.index}`),
    accept: () => undefined,
    frame: () => {},
    closed: (slot) => events.push(`closed ${slot.index}`),
    reconnecting: (_slot, _attempt, delay) => void delays.push(delay),
    connecting: (slot) => {
      events.push(`connecting ${slot.index}`);
      connectingAt.push(performance.now());
    },
    attemptFailed: (slot, error, fatal) => {
      events.push(`failed ${slot.index}`);
      failures.push({ error, fatal });
    },
    gaveUp: (slot, error) => {
      events.push(`gave up ${slot.index}`);
      gaveUp.push(error);
    },
    tenantId: () => "tenant-a",
    log: (message, data) => void logs.push([message, data]),
  };
  const made = new Pool(resolveOptions({ model: "m", connectTimeout: 1000, ...options }), handlers);
  made.WebSocket = ScriptedSocket as unknown as WebSocketConstructor;
  return { pool: made, events, delays, connectingAt, failures, gaveUp, logs };
}

/** The `server ejected` log lines' data. */
function ejections(logs: [string, Record<string, unknown> | undefined][]) {
  return logs.filter(([message]) => message === "server ejected").map(([, data]) => data);
}

Deno.test("pool: a server of a list is ejected after EJECT_AFTER failures, for longer each time", async () => {
  behaviour.set("ws://127.0.0.1:1", "open").set("ws://127.0.0.1:2", "refuse");
  const { pool: p } = pool({
    url: ["ws://127.0.0.1:1", "ws://127.0.0.1:2"],
    reconnectInterval: 1000,
    maxReconnectInterval: 10_000,
  });
  try {
    const [, down] = p.slots;
    const server = down.server;
    for (let i = 0; i < EJECT_AFTER - 1; i++) await assert.rejects(p.open(down));
    assert.equal(p.serverState(server), "down", "not yet");
    let before = performance.now();
    await assert.rejects(p.open(down));
    let after = performance.now();
    assert.equal(p.serverState(server), "ejected");
    // The first ejection lasts reconnectInterval · 2, the next twice that (bounds, not sleeps:
    // the periods are long enough that the test never waits on them).
    const first = server.ejectedUntil - 2000;
    assert.ok(
      before <= first && first <= after,
      `first ejection ${server.ejectedUntil - before} ms`,
    );
    before = performance.now();
    for (let i = 0; i < EJECT_AFTER; i++) await assert.rejects(p.open(down));
    after = performance.now();
    const second = server.ejectedUntil - 4000;
    assert.ok(
      before <= second && second <= after,
      `second ejection ${server.ejectedUntil - after} ms`,
    );
    assert.equal(server.ejections, 2);
    // One handshake later it is up, and its record starts over.
    behaviour.set("ws://127.0.0.1:2", "open");
    await p.open(down);
    assert.equal(p.serverState(server), "up");
    assert.deepEqual([server.failures, server.ejections, server.ejectedUntil], [0, 0, 0]);
  } finally {
    await p.closeAll();
  }
});

Deno.test("pool: a single server is never ejected, however often it fails", async () => {
  behaviour.set("ws://127.0.0.1:3", "refuse");
  const { pool: p } = pool({ url: "ws://127.0.0.1:3" });
  try {
    for (let i = 0; i < 3 * EJECT_AFTER; i++) await assert.rejects(p.open(p.slots[0]));
    assert.equal(p.serverState(p.slots[0].server), "down");
    assert.equal(p.slots[0].server.ejectedUntil, 0);
  } finally {
    await p.closeAll();
  }
});

Deno.test("pool: only reconnect(slot, true) skips the first delay; then the backoff doubles", async () => {
  behaviour.set("ws://127.0.0.1:4", "refuse");
  const { pool: p, delays, failures, gaveUp } = pool({
    url: "ws://127.0.0.1:4",
    reconnectInterval: 10,
    maxReconnectAttempts: 3,
  });
  const slot = p.slots[0];
  try {
    // Math.random() = 0.5: each delay is the backoff step itself (10, 20, 40 ms).
    await withRandom(0.5, () => within(2000, p.reconnect(slot, true), "three attempts"));
    assert.deepEqual(delays, [0, 20, 40]);
    slot.attempts = 0;
    await withRandom(0.5, () => within(2000, p.reconnect(slot), "three attempts"));
    assert.deepEqual(delays, [0, 20, 40, 10, 20, 40]);
    const unreachable =
      "Could not connect to ws://127.0.0.1:4. Is the server running at that address?";
    assert.deepEqual(
      failures.map(({ error, fatal }) => [error.code, error.message, error.sent, fatal]),
      Array(6).fill(["CONNECTION_CLOSED", unreachable, false, false]),
    );
    // The give-up error says that nothing was sent, so a caller may safely send again.
    assert.deepEqual(
      gaveUp.map((error) => [error.code, error.message, error.sent]),
      Array(2).fill([
        "CONNECTION_CLOSED",
        "Gave up reconnecting to ws://127.0.0.1:4 after 3 attempts (maxReconnectAttempts). " +
        "Call connect() to try again.",
        false,
      ]),
    );
    assert.equal(p.retryingCount, 0);
    // Finished attempts leave nothing to cancel (a long-lived client makes thousands).
    assert.equal(slot.handshakes.size, 0);
  } finally {
    await p.closeAll();
  }
});

Deno.test("pool: the backoff starts over only after a connection that stayed up", async () => {
  behaviour.set("ws://127.0.0.1:5", "open");
  const { pool: p } = pool({ url: "ws://127.0.0.1:5", reconnectInterval: 20 });
  try {
    const slot: Slot = p.slots[0];
    await p.open(slot);
    slot.attempts = 4;
    // Dropped at once: a flapping server keeps its attempt count.
    p.drop(slot, 1006, "test");
    await until(() => slot.connection === undefined, 1000, "the drop");
    assert.equal(slot.attempts, 4);
    await p.open(slot);
    slot.attempts = 4;
    slot.connectedAt = performance.now() - 40; // up for 2 × reconnectInterval
    p.drop(slot, 1006, "test");
    await until(() => slot.connection === undefined, 1000, "the second drop");
    assert.equal(slot.attempts, 0);
  } finally {
    await p.closeAll();
  }
});

Deno.test("pool: a socket that opens after closeAll() is closed, never put in a slot", async () => {
  behaviour.set("ws://127.0.0.1:6", "hold");
  held.length = 0;
  const { pool: p, events } = pool({ url: "ws://127.0.0.1:6" });
  const opening = p.open(p.slots[0]);
  await until(() => held.length === 1, 1000, "the held handshake");
  const closed = p.closeAll();
  held[0].welcome();
  await assert.rejects(opening, (e: { code?: string }) => e.code === "ABORTED");
  await closed;
  assert.equal(p.slots[0].connection, undefined);
  assert.deepEqual(events, []);
});

Deno.test("pool: the least busy socket wins, the first of equals", async () => {
  behaviour.set("ws://127.0.0.1:7", "open");
  const { pool: p } = pool({ url: "ws://127.0.0.1:7", connections: 3 });
  try {
    await Promise.all(p.slots.map((slot) => p.open(slot)));
    const [a, b, c] = p.slots.map((slot) => slot.connection!);
    assert.equal(p.leastBusy(), a, "all idle: the first");
    a.send("1", "{}");
    assert.equal(p.leastBusy(), b);
    b.send("2", "{}");
    c.send("3", "{}");
    assert.equal(p.leastBusy(), a, "all equal again: the first");
    c.settled("3");
    assert.equal(p.leastBusy(), c);
    assert.equal(p.openCount, 3);
    assert.deepEqual([...p.connections()], [a, b, c]);
  } finally {
    await p.closeAll();
  }
});

Deno.test("pool: closeAll() waits for a socket it closed during its handshake", async () => {
  behaviour.set("ws://127.0.0.1:8", "hold");
  held.length = 0;
  const { pool: p, events } = pool({ url: "ws://127.0.0.1:8" });
  const opening = outcome(p.open(p.slots[0]), 1000, "the cancelled attempt");
  await until(() => held.length === 1, 1000, "the held handshake");
  let closed = false;
  const closing = p.closeAll().then(() => void (closed = true));
  const error = failedWith(await opening, "ABORTED");
  assert.deepEqual(
    [error.message, error.sent],
    ["The connection attempt was cancelled by disconnect().", false],
  );
  // The socket is still connecting: it can only be closed once it opens.
  await delay(10);
  assert.equal(closed, false, "closeAll() resolved while the socket was still open");
  held[0].welcome();
  await within(1000, closing, "closeAll() once the socket closed");
  assert.deepEqual(held[0].closedWith, [1000, ""]);
  assert.equal(p.slots[0].connection, undefined);
  assert.deepEqual(events, []);
});

Deno.test("pool: a handshake that ends in the same turn as closeAll() is closed, not used", async () => {
  behaviour.set("ws://127.0.0.1:9", "hold");
  held.length = 0;
  const { pool: p, events } = pool({ url: "ws://127.0.0.1:9" });
  const opening = outcome(p.open(p.slots[0]), 1000, "the attempt");
  await until(() => held.length === 1, 1000, "the held handshake");
  held[0].welcome(); // the connection is made, but the pool has not seen it yet
  const closing = p.closeAll();
  failedWith(await opening, "ABORTED");
  await within(1000, closing, "closeAll()");
  assert.deepEqual(held[0].closedWith, [1000, "client disconnect"]);
  assert.equal(p.slots[0].connection, undefined);
  assert.equal(p.openCount, 0);
  assert.deepEqual(events, [], "never reported open");
});

Deno.test("pool: sockets surplus to a slot already open are closed and never eject its server", async () => {
  behaviour.set("ws://127.0.0.1:10", "open").set("ws://127.0.0.1:11", "open");
  const { pool: p, events } = pool({ url: ["ws://127.0.0.1:10", "ws://127.0.0.1:11"] });
  try {
    const slot = p.slots[0];
    // Two attempts for one slot (connect() twice): the first fills it, the second is surplus.
    const attempts = [p.open(slot), p.open(slot)];
    await p.open(slot).catch(() => {});
    const results = await Promise.all(attempts.map((a) => outcome(a, 1000, "an attempt")));
    assert.ok("value" in results[0]);
    failedWith(results[1], "ABORTED");
    const first = slot.connection;
    for (let i = 0; i < EJECT_AFTER; i++) {
      failedWith(await outcome(p.open(slot), 1000, "a surplus attempt"), "ABORTED");
    }
    assert.equal(slot.connection, first, "the slot keeps its socket");
    assert.deepEqual([slot.server.failures, slot.server.ejectedUntil], [0, 0]);
    assert.equal(p.serverState(slot.server), "up");
    assert.deepEqual(events, ["opened 0"]);
  } finally {
    await p.closeAll();
  }
});

Deno.test("pool: a failure that comes after closeAll() does not count towards ejection", async () => {
  behaviour.set("ws://127.0.0.1:12", "hold").set("ws://127.0.0.1:13", "open");
  held.length = 0;
  const { pool: p } = pool({ url: ["ws://127.0.0.1:12", "ws://127.0.0.1:13"] });
  const server = p.slots[0].server;
  for (let i = 0; i < EJECT_AFTER; i++) {
    const opening = outcome(p.open(p.slots[0]), 1000, "the attempt");
    await until(() => held.length === i + 1, 1000, "the held handshake");
    held[i].error(); // the attempt fails, but the pool only sees it after closeAll()
    const closing = p.closeAll();
    failedWith(await opening, "CONNECTION_CLOSED");
    await within(1000, closing, "closeAll()");
  }
  assert.deepEqual([server.failures, server.ejections, server.ejectedUntil], [0, 0, 0]);
  assert.equal(p.serverState(server), "down");
});

Deno.test("pool: closeAll() then open() in the same turn: the next closeAll() still cancels the new handshake", async () => {
  behaviour.set("ws://127.0.0.1:14", "hold");
  held.length = 0;
  const { pool: p } = pool({ url: "ws://127.0.0.1:14", connectTimeout: 10_000 });
  const slot = p.slots[0];
  const first = outcome(p.open(slot), 1000, "the first attempt");
  await until(() => held.length === 1, 1000, "the first handshake");
  const closing = p.closeAll();
  const second = outcome(p.open(slot), 1000, "the second attempt, cancelled by closeAll()");
  failedWith(await first, "ABORTED");
  assert.equal(held.length, 2);
  const closingAgain = p.closeAll();
  failedWith(await second, "ABORTED");
  for (const socket of held) socket.welcome();
  await within(1000, Promise.all([closing, closingAgain]), "closeAll()");
  assert.deepEqual(held.map((socket) => socket.closedWith), [[1000, ""], [1000, ""]]);
});

Deno.test("pool: a server coming back wakes only its own slots' backoff waits", async () => {
  behaviour.set("ws://127.0.0.1:15", "open").set("ws://127.0.0.1:16", "open");
  const { pool: p, events, delays } = pool({
    url: ["ws://127.0.0.1:15", "ws://127.0.0.1:16"],
    connections: 3,
    reconnectInterval: 10_000,
  });
  const [first, other, sibling] = p.slots; // servers 15, 16, 15
  const waits = await withRandom(0.5, async () => {
    const waits = [p.reconnect(other), p.reconnect(sibling)];
    await until(() => delays.length === 2, 1000, "both backoff waits");
    return waits;
  });
  try {
    assert.deepEqual(delays, [10_000, 10_000]);
    await p.open(first);
    await until(() => sibling.connection !== undefined, 1000, "the sibling slot, woken");
    assert.deepEqual(events, ["opened 0", "connecting 2", "opened 2"]);
    assert.equal(other.retrying, true, "the other server's slot still waits");
  } finally {
    await p.closeAll();
    await within(1000, Promise.all(waits), "the reconnect loops, ended by closeAll()");
  }
});

Deno.test("pool: reconnect() of a slot already reconnecting, or open, does nothing", async () => {
  behaviour.set("ws://127.0.0.1:17", "open");
  const { pool: p, events, delays } = pool({ url: "ws://127.0.0.1:17", reconnectInterval: 10_000 });
  const slot = p.slots[0];
  try {
    // Returned in an object: an async function's returned promise would be awaited.
    const { first } = await withRandom(0.5, async () => {
      const first = p.reconnect(slot);
      await until(() => delays.length === 1, 1000, "the backoff wait");
      await within(100, p.reconnect(slot), "a second reconnect() while reconnecting");
      return { first };
    });
    assert.deepEqual(delays, [10_000]);
    assert.equal(p.retryingCount, 1);
    p.retryNow();
    await within(1000, first, "the reconnect, woken by retryNow()");
    assert.equal(p.openCount, 1);
    await within(100, p.reconnect(slot, true), "reconnect() of an open slot");
    assert.deepEqual(delays, [10_000]);
    assert.deepEqual(events, ["connecting 0", "opened 0"]);
  } finally {
    await p.closeAll();
  }
});

Deno.test("pool: the ejection lasts reconnectInterval doubled, doubling up to maxReconnectInterval, and is logged", async () => {
  behaviour.set("ws://127.0.0.1:18", "open").set("ws://127.0.0.1:19", "refuse");
  const { pool: p, logs } = pool({
    url: ["ws://127.0.0.1:18", "ws://127.0.0.1:19"],
    reconnectInterval: 100,
    maxReconnectInterval: 300,
  });
  try {
    const down = p.slots[1];
    const periods: [number, number][] = [];
    for (let ejection = 0; ejection < 2; ejection++) {
      const before = performance.now();
      for (let i = 0; i < EJECT_AFTER; i++) await assert.rejects(p.open(down));
      const after = performance.now();
      periods.push([down.server.ejectedUntil - after, down.server.ejectedUntil - before]);
    }
    const [[firstMin, firstMax], [secondMin, secondMax]] = periods;
    assert.ok(firstMin <= 200 && 200 <= firstMax, `first ejection ${firstMin}–${firstMax} ms`);
    assert.ok(secondMin <= 300 && 300 <= secondMax, `second ejection ${secondMin}–${secondMax} ms`);
    assert.deepEqual(ejections(logs), [
      { url: "ws://127.0.0.1:19", ms: 200 },
      { url: "ws://127.0.0.1:19", ms: 300 },
    ]);
  } finally {
    await p.closeAll();
  }
});

Deno.test("pool: waiting out an ejection is no attempt, and no attempt starts during one", async (t) => {
  await t.step(
    "a slot of an ejected server waits for its end, then makes its attempt",
    async () => {
      behaviour.set("ws://127.0.0.1:20", "refuse").set("ws://127.0.0.1:21", "open");
      const { pool: p, events, delays, connectingAt } = pool({
        url: ["ws://127.0.0.1:20", "ws://127.0.0.1:21"],
        reconnectInterval: 50,
        maxReconnectAttempts: 1,
      });
      try {
        const slot = p.slots[0];
        for (let i = 0; i < EJECT_AFTER; i++) await assert.rejects(p.open(slot));
        const ejectedUntil = slot.server.ejectedUntil;
        assert.ok(ejectedUntil > performance.now());
        behaviour.set("ws://127.0.0.1:20", "open");
        await within(1000, p.reconnect(slot, true), "the reconnect after the ejection");
        assert.deepEqual(events, ["connecting 0", "opened 0"], "one attempt, no give-up");
        assert.deepEqual(delays, [0]);
        assert.ok(connectingAt[0] >= ejectedUntil, "not before the ejection ended");
      } finally {
        await p.closeAll();
      }
    },
  );
  await t.step(
    "a slot whose server is ejected during its backoff wait waits for the end",
    async () => {
      behaviour.set("ws://127.0.0.1:22", "refuse").set("ws://127.0.0.1:23", "open");
      const { pool: p, events, delays, connectingAt } = pool({
        url: ["ws://127.0.0.1:22", "ws://127.0.0.1:23"],
        connections: 3,
        reconnectInterval: 50,
      });
      const [first, , sibling] = p.slots; // both on server 22
      let waiting: Promise<void> | undefined;
      try {
        // Math.random() = 0.25: a 25 ms wait, shorter than the 100 ms ejection. The three
        // refusals that eject the server run in microtasks, so before that wait can end.
        const ejectedUntil = await withRandom(0.25, async () => {
          waiting = p.reconnect(sibling);
          for (let i = 0; i < EJECT_AFTER; i++) await assert.rejects(p.open(first));
          return first.server.ejectedUntil;
        });
        assert.deepEqual(delays, [25]);
        assert.ok(ejectedUntil > performance.now());
        behaviour.set("ws://127.0.0.1:22", "open");
        await within(2000, waiting!, "the reconnect after the ejection");
        assert.deepEqual(events, ["connecting 2", "opened 2"]);
        assert.ok(connectingAt[0] >= ejectedUntil, "not before the ejection ended");
      } finally {
        await p.closeAll();
      }
    },
  );
});

Deno.test("pool: closeAll() during a reconnect's handshake reports no failure and leaves no slot reconnecting", async () => {
  behaviour.set("ws://127.0.0.1:24", "hold");
  held.length = 0;
  const { pool: p, events } = pool({ url: "ws://127.0.0.1:24" });
  const slot = p.slots[0];
  try {
    const reconnecting = p.reconnect(slot, true);
    await until(() => held.length === 1, 1000, "the held handshake");
    assert.equal(p.retryingCount, 1);
    const closing = p.closeAll();
    assert.equal(p.retryingCount, 0);
    await within(1000, reconnecting, "the reconnect, ended by closeAll()");
    held[0].welcome();
    await within(1000, closing, "closeAll()");
    assert.deepEqual(events, ["connecting 0"]);
    // The next run reconnects the slot.
    behaviour.set("ws://127.0.0.1:24", "open");
    await within(1000, p.reconnect(slot, true), "the next reconnect");
    assert.deepEqual(events, ["connecting 0", "connecting 0", "opened 0"]);
  } finally {
    await p.closeAll();
  }
});

Deno.test("pool: a reconnect started right after closeAll() is not ended by the old one", async () => {
  behaviour.set("ws://127.0.0.1:25", "open");
  const { pool: p, delays } = pool({ url: "ws://127.0.0.1:25", reconnectInterval: 10_000 });
  const slot = p.slots[0];
  await withRandom(0.5, async () => {
    const old = p.reconnect(slot);
    await until(() => delays.length === 1, 1000, "the first backoff wait");
    void p.closeAll();
    const fresh = p.reconnect(slot);
    await within(1000, old, "the old reconnect, ended by closeAll()");
    await until(() => delays.length === 2, 1000, "the new backoff wait");
    assert.equal(p.retryingCount, 1, "the new reconnect is still at it");
    await within(100, p.reconnect(slot), "a third reconnect()");
    assert.deepEqual(delays, [10_000, 20_000]);
    await p.closeAll();
    await within(1000, fresh, "the new reconnect, ended by closeAll()");
  });
});

Deno.test("pool: drop() and connections() skip slots without a socket (browser offline, visibility)", async () => {
  behaviour.set("ws://127.0.0.1:26", "open");
  const { pool: p, events } = pool({ url: "ws://127.0.0.1:26", connections: 2 });
  try {
    const [empty, used] = p.slots;
    await p.open(used);
    assert.deepEqual([...p.connections()], [used.connection]);
    p.drop(empty, 1001, "browser offline");
    assert.equal(p.openCount, 1);
    const socket = used.connection!;
    p.drop(used, 1001, "browser offline");
    assert.equal(socket.open, false);
    assert.deepEqual([...p.connections()], []);
    assert.deepEqual(events, ["opened 1", "closed 1"]);
  } finally {
    await p.closeAll();
  }
});

Deno.test("pool: closeAll() cancels every handshake of a slot, whichever of two attempts ended first", async (t) => {
  for (const [name, finishing] of [["the first", 0], ["the second", 1]] as const) {
    await t.step(`${name} attempt fills the slot`, async () => {
      behaviour.set("ws://127.0.0.1:27", "hold");
      held.length = 0;
      const { pool: p, events } = pool({ url: "ws://127.0.0.1:27", connectTimeout: 10_000 });
      const slot = p.slots[0];
      // Two attempts for one slot (connect() twice); one completes, the other still handshakes.
      const attempts = [p.open(slot), p.open(slot)].map((a) => outcome(a, 1000, "an attempt"));
      held[finishing].welcome();
      assert.ok("value" in await attempts[finishing]);
      let closed = false;
      const closing = p.closeAll().then(() => void (closed = true));
      failedWith(await attempts[1 - finishing], "ABORTED");
      await delay(10);
      assert.equal(closed, false, "closeAll() resolved while a handshaking socket was open");
      held[1 - finishing].welcome();
      await within(1000, closing, "closeAll() once both sockets closed");
      const closes = [[1000, "client disconnect"], [1000, ""]];
      assert.deepEqual(
        held.map((socket) => socket.closedWith),
        finishing ? closes.reverse() : closes,
      );
      assert.deepEqual(events, ["opened 0", "closed 0"]);
    });
  }
});
