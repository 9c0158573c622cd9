/**
 * The pool on its own, with a scripted WebSocket and, where time matters, a fake clock: ejection
 * of a server of a list (its growing period, its log line, what counts towards it, waiting it
 * out), the backoff and its reset after a stable connection only, giving up, a socket that opens
 * around `closeAll()` (closed, never used, waited for), which slots a server coming back wakes,
 * the least-busy pick; one opener per slot, a slot's loop ending once it is open, rounds of "try
 * every socket now", reports that call back into the pool, and the cause each close carries.
 *
 * Tests on real timers pass `sanitize` (Deno 2 leaves its leak sanitizers off by default): a
 * timer the pool leaves armed fails them. Tests on the fake clock check `clock.timers` instead.
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

/**
 * Stops the pool and lets the sockets it cancelled mid-handshake open, so that they close; on the
 * fake clock, checks that the pool left no timer armed.
 */
async function shutdown(t: Fixture, clock?: FakeClock): Promise<void> {
  const closing = t.pool.closeAll("test over");
  for (const socket of t.net.connecting()) socket.welcome();
  await closing;
  if (clock) assert.equal(clock.timers, 0, "a timer left armed");
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

const unreachable = (url: string) => `Could not connect to ${url}: is a server running there?`;

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
      await shutdown(t, clock);
      assert.equal(clock.timers, 0);
    })
  );
});

Deno.test("pool: a single server is never ejected, however often it fails", sanitize, async () => {
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
      await shutdown(t, clock);
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
          await shutdown(t, clock);
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
          await shutdown(t, clock);
        })
      ),
  );
});

Deno.test(
  "pool: a failure that comes after closeAll() does not count towards ejection",
  sanitize,
  async () => {
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
  },
);

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

Deno.test(
  "pool: a fatal error ends a slot's loop at once: a socket the owner refuses",
  sanitize,
  async () => {
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
  },
);

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
      await shutdown(t, clock);
    })
  );
});

// -- closeAll() and the handshakes it cancels ---------------------------------------------------

Deno.test(
  "pool: a socket that opens after closeAll() is closed, never put in a slot",
  sanitize,
  async () => {
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
  },
);

Deno.test("pool: closeAll() waits for a socket it closed during its handshake", async () => {
  await withFakeClock(async (clock) => {
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
    assert.equal(clock.timers, 0, "the close grace ended with the close");
  });
});

Deno.test(
  "pool: a handshake that ends in the same turn as closeAll() is closed, not used",
  sanitize,
  async () => {
    const t = pool({ url: A }, { [A]: "hold" });
    t.pool.openAll();
    t.net.sockets[0].welcome(); // the connection is made, but the pool has not seen it yet
    await within(1000, t.pool.closeAll("client disconnect"), "closeAll()");
    assert.deepEqual(t.net.sockets[0].closedWith, [1000, "client disconnect"]);
    assert.equal(t.pool.openCount, 0);
    assert.deepEqual(t.events, [], "never reported open");
  },
);

Deno.test(
  "pool: closeAll() then openAll() in the same turn: the next closeAll() still cancels the new handshake",
  sanitize,
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
  sanitize,
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

Deno.test(
  "pool: a reconnect started right after closeAll() is not ended by the old one",
  sanitize,
  async () => {
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
  },
);

Deno.test("pool: closeAll() closes the open sockets and cancels the other slots' handshakes, whichever finished first", async (t) => {
  for (const finishing of [0, 1]) {
    await t.step(`slot ${finishing} opens first`, () =>
      withFakeClock(async (clock) => {
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
        assert.equal(clock.timers, 0, "the close graces ended with the closes");
      }));
  }
});

// -- which sockets are used, woken, left alone ----------------------------------------------------

/** The pool's pick with `Math.random` returning `random`. */
function pickWith(pool: Pool, random: number) {
  const saved = Math.random;
  Math.random = () => random;
  try {
    return pool.leastBusy();
  } finally {
    Math.random = saved;
  }
}

Deno.test("pool: the least busy socket wins; equals are picked at random", sanitize, async () => {
  const t = pool({ url: A, connections: 3 });
  t.pool.openAll();
  await turn();
  const [a, b, c] = [0, 1, 2].map((index) => t.open.get(index)!);
  // Each equal socket after the first replaces the pick with a chance of 1 in (equals so far).
  assert.equal(pickWith(t.pool, 0.99), a, "all idle, 0.99");
  assert.equal(pickWith(t.pool, 0), c, "all idle, 0");
  assert.equal(
    pickWith(t.pool, 0.4),
    b,
    "0.4: b replaces a (0.4·2 < 1), c does not (0.4·3 ≥ 1)",
  );
  a.send("1", "{}");
  assert.equal(pickWith(t.pool, 0.99), b);
  assert.equal(pickWith(t.pool, 0), c);
  b.send("2", "{}");
  c.send("3", "{}");
  assert.equal(pickWith(t.pool, 0.99), a, "all equal again");
  c.settled("3");
  assert.equal(pickWith(t.pool, 0), c, "the only least busy");
  assert.equal(t.pool.openCount, 3);
  assert.deepEqual([...t.pool.connections()], [a, b, c]);
  await shutdown(t);
});

Deno.test(
  "pool: a socket with `pipelining` calls on it takes no more; none with room, none",
  sanitize,
  async () => {
    const t = pool({ url: A, connections: 2, pipelining: 2 });
    t.pool.openAll();
    await turn();
    const [a, b] = [0, 1].map((index) => t.open.get(index)!);
    for (const id of ["1", "2"]) a.send(id, "{}");
    assert.equal(t.pool.leastBusy(), b);
    b.send("3", "{}");
    assert.equal(t.pool.leastBusy(), b, "one call, room for one more");
    b.send("4", "{}");
    assert.equal(t.pool.leastBusy(), undefined, "both full: the call waits in the client");
    a.settled("1");
    assert.equal(t.pool.leastBusy(), a);
    await shutdown(t);
  },
);

Deno.test(
  "pool: a call avoids the server its socket closed on while another server is open",
  sanitize,
  async () => {
    const t = pool({ url: [A, B], connections: 2 });
    t.pool.openAll();
    await turn();
    const [a, b] = [0, 1].map((index) => t.open.get(index)!);
    b.send("1", "{}");
    b.send("2", "{}");
    assert.equal(t.pool.leastBusy(), a, "least busy");
    assert.equal(t.pool.leastBusy(A), b, "busier, but not the server to avoid");
    t.pool.drop(b, 1006, "gone");
    assert.equal(t.pool.leastBusy(B), a, "avoided, or nothing: the only open server");
    await shutdown(t);
  },
);

Deno.test(
  "pool: a server coming back wakes only its own slots' backoff waits",
  sanitize,
  async () => {
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
  },
);

Deno.test(
  "pool: reconnect() of a slot already reconnecting, or open, does nothing",
  sanitize,
  async () => {
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
  },
);

Deno.test(
  "pool: dropAllDead() and connections() skip slots without a socket (browser offline)",
  sanitize,
  async () => {
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
  },
);

Deno.test(
  "pool: openAll() starts an attempt only for the slots neither opening nor open",
  sanitize,
  async () => {
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
  },
);

// -- one opener per slot --------------------------------------------------------------------------

Deno.test(
  "pool: a slot has one opener: reconnect(), round(), reopenDown() and openAll() during its attempt or its backoff open no second socket",
  sanitize,
  async () => {
    const t = pool({ url: [A, B], reconnectInterval: 10_000 }, { [A]: "hold", [B]: "hold" });
    t.reopenOnClose();
    /** Everything that may start an attempt, asked while each slot's attempt runs. */
    const askAgain = () => {
      for (const index of [0, 1]) {
        t.pool.reconnect(t.socket(index), true);
        t.pool.reconnect(t.socket(index), false);
      }
      t.pool.reopenDown(true);
      t.pool.reopenDown(false);
      assert.equal(t.pool.openAll(), 0);
      return t.pool.round();
    };
    // During a run's first attempts.
    assert.equal(t.pool.openAll(), 2);
    const first = askAgain();
    await turn();
    assert.equal(t.net.sockets.length, 2, "one socket per slot");
    for (const socket of t.net.sockets) socket.welcome();
    await within(1000, first, "the round");
    // During the attempts of the slots' loops (reconnect(): every socket dropped and reopened).
    t.pool.dropAll();
    await turn();
    assert.equal(t.net.sockets.length, 4, "each slot's loop made its attempt");
    const second = askAgain();
    await turn();
    assert.equal(t.net.sockets.length, 4, "one socket per slot");
    for (const socket of t.net.connecting()) socket.welcome();
    await within(1000, second, "the round");
    assert.equal(t.pool.openCount, 2);
    // During the slots' backoff waits (a new run after a stop): only a round wakes them.
    await t.pool.closeAll("client disconnect");
    await withRandom(0.5, async () => {
      for (const index of [0, 1]) t.pool.reconnect(t.socket(index), false);
      await turn();
    });
    assert.deepEqual(t.delays.slice(-2), [10_000, 10_000]);
    for (const index of [0, 1]) t.pool.reconnect(t.socket(index), false);
    t.pool.reopenDown(false);
    assert.equal(t.pool.openAll(), 0);
    await turn();
    assert.equal(t.net.sockets.length, 4, "no attempt while they wait");
    const third = t.pool.round();
    await turn();
    assert.equal(t.net.sockets.length, 6, "one attempt per slot");
    for (const socket of t.net.connecting()) socket.welcome();
    await within(1000, third, "the round");
    assert.equal(t.net.mostLive, 2, "never more sockets than `connections`");
    await shutdown(t);
  },
);

Deno.test("pool: a slot's reconnect loop ends once its socket is open: no more sockets, timers or reports", async () => {
  await withFakeClock((clock) =>
    withRandom(0.5, async () => {
      const t = pool({ url: [A, B], reconnectInterval: 100 });
      t.reopenOnClose();
      t.pool.openAll();
      await turn();
      // connect() then reconnect(): every socket dropped, reopened at once, a round waiting.
      t.pool.dropAll();
      const round = watch(t.pool.round());
      await turn();
      assert.equal(round.state, "resolved");
      assert.equal(t.pool.openCount, 2);
      assert.deepEqual([t.pool.retryingCount, clock.timers], [0, 0], "no loop left waiting");
      const made = t.net.sockets.length;
      const reported = t.events.length;
      clock.advance(10 * 60_000);
      await turn();
      assert.equal(t.net.sockets.length, made, "no socket opened afterwards");
      assert.equal(t.events.length, reported, "nothing reported afterwards");
      // Asked again while open: nothing starts.
      t.pool.reconnect(t.socket(0), false);
      t.pool.reopenDown(false);
      await t.pool.round();
      await turn();
      assert.deepEqual([t.net.sockets.length, clock.timers], [made, 0]);
      // The loop can run again: the server closes a socket, and its slot reopens.
      t.net.sockets[2].serverClose(1011, "restart"); // slot 0's (the first two were dropped)
      await runUntil(clock, () => t.pool.openCount === 2, "the reopen");
      assert.equal(t.net.sockets.length, made + 1);
      await shutdown(t, clock);
    })
  );
});

// -- rounds ---------------------------------------------------------------------------------------

Deno.test("pool: round() during an attempt that fails: the slot tries again at once, and the round settles with that attempt's outcome", async (t) => {
  for (const [outcome, end] of [["opens", "welcome"], ["fails", "refuse"]] as const) {
    await t.step(
      `the next attempt ${outcome}`,
      () =>
        withFakeClock((clock) =>
          withRandom(0.5, async () => {
            const t = pool({ url: A, reconnectInterval: 1000 }, { [A]: "hold" });
            t.pool.reconnect(t.socket(0), true);
            await turn();
            const start = clock.now;
            const round = watch(t.pool.round());
            t.net.sockets[0].refuse();
            await turn();
            assert.equal(round.state, "pending", "the attempt under way does not answer it");
            assert.equal(t.net.sockets.length, 2, "the slot tried again");
            assert.deepEqual([t.delays, clock.now], [[0, 0], start], "at once");
            t.net.sockets[1][end]();
            await turn();
            if (end === "welcome") assert.equal(round.state, "resolved");
            else {
              assert.equal(round.state, "rejected");
              assert.equal(round.error?.message, unreachable(A));
              // The loop goes on with its backoff (attempt 2: 2000 ms), the "now" used up.
              assert.deepEqual(t.delays, [0, 0, 2000]);
            }
            await shutdown(t, clock);
          })
        ),
    );
  }
});

Deno.test("pool: a round asked between a slot's attempts is answered by its next one, made at once", async (t) => {
  /** Where the round is asked: in the loop's backoff wait, or from one of its reports. */
  const cases: [string, keyof PoolReports | undefined, boolean][] = [
    ["during its backoff wait", undefined, false],
    ["from its `reconnecting` report", "reconnecting", false],
    ["from its `connecting` report, answered by that attempt", "connecting", true],
    ["from the `failed` report of its previous attempt", "failed", true],
  ];
  for (const [name, report, now] of cases) {
    await t.step(name, () =>
      withFakeClock((clock) =>
        withRandom(0.5, async () => {
          const t = pool({ url: A, reconnectInterval: 1000 }, { [A]: "refuse" });
          let round: ReturnType<typeof watch> | undefined;
          const ask = () => {
            if (round) return;
            t.net.answers.set(A, "open");
            round = watch(t.pool.round());
          };
          if (report) (t.on as Record<string, () => void>)[report] = ask;
          const start = clock.now;
          t.pool.reconnect(t.socket(0), now);
          await turn();
          if (!report) {
            assert.equal(clock.timers, 1, "in its backoff wait");
            ask();
            await turn();
          }
          assert.equal(round?.state, "resolved");
          assert.equal(t.pool.openCount, 1);
          assert.deepEqual([clock.now, clock.timers], [start, 0], "no wait");
          await shutdown(t, clock);
        })
      ));
  }
});

Deno.test("pool: round() ends every ejection: an ejected server is tried at once", async () => {
  await withFakeClock((clock) =>
    withRandom(0.5, async () => {
      const t = pool({ url: [A, B], reconnectInterval: 1000 }, { [A]: "refuse", [B]: "hold" });
      t.pool.reconnect(t.socket(0), true);
      await runUntil(clock, () => t.ejections().length === 1, "the ejection");
      assert.equal(t.pool.summary()[0].state, "ejected");
      const start = clock.now;
      t.net.answers.set(A, "open");
      const round = watch(t.pool.round());
      assert.deepEqual(
        [t.pool.summary()[0].state, t.pool.summary()[0].failures],
        ["down", 0],
        "forgiven",
      );
      await turn();
      assert.equal(round.state, "resolved");
      assert.deepEqual([t.events.at(-1), clock.now], ["opened 0", start], "at once");
      assert.equal(t.attempts.at(-1), 1, "its attempts counted afresh");
      await shutdown(t, clock);
    })
  );
});

Deno.test("pool: round() gives every slot a fresh count of attempts, also one that gave up", async (t) => {
  await t.step("no socket open", () =>
    withFakeClock((clock) =>
      withRandom(0.5, async () => {
        const t = pool({ url: A, reconnectInterval: 10, maxReconnectAttempts: 2 }, {
          [A]: "refuse",
        });
        t.pool.reconnect(t.socket(0), true);
        await runUntil(clock, () => t.gaveUp.length === 1, "the give-up");
        t.net.answers.set(A, "open");
        const round = watch(t.pool.round());
        await turn();
        assert.equal(round.state, "resolved");
        assert.deepEqual(t.attempts, [1, 2, 1]);
        assert.deepEqual(t.events.slice(-2), ["connecting 0", "opened 0"]);
        await shutdown(t, clock);
      })
    ));
  await t.step("another socket open", () =>
    withFakeClock((clock) =>
      withRandom(0.5, async () => {
        const t = pool({ url: [A, B], reconnectInterval: 10, maxReconnectAttempts: 1 }, {
          [B]: "refuse",
        });
        t.pool.openAll();
        await turn();
        t.pool.reconnect(t.socket(1), false);
        await runUntil(clock, () => t.gaveUp.length === 1, "the give-up");
        t.net.answers.set(B, "open");
        const round = watch(t.pool.round());
        await turn();
        assert.equal(round.state, "resolved", "at once: a socket is open");
        await runUntil(clock, () => t.pool.openCount === 2 || t.gaveUp.length > 1, "slot 1");
        assert.deepEqual(t.events.slice(-2), ["connecting 1", "opened 1"]);
        assert.equal(t.gaveUp.length, 1, "no second give-up without an attempt");
        await shutdown(t, clock);
      })
    ));
});

Deno.test("pool: round() resolves at once while a socket is open, and rejects only once every slot's next attempt failed", async (t) => {
  await t.step("a socket open", () =>
    withFakeClock(async (clock) => {
      const t = pool({ url: [A, B] });
      t.pool.openAll();
      await turn();
      const round = watch(t.pool.round());
      await null;
      assert.equal(round.state, "resolved");
      await turn();
      assert.equal(t.net.sockets.length, 2, "no socket opened for it");
      await shutdown(t, clock);
    }));
  for (const [name, last] of [["opens", "welcome"], ["fails", "refuse"]] as const) {
    await t.step(
      `one of two fails, then the other ${name}`,
      () =>
        withFakeClock((clock) =>
          withRandom(0.5, async () => {
            const t = pool({ url: [A, B], reconnectInterval: 10_000 }, {
              [A]: "hold",
              [B]: "hold",
            });
            t.pool.reconnect(t.socket(0), false);
            t.pool.reconnect(t.socket(1), false);
            await turn();
            assert.equal(clock.timers, 2, "both slots wait out a backoff");
            const round = watch(t.pool.round());
            await turn();
            assert.equal(t.net.sockets.length, 2, "both try at once");
            t.net.sockets[0].refuse();
            await turn();
            assert.equal(round.state, "pending", "the other slot's attempt is still under way");
            t.net.sockets[1][last]();
            await turn();
            if (last === "welcome") assert.equal(round.state, "resolved");
            else {
              assert.equal(round.state, "rejected");
              assert.equal(round.error?.message, unreachable(B), "the last error");
            }
            await shutdown(t, clock);
          })
        ),
    );
  }
});

Deno.test(
  "pool: round() during a run's first attempt that fails: the slot tries again at once",
  sanitize,
  async () => {
    const t = pool({ url: A }, { [A]: "hold" });
    t.pool.openAll();
    const round = t.pool.round();
    t.net.answers.set(A, "open");
    t.net.sockets[0].refuse();
    await within(1000, round, "the round");
    assert.deepEqual(t.events, ["failed 0", "connecting 0", "opened 0"]);
    await shutdown(t);
  },
);

Deno.test("pool: a round answered by an attempt leaves no hurry behind: the next close waits its backoff", async () => {
  await withFakeClock((clock) =>
    withRandom(0.5, async () => {
      const t = pool({ url: A, reconnectInterval: 1000 }, { [A]: "hold" });
      t.reopenOnClose();
      t.pool.reconnect(t.socket(0), false);
      await runUntil(clock, () => t.net.sockets.length === 1, "the attempt");
      const round = t.pool.round();
      t.net.sockets[0].welcome();
      await round;
      t.net.sockets[0].serverClose(1011, "restart");
      await turn();
      assert.deepEqual(t.delays, [1000, 1000], "the server's close is followed by a backoff");
      await shutdown(t, clock);
    })
  );
});

// -- reports that call back into the pool ---------------------------------------------------------

/**
 * How to make slot 0 send each report: the pool's options, how its server answers, what starts it.
 * Slot 1, on the other server, waits out a backoff meanwhile.
 */
const reportScenarios: [
  keyof PoolReports,
  Partial<RealmClientOptions>,
  Answer,
  (t: Fixture) => void | Promise<void>,
][] = [
  ["reconnecting", {}, "open", (t) => t.pool.reconnect(t.socket(0), false)],
  ["connecting", {}, "open", (t) => t.pool.reconnect(t.socket(0), true)],
  ["opened", {}, "open", (t) => t.pool.reconnect(t.socket(0), true)],
  ["failed", {}, "refuse", (t) => t.pool.reconnect(t.socket(0), true)],
  ["gaveUp", { maxReconnectAttempts: 1 }, "refuse", (t) => t.pool.reconnect(t.socket(0), true)],
  ["closed", {}, "open", async (t) => {
    t.pool.openAll();
    await turn();
    t.net.sockets[0].serverClose(1011, "restart");
  }],
];

for (const [report, options, answer, trigger] of reportScenarios) {
  Deno.test(
    `pool: closeAll() from the ${report} report stops everything: no socket opens afterwards, no timer is left`,
    sanitize,
    async () => {
      await withRandom(0.5, async () => {
        const t = pool(
          { url: [A, B], reconnectInterval: 10_000, ...options },
          { [A]: answer },
        );
        t.pool.reconnect(t.socket(1), false);
        await turn();
        assert.deepEqual([t.pool.retryingCount, t.delays], [1, [10_000]], "slot 1 waits");
        let closing: Promise<void> | undefined;
        let made = 0;
        (t.on as Record<string, (socket: SocketRef) => void>)[report] = (socket) => {
          if (socket.index !== 0 || closing) return;
          closing = t.pool.closeAll("client disconnect");
          made = t.net.sockets.length;
        };
        await trigger(t);
        await until(() => closing !== undefined, 2000, `the ${report} report`);
        await within(1000, closing!, "closeAll()");
        await turn();
        await turn();
        assert.equal(t.net.sockets.length, made, "no socket made after closeAll()");
        assert.deepEqual([t.net.live(), t.pool.openCount, t.pool.retryingCount], [0, 0, 0]);
      });
      // The leak sanitizer fails the test if a timer of the pool is still armed.
    },
  );
}

Deno.test(
  "pool: dropAll() and round() from the opened report: the round waits for the socket that reopens",
  sanitize,
  async () => {
    const t = pool({ url: A });
    t.reopenOnClose();
    let round: ReturnType<typeof watch> | undefined;
    let finished: Promise<void> | undefined;
    t.on.opened = () => {
      if (finished) return;
      t.net.answers.set(A, "hold");
      t.pool.dropAll(); // reconnect() from a `connected` listener
      finished = t.pool.round();
      round = watch(finished);
    };
    t.pool.openAll();
    await until(() => t.net.sockets.length === 2, 1000, "the reopen's socket");
    assert.equal(round?.state, "pending", "not answered by the socket it dropped");
    assert.equal(t.pool.openCount, 0);
    t.net.sockets[1].welcome();
    await within(1000, finished!, "the round");
    assert.deepEqual(t.events, ["opened 0", "closed 0 reconnect", "connecting 0", "opened 0"]);
    await shutdown(t);
  },
);

Deno.test(
  "pool: round() from the failed report of a run's first attempt: the slot tries again at once",
  sanitize,
  async () => {
    const t = pool({ url: A }, { [A]: "refuse" });
    let round: Promise<void> | undefined;
    t.on.failed = () => {
      if (round) return;
      t.net.answers.set(A, "open");
      round = t.pool.round();
    };
    t.pool.openAll();
    await until(() => round !== undefined, 1000, "the failed report");
    await within(1000, round!, "the round");
    assert.deepEqual(t.events, ["failed 0", "connecting 0", "opened 0"]);
    await shutdown(t);
  },
);

// -- close causes ---------------------------------------------------------------------------------

Deno.test(
  "pool: a close's report carries its cause: halt, reconnect, dropped, server",
  sanitize,
  async () => {
    const t = pool({ url: A });
    const reopen = async () => {
      t.pool.openAll();
      await until(() => t.pool.openCount === 1, 1000, "the socket");
      return t.open.get(0)!;
    };
    await reopen();
    await t.pool.closeAll("client disconnect");
    await reopen();
    t.pool.dropAll();
    t.pool.drop(await reopen(), 1006, "send failed");
    await reopen();
    t.pool.dropAllDead(1001, "browser offline");
    await reopen();
    t.net.sockets.at(-1)!.serverClose(1011, "restart");
    assert.deepEqual(
      t.closes.map(({ socket, code, reason, cause }) => [socket, code, reason, cause]),
      [
        [0, 1000, "client disconnect", "halt"],
        [0, 1000, "client reconnect", "reconnect"],
        [0, 1006, "send failed", "dropped"],
        [0, 1001, "browser offline", "dropped"],
        [0, 1011, "restart", "server"],
      ],
    );
    await shutdown(t);
  },
);
