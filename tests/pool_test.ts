/**
 * The pool on its own, with a scripted WebSocket and, where time matters, a fake clock: ejection
 * of a server of a list (its growing period, its log line, what counts towards it, waiting it
 * out), the backoff and its reset after a stable connection only, giving up, a socket that opens
 * around `closeAll()` (closed, never used, waited for), which slots a server coming back wakes,
 * the least-busy pick; one opener per slot, a slot's loop ending once it is open, rounds of "try
 * every socket now", reports that call back into the pool, and the cause each close carries.
 */
import assert from "node:assert/strict";
import { EJECT_AFTER, Pool, type PoolReports, type SocketRef } from "../src/pool.ts";
import type { CloseCause, Connection } from "../src/connection.ts";
import { resolveOptions } from "../src/validate.ts";
import { type RealmClientOptions, RealmError, type WebSocketConstructor } from "../mod.ts";
import {
  type FakeClock,
  sanitize,
  ScriptedSocketBase,
  until,
  WELCOME,
  withFakeClock,
  within,
  withRandom,
} from "./_helpers.ts";

const A = "ws://127.0.0.1:1";
const B = "ws://127.0.0.1:2";

/** How an address answers a new socket: a handshake, a refusal, or nothing until the test says. */
type Answer = "open" | "refuse" | "hold";

/** The server's side of one socket the pool made. */
class ScriptedSocket extends ScriptedSocketBase {
  /** The code and reason of the pool's close, if it closed. */
  closedWith: [number, string] | undefined;
  constructor(readonly url: string, answer: Answer) {
    super();
    if (answer === "open") queueMicrotask(() => this.welcome());
    else if (answer === "refuse") queueMicrotask(() => this.refuse());
  }
  /** The server accepts the socket and greets it: the handshake of an open server. */
  welcome() {
    if (this.readyState !== 0) return;
    this.open();
    this.receive(WELCOME);
  }
  /** The socket cannot connect (Node 22's WebSocket reports only an error). */
  refuse() {
    if (this.readyState !== 0) return;
    this.readyState = 3;
    this.onerror?.(new Event("error"));
  }
  send(_text: string) {}
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.closedWith = [code, reason];
    queueMicrotask(() => this.onclose?.(new CloseEvent("close", { code, reason })));
  }
}

/** The sockets of one pool: how each address answers, and every socket made, in order. */
function network(answers: Record<string, Answer>) {
  const sockets: ScriptedSocket[] = [];
  const live = () => sockets.filter((socket) => socket.readyState !== 3).length;
  const net = {
    answers: new Map(Object.entries(answers)),
    sockets,
    /** Sockets not closed: connecting or open, as the servers see them. */
    live,
    /** The most sockets live at one time. */
    mostLive: 0,
    /** Sockets still connecting (held, or closed by the pool before they opened). */
    connecting: () => sockets.filter((socket) => socket.readyState === 0),
    WebSocket: undefined as unknown as WebSocketConstructor,
  };
  net.WebSocket = class extends ScriptedSocket {
    constructor(url: string) {
      super(url, net.answers.get(url) ?? "open");
      sockets.push(this);
      net.mostLive = Math.max(net.mostLive, live());
    }
  } as unknown as WebSocketConstructor;
  return net;
}

/**
 * A pool on a scripted network, with its reports recorded. A test that calls back into the pool
 * from a report sets it in `on`: it runs after the report is recorded.
 */
function pool(options: Partial<RealmClientOptions>, answers: Record<string, Answer> = {}) {
  const net = network(answers);
  const events: string[] = [];
  /** Each `reconnecting` report's attempt and delay. */
  const attempts: number[] = [];
  const delays: number[] = [];
  /** When each `connecting` was reported (`performance.now()`). */
  const connectingAt: number[] = [];
  const failures: RealmError[] = [];
  const gaveUp: RealmError[] = [];
  const closes: { socket: number; code: number; reason: string; cause: CloseCause }[] = [];
  const logs: { message: string; data?: Record<string, unknown>; at: number }[] = [];
  /** Each slot's open connection, as `opened` and `closed` told. */
  const open = new Map<number, Connection>();
  const on: Partial<PoolReports> = {};
  const reports: PoolReports = {
    opened(socket, connection) {
      events.push(`opened ${socket.index}`);
      open.set(socket.index, connection);
      on.opened?.(socket, connection);
    },
    accept: (socket, connection) => on.accept?.(socket, connection),
    frame: () => {},
    closed(socket, connection, code, reason, cause) {
      events.push(`closed ${socket.index} ${cause}`);
      closes.push({ socket: socket.index, code, reason, cause });
      open.delete(socket.index);
      on.closed?.(socket, connection, code, reason, cause);
    },
    reconnecting(socket, attempt, delay) {
      attempts.push(attempt);
      delays.push(delay);
      on.reconnecting?.(socket, attempt, delay);
    },
    connecting(socket, attempt) {
      events.push(`connecting ${socket.index}`);
      connectingAt.push(performance.now());
      on.connecting?.(socket, attempt);
    },
    failed(socket, error) {
      events.push(`failed ${socket.index}`);
      failures.push(error);
      on.failed?.(socket, error);
    },
    gaveUp(socket, error) {
      events.push(`gave up ${socket.index}`);
      gaveUp.push(error);
      on.gaveUp?.(socket, error);
    },
    tenantId: () => "tenant-a",
    log: (message, data) => void logs.push({ message, data, at: performance.now() }),
  };
  const resolved = resolveOptions({ model: "m", connectTimeout: 1000, ...options });
  const made = new Pool(resolved, reports);
  made.WebSocket = net.WebSocket;
  /** The socket `index` as reports name it. */
  const socket = (index: number): SocketRef => ({
    index,
    url: resolved.urls[index % resolved.urls.length],
  });
  return {
    pool: made,
    net,
    on,
    socket,
    open,
    events,
    attempts,
    delays,
    connectingAt,
    failures,
    gaveUp,
    closes,
    logs,
    /** The `server ejected` log lines, with when they were logged. */
    ejections: () =>
      logs.filter(({ message }) => message === "server ejected").map(({ data, at }) => ({
        ...data as { url: string; ms: number },
        at,
      })),
    /** Reopens every socket that closed other than by `closeAll()`, as the connector does. */
    reopenOnClose() {
      on.closed = (socket, _connection, _code, _reason, cause) => {
        if (cause !== "halt") made.reconnect(socket, cause === "reconnect");
      };
    },
  };
}

type Fixture = ReturnType<typeof pool>;

/** Stops the pool and lets the sockets it cancelled mid-handshake open, so that they close. */
async function shutdown(t: Fixture): Promise<void> {
  const closing = t.pool.closeAll("test over");
  for (const socket of t.net.connecting()) socket.welcome();
  await closing;
}

const { setTimeout: realSetTimeout } = globalThis;

/**
 * Lets every microtask run, with those they queue: whatever the pool does between two timers
 * (a scripted handshake or refusal takes microtasks only). Works under the fake clock.
 */
function turn(): Promise<void> {
  return new Promise((resolve) => realSetTimeout(resolve, 0));
}

/** Runs the fake clock's timers in order, each followed by what it starts, until `done()`. */
async function runUntil(clock: FakeClock, done: () => boolean, what: string): Promise<void> {
  await turn();
  for (let fired = 0; !done(); fired++) {
    assert.ok(fired < 100 && clock.next(), `no timer left to run before ${what}`);
    await turn();
  }
}

/** How a promise settled so far. */
function watch(promise: Promise<unknown>) {
  const seen: { state: "pending" | "resolved" | "rejected"; error?: RealmError } = {
    state: "pending",
  };
  promise.then(
    () => void (seen.state = "resolved"),
    (error) => {
      seen.state = "rejected";
      seen.error = error;
    },
  );
  return seen;
}

const unreachable = (url: string) =>
  `Could not connect to ${url}. Is the server running at that address?`;

// -- ejection ------------------------------------------------------------------------------------

Deno.test("pool: a server of a list is ejected after EJECT_AFTER failures in a row, for longer each time, until it is up again", async () => {
  await withFakeClock((clock) =>
    withRandom(0.5, async () => {
      const t = pool({
        url: [A, B],
        reconnectInterval: 1000,
        maxReconnectInterval: 10_000,
      }, { [B]: "refuse" });
      t.reopenOnClose();
      const down = () => t.pool.summary()[1];
      t.pool.openAll();
      await turn();
      t.pool.reconnect(t.socket(1), true);
      await runUntil(clock, () => down().failures === EJECT_AFTER - 1, "the failures");
      assert.equal(down().state, "down", "not yet");
      await runUntil(clock, () => t.ejections().length === 1, "the first ejection");
      const [first] = t.ejections();
      assert.deepEqual([first.url, first.ms], [B, 2000], "reconnectInterval · 2");
      assert.deepEqual([down().state, down().failures], ["ejected", 0]);
      clock.advance(first.at + 2000 - 1 - clock.now);
      assert.equal(down().state, "ejected", "1 ms before its end");
      clock.advance(1);
      assert.equal(down().state, "down", "at its end");
      await runUntil(clock, () => t.ejections().length === 2, "the second ejection");
      assert.equal(t.ejections()[1].ms, 4000, "twice the first");
      // One handshake later it is up, and its record starts over.
      t.net.answers.set(B, "open");
      await runUntil(clock, () => t.pool.openCount === 2, "the server back");
      assert.deepEqual(down(), {
        url: B,
        state: "up",
        openConnections: 1,
        callsOnTheWire: 0,
        failures: 0,
      });
      t.net.answers.set(B, "refuse");
      t.pool.drop(t.open.get(1)!, 1006, "test");
      await runUntil(clock, () => t.ejections().length === 3, "the next ejection");
      assert.equal(t.ejections()[2].ms, 2000, "the first ejection again");
      await shutdown(t);
      assert.equal(clock.timers, 0);
    })
  );
});

Deno.test("pool: a single server is never ejected, however often it fails", {
  ...sanitize,
}, async () => {
  const t = pool(
    { url: A, reconnectInterval: 0, maxReconnectAttempts: 3 * EJECT_AFTER },
    { [A]: "refuse" },
  );
  t.pool.reconnect(t.socket(0), true);
  await until(() => t.gaveUp.length === 1, 2000, "the give-up");
  assert.equal(t.failures.length, 3 * EJECT_AFTER, "every attempt was made");
  assert.deepEqual(t.ejections(), []);
  assert.deepEqual(t.pool.summary()[0], {
    url: A,
    state: "down",
    openConnections: 0,
    callsOnTheWire: 0,
    failures: 3 * EJECT_AFTER,
  });
  await shutdown(t);
});

Deno.test("pool: the ejection lasts reconnectInterval doubled, doubling up to maxReconnectInterval, and is logged", async () => {
  await withFakeClock((clock) =>
    withRandom(0.5, async () => {
      const t = pool({
        url: [A, B],
        reconnectInterval: 100,
        maxReconnectInterval: 300,
      }, { [B]: "refuse" });
      t.pool.reconnect(t.socket(1), true);
      await runUntil(clock, () => t.ejections().length === 3, "three ejections");
      assert.deepEqual(
        t.logs.filter(({ message }) => message === "server ejected").map(({ data }) => data),
        [{ url: B, ms: 200 }, { url: B, ms: 300 }, { url: B, ms: 300 }],
      );
      await shutdown(t);
    })
  );
});

Deno.test("pool: waiting out an ejection is no attempt, and no attempt starts during one", async (t) => {
  await t.step(
    "a slot of an ejected server waits for its end, then makes its attempt",
    () =>
      withFakeClock((clock) =>
        withRandom(0.5, async () => {
          // One attempt more than it takes to eject: waiting counted as an attempt would give up.
          const t = pool({
            url: [A, B],
            reconnectInterval: 50,
            maxReconnectAttempts: EJECT_AFTER + 1,
          }, { [A]: "refuse" });
          t.pool.reconnect(t.socket(0), true);
          await runUntil(clock, () => t.ejections().length === 1, "the ejection");
          const [{ at, ms }] = t.ejections();
          t.net.answers.set(A, "open");
          await runUntil(clock, () => t.pool.openCount === 1, "the attempt after the ejection");
          assert.deepEqual(t.attempts, [1, 2, 3, 4]);
          assert.deepEqual(t.gaveUp, []);
          assert.equal(t.connectingAt.filter((when) => at < when && when < at + ms).length, 0);
          assert.ok(t.connectingAt[3] >= at + ms, "not before the ejection ended");
          await shutdown(t);
        })
      ),
  );
  await t.step(
    "a slot whose server is ejected during its backoff wait waits for the end",
    () =>
      withFakeClock((clock) =>
        withRandom(0.25, async () => {
          const t = pool({ url: [A, B], connections: 5, reconnectInterval: 50 }, { [A]: "hold" });
          t.pool.openAll(); // slots 0, 2 and 4 on A (held), 1 and 3 on B (open)
          t.net.sockets[2].refuse();
          await turn();
          // Math.random() = 0.25: a 25 ms wait, shorter than the 100 ms ejection.
          t.pool.reconnect(t.socket(2), false);
          await turn();
          t.net.sockets[0].refuse();
          t.net.sockets[4].refuse();
          await turn();
          const [{ at, ms }] = t.ejections();
          assert.equal(ms, 100);
          t.net.answers.set(A, "open");
          await runUntil(clock, () => t.events.includes("opened 2"), "the slot's attempt");
          assert.deepEqual(t.delays, [25, 50]);
          assert.deepEqual(t.events.filter((event) => event.endsWith(" 2")), [
            "failed 2",
            "connecting 2",
            "opened 2",
          ]);
          assert.ok(t.connectingAt[0] >= at + ms, "not before the ejection ended");
          await shutdown(t);
        })
      ),
  );
});

Deno.test("pool: a failure that comes after closeAll() does not count towards ejection", {
  ...sanitize,
}, async () => {
  const t = pool({ url: [A, B] }, { [A]: "hold" });
  for (let i = 0; i < EJECT_AFTER; i++) {
    t.pool.reconnect(t.socket(0), true);
    await until(() => t.net.sockets.length === i + 1, 1000, "the held handshake");
    t.net.sockets[i].refuse(); // the attempt fails, but the pool only sees it after closeAll()
    await within(1000, t.pool.closeAll("client disconnect"), "closeAll()");
  }
  assert.deepEqual(
    [t.pool.summary()[0].state, t.pool.summary()[0].failures, t.ejections()],
    ["down", 0, []],
  );
  assert.deepEqual(t.failures, [], "no failure reported");
});

// -- backoff and giving up ----------------------------------------------------------------------

Deno.test("pool: only reconnect(socket, true) skips the first delay; then the backoff doubles up to maxReconnectAttempts", async () => {
  await withFakeClock((clock) =>
    withRandom(0.5, async () => {
      const t = pool({ url: A, reconnectInterval: 10, maxReconnectAttempts: 3 }, {
        [A]: "refuse",
      });
      // Math.random() = 0.5: each delay is the backoff step itself (10, 20, 40 ms).
      t.pool.reconnect(t.socket(0), true);
      await runUntil(clock, () => t.gaveUp.length === 1, "three attempts");
      assert.deepEqual(t.delays, [0, 20, 40]);
      t.pool.openAll(); // a new run: one attempt, and the counts start over
      await turn();
      t.pool.reconnect(t.socket(0), false);
      await runUntil(clock, () => t.gaveUp.length === 2, "three more attempts");
      assert.deepEqual(t.delays, [0, 20, 40, 10, 20, 40]);
      assert.deepEqual(
        t.failures.map((error) => [error.code, error.message, error.sent]),
        Array(7).fill(["CONNECTION_CLOSED", unreachable(A), false]),
      );
      // The give-up error says that nothing was sent, so a caller may safely send again.
      assert.deepEqual(
        t.gaveUp.map((error) => [error.code, error.message, error.sent]),
        Array(2).fill([
          "CONNECTION_CLOSED",
          `Gave up reconnecting to ${A} after 3 attempts (maxReconnectAttempts). ` +
          "Call connect() to try again.",
          false,
        ]),
      );
      assert.equal(t.pool.retryingCount, 0);
      // Finished attempts leave nothing behind (a long-lived client makes thousands).
      assert.deepEqual([t.net.live(), clock.timers], [0, 0]);
    })
  );
});

Deno.test("pool: a fatal error ends a slot's loop at once: a socket the owner refuses", {
  ...sanitize,
}, async () => {
  const t = pool({ url: A, reconnectInterval: 10 });
  const refusal = new RealmError("TENANT_MISMATCH", "another tenant");
  t.on.accept = () => refusal;
  t.pool.reconnect(t.socket(0), true);
  await until(() => t.gaveUp.length === 1, 1000, "the give-up");
  assert.deepEqual(t.events, ["connecting 0", "failed 0", "gave up 0"]);
  assert.deepEqual([t.failures, t.gaveUp], [[refusal], [refusal]]);
  assert.deepEqual(t.net.sockets[0].closedWith, [1000, "not used"]);
  assert.deepEqual([t.pool.openCount, t.pool.retryingCount], [0, 0]);
  await shutdown(t);
});

Deno.test("pool: the backoff starts over only after a connection that stayed up", async () => {
  await withFakeClock((clock) =>
    withRandom(0.5, async () => {
      const t = pool({ url: A, reconnectInterval: 20 });
      t.reopenOnClose();
      t.pool.openAll();
      await turn();
      // Dropped at once: a flapping server keeps its attempt count.
      t.pool.drop(t.open.get(0)!, 1006, "test");
      await runUntil(clock, () => t.pool.openCount === 1, "the first reopen");
      t.pool.drop(t.open.get(0)!, 1006, "test");
      await runUntil(clock, () => t.pool.openCount === 1, "the second reopen");
      assert.deepEqual(t.delays, [20, 40]);
      clock.advance(40); // up for 2 × reconnectInterval
      t.pool.drop(t.open.get(0)!, 1006, "test");
      await runUntil(clock, () => t.pool.openCount === 1, "the third reopen");
      assert.deepEqual(t.delays, [20, 40, 20]);
      await shutdown(t);
    })
  );
});

// -- closeAll() and the handshakes it cancels ---------------------------------------------------

Deno.test("pool: a socket that opens after closeAll() is closed, never put in a slot", {
  ...sanitize,
}, async () => {
  const t = pool({ url: A }, { [A]: "hold" });
  t.pool.openAll();
  const round = t.pool.round();
  const closing = t.pool.closeAll("client disconnect");
  t.net.sockets[0].welcome();
  await assert.rejects(round, (e: RealmError) => e.code === "ABORTED");
  await within(1000, closing, "closeAll()");
  assert.deepEqual(t.net.sockets[0].closedWith, [1000, ""]);
  assert.deepEqual([t.pool.openCount, [...t.pool.connections()]], [0, []]);
  assert.deepEqual(t.events, []);
});

Deno.test("pool: closeAll() waits for a socket it closed during its handshake", async () => {
  await withFakeClock(async () => {
    const t = pool({ url: A }, { [A]: "hold" });
    t.pool.openAll();
    const round = watch(t.pool.round());
    let closed = false;
    const closing = t.pool.closeAll("client disconnect").then(() => void (closed = true));
    await turn();
    assert.equal(round.state, "rejected");
    assert.deepEqual(
      [round.error?.code, round.error?.message, round.error?.sent],
      ["ABORTED", "The connection attempt was cancelled by disconnect().", false],
    );
    // The socket is still connecting: it can only be closed once it opens.
    assert.equal(closed, false, "closeAll() resolved while the socket was still open");
    t.net.sockets[0].welcome();
    await closing;
    assert.deepEqual(t.net.sockets[0].closedWith, [1000, ""]);
    assert.equal(t.pool.openCount, 0);
    assert.deepEqual(t.events, []);
  });
});

Deno.test("pool: a handshake that ends in the same turn as closeAll() is closed, not used", {
  ...sanitize,
}, async () => {
  const t = pool({ url: A }, { [A]: "hold" });
  t.pool.openAll();
  t.net.sockets[0].welcome(); // the connection is made, but the pool has not seen it yet
  await within(1000, t.pool.closeAll("client disconnect"), "closeAll()");
  assert.deepEqual(t.net.sockets[0].closedWith, [1000, "client disconnect"]);
  assert.equal(t.pool.openCount, 0);
  assert.deepEqual(t.events, [], "never reported open");
});

Deno.test(
  "pool: closeAll() then openAll() in the same turn: the next closeAll() still cancels the new handshake",
  {
    ...sanitize,
  },
  async () => {
    const t = pool({ url: A, connectTimeout: 10_000 }, { [A]: "hold" });
    t.pool.openAll();
    const closing = t.pool.closeAll("client disconnect");
    assert.equal(t.pool.openAll(), 1, "the new run makes its own attempt");
    assert.equal(t.net.sockets.length, 2);
    const closingAgain = t.pool.closeAll("client disconnect");
    for (const socket of t.net.sockets) socket.welcome();
    await within(1000, Promise.all([closing, closingAgain]), "closeAll()");
    assert.deepEqual(t.net.sockets.map((socket) => socket.closedWith), [[1000, ""], [1000, ""]]);
    assert.deepEqual(t.events, []);
  },
);

Deno.test(
  "pool: closeAll() during a reconnect's handshake reports no failure and leaves no slot reconnecting",
  {
    ...sanitize,
  },
  async () => {
    const t = pool({ url: A }, { [A]: "hold" });
    t.pool.reconnect(t.socket(0), true);
    await until(() => t.net.sockets.length === 1, 1000, "the held handshake");
    assert.equal(t.pool.retryingCount, 1);
    const closing = t.pool.closeAll("client disconnect");
    assert.equal(t.pool.retryingCount, 0);
    t.net.sockets[0].welcome();
    await within(1000, closing, "closeAll()");
    assert.deepEqual(t.events, ["connecting 0"]);
    // The next run reconnects the slot.
    t.net.answers.set(A, "open");
    t.pool.reconnect(t.socket(0), true);
    await until(() => t.pool.openCount === 1, 1000, "the next reconnect");
    assert.deepEqual(t.events, ["connecting 0", "connecting 0", "opened 0"]);
    await shutdown(t);
  },
);

Deno.test("pool: a reconnect started right after closeAll() is not ended by the old one", {
  ...sanitize,
}, async () => {
  const t = pool({ url: A, reconnectInterval: 10_000 });
  await withRandom(0.5, async () => {
    t.pool.reconnect(t.socket(0), false);
    await until(() => t.delays.length === 1, 1000, "the first backoff wait");
    void t.pool.closeAll("client disconnect");
    t.pool.reconnect(t.socket(0), false);
    await until(() => t.delays.length === 2, 1000, "the new backoff wait");
    await turn();
    assert.equal(t.pool.retryingCount, 1, "the new loop is still at it");
    t.pool.reconnect(t.socket(0), false);
    await turn();
    assert.deepEqual(t.delays, [10_000, 20_000]);
  });
  assert.deepEqual(t.events, [], "the old loop made no attempt");
  await shutdown(t);
  assert.equal(t.pool.retryingCount, 0);
});

Deno.test("pool: closeAll() closes the open sockets and cancels the other slots' handshakes, whichever finished first", async (t) => {
  for (const finishing of [0, 1]) {
    await t.step(`slot ${finishing} opens first`, () =>
      withFakeClock(async () => {
        const t = pool({ url: A, connections: 2, connectTimeout: 10_000 }, { [A]: "hold" });
        t.pool.openAll();
        t.net.sockets[finishing].welcome();
        await turn();
        let closed = false;
        const closing = t.pool.closeAll("client disconnect").then(() => void (closed = true));
        await turn();
        assert.equal(closed, false, "closeAll() resolved while a handshaking socket was open");
        t.net.sockets[1 - finishing].welcome();
        await closing;
        const closes = [[1000, "client disconnect"], [1000, ""]];
        assert.deepEqual(
          t.net.sockets.map((socket) => socket.closedWith),
          finishing ? closes.reverse() : closes,
        );
        assert.deepEqual(t.events, [`opened ${finishing}`, `closed ${finishing} halt`]);
      }));
  }
});

// -- which sockets are used, woken, left alone ----------------------------------------------------

Deno.test("pool: the least busy socket wins, the first of equals", { ...sanitize }, async () => {
  const t = pool({ url: A, connections: 3 });
  t.pool.openAll();
  await turn();
  const [a, b, c] = [0, 1, 2].map((index) => t.open.get(index)!);
  assert.equal(t.pool.leastBusy(), a, "all idle: the first");
  a.send("1", "{}");
  assert.equal(t.pool.leastBusy(), b);
  b.send("2", "{}");
  c.send("3", "{}");
  assert.equal(t.pool.leastBusy(), a, "all equal again: the first");
  c.settled("3");
  assert.equal(t.pool.leastBusy(), c);
  assert.equal(t.pool.openCount, 3);
  assert.deepEqual([...t.pool.connections()], [a, b, c]);
  await shutdown(t);
});

Deno.test("pool: a server coming back wakes only its own slots' backoff waits", {
  ...sanitize,
}, async () => {
  const t = pool(
    { url: [A, B], connections: 3, reconnectInterval: 10_000 },
    { [A]: "hold", [B]: "refuse" },
  );
  await withRandom(0.5, async () => {
    t.pool.openAll(); // slots 0 and 2 on A (held), 1 on B (refused)
    t.net.sockets[2].refuse();
    await turn();
    t.pool.reconnect(t.socket(1), false);
    t.pool.reconnect(t.socket(2), false);
    await until(() => t.delays.length === 2, 1000, "both backoff waits");
  });
  assert.deepEqual(t.delays, [10_000, 10_000]);
  t.net.answers.set(A, "open");
  t.net.sockets[0].welcome();
  await until(() => t.pool.openCount === 2, 1000, "the sibling slot, woken");
  assert.deepEqual(t.events, ["failed 2", "failed 1", "opened 0", "connecting 2", "opened 2"]);
  assert.equal(t.pool.retryingCount, 1, "the other server's slot still waits");
  await shutdown(t);
});

Deno.test("pool: reconnect() of a slot already reconnecting, or open, does nothing", {
  ...sanitize,
}, async () => {
  const t = pool({ url: A, reconnectInterval: 10_000 });
  await withRandom(0.5, async () => {
    t.pool.reconnect(t.socket(0), false);
    await until(() => t.delays.length === 1, 1000, "the backoff wait");
    t.pool.reconnect(t.socket(0), false);
    await turn();
  });
  assert.deepEqual(t.delays, [10_000]);
  assert.equal(t.pool.retryingCount, 1);
  await within(1000, t.pool.round(), "the round, which ends the wait");
  assert.equal(t.pool.openCount, 1);
  t.pool.reconnect(t.socket(0), true);
  t.pool.reopenDown(true);
  await turn();
  assert.deepEqual(t.delays, [10_000]);
  assert.deepEqual(t.events, ["connecting 0", "opened 0"]);
  assert.equal(t.net.sockets.length, 1);
  await shutdown(t);
});

Deno.test("pool: dropAllDead() and connections() skip slots without a socket (browser offline)", {
  ...sanitize,
}, async () => {
  const t = pool({ url: [A, B] }, { [A]: "refuse" });
  t.pool.openAll();
  await turn();
  const used = t.open.get(1)!;
  assert.deepEqual([...t.pool.connections()], [used]);
  t.pool.dropAllDead(1001, "browser offline");
  assert.equal(used.open, false);
  assert.deepEqual([t.pool.openCount, [...t.pool.connections()]], [0, []]);
  assert.deepEqual(t.events, ["failed 0", "opened 1", "closed 1 dropped"]);
  assert.deepEqual(t.closes, [{
    socket: 1,
    code: 1001,
    reason: "browser offline",
    cause: "dropped",
  }]);
  await shutdown(t);
});

Deno.test("pool: openAll() starts an attempt only for the slots neither opening nor open", {
  ...sanitize,
}, async () => {
  const t = pool({ url: [A, B] }, { [A]: "hold" });
  assert.equal(t.pool.openAll(), 2);
  await turn();
  assert.equal(t.pool.openAll(), 0, "one slot opening, the other open");
  await turn();
  t.net.sockets[0].welcome();
  await turn();
  assert.equal(t.pool.openAll(), 0, "both open");
  await turn();
  assert.equal(t.net.sockets.length, 2);
  assert.deepEqual(t.events, ["opened 1", "opened 0"]);
  assert.deepEqual(t.pool.summary().map(({ state, failures }) => [state, failures]), [
    ["up", 0],
    ["up", 0],
  ]);
  await shutdown(t);
});
