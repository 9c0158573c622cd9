/**
 * One socket's `Connection` on its own, opened by `openConnection` over a scripted WebSocket and
 * stepped with a fake clock: which calls keep it busy (abandoned ones until `abandonedCallTtl`
 * after their last frame), the oldest call still listened to, the heartbeat's timing, ids and
 * timeout, `probe()` (a page back from the background), and a close reported once. One test runs
 * the heartbeat and `probe()` against a real WebSocket server over loopback.
 */
import assert from "node:assert/strict";
import { type Connection, type ConnectionParams, openConnection } from "../src/connection.ts";
import type { ServerFrame } from "../src/protocol.ts";
import type { WebSocketConstructor } from "../mod.ts";
import {
  delay,
  type FakeClock,
  sanitize,
  scriptedServer,
  ScriptedSocketBase,
  until,
  WELCOME,
  withFakeClock,
  within,
} from "./_helpers.ts";

const ADDRESS = "ws://127.0.0.1:9";

// Deno's first `setTimeout` of a process runs the pending microtasks (it loads its timers then):
// made inside `openConnection`, it would deliver the scripted welcome before the handlers are set.
clearTimeout(setTimeout(() => {}, 0));

/** The sockets made by `openConnection`, newest last. */
const sockets: ScriptedSocket[] = [];

/** A WebSocket whose server side the test plays by hand: it greets at once, then waits. */
class ScriptedSocket extends ScriptedSocketBase {
  /** Every frame the client sent, parsed, with the (fake) time it was sent. */
  sent: { at: number; frame: Record<string, unknown> }[] = [];
  /** Every `close()` the client made, with its code and reason. */
  closeCalls: [number, string][] = [];
  constructor(readonly url: string) {
    super();
    sockets.push(this);
    queueMicrotask(() => {
      this.open();
      this.receive(WELCOME);
    });
  }
  send(text: string) {
    this.sent.push({ at: performance.now(), frame: JSON.parse(text) });
  }
  close(code = 1000, reason = "") {
    this.closeCalls.push([code, reason]);
    if (this.readyState < 2) this.readyState = 2;
  }
  /** The `id`s of the heartbeats sent, with their time. */
  heartbeats(): [string, number][] {
    return this.sent.filter(({ frame }) => frame.function === "health")
      .map(({ at, frame }) => [frame.id as string, at]);
  }
}

/**
 * Opens a connection over a `ScriptedSocket`. Its frame handler settles a call whose terminal
 * frame arrived, as the dispatcher does.
 */
async function open(params: Partial<ConnectionParams> = {}) {
  const frames: ServerFrame[] = [];
  const closes: [number, string][] = [];
  const connection: Connection = await openConnection({
    url: ADDRESS,
    WebSocket: ScriptedSocket as unknown as WebSocketConstructor,
    tenantId: "tenant-a",
    connectTimeout: 5000,
    heartbeatInterval: 0,
    heartbeatTimeout: 0,
    abandonedCallTtl: 1000,
    ...params,
  }, {
    frame: (connection, frame) => {
      frames.push(frame);
      if (frame.kind !== "streaming" && "id" in frame) connection.settled(frame.id);
    },
    closed: (_connection, code, reason) => void closes.push([code, reason]),
  });
  return { connection, socket: sockets.at(-1)!, frames, closes };
}

/** A call frame as `send()` writes it. */
const call = (id: string) =>
  `{"id":"${id}","function":"generate","params":{"prompt":"p"},"tenant_id":"t"}`;

/** The heartbeat frame: a `health` call under the connection's tenant. */
const heartbeat = (id: string) => ({ id, function: "health", params: {}, tenant_id: "tenant-a" });

/** Closes the connection and has the server answer the close at once. */
async function shut(connection: Connection, socket: ScriptedSocket) {
  const ended = connection.close();
  socket.serverClose(1000, "");
  await ended;
}

/**
 * `withFakeClock`, with a bound on the timers armed: a heartbeat that re-arms itself with no delay
 * would otherwise spin the fake clock forever, hanging the test instead of failing it.
 */
function withClock(body: (clock: FakeClock) => Promise<void>): Promise<void> {
  return withFakeClock((clock) => {
    const fakeSetTimeout = globalThis.setTimeout;
    let armed = 0;
    globalThis.setTimeout = ((fire: () => void, ms?: number) => {
      if (++armed > 1000) throw new Error("more than 1000 timers armed: a timer loop?");
      return fakeSetTimeout(fire, ms);
    }) as typeof setTimeout;
    return body(clock);
  });
}

/** Steps the fake clock to the absolute instant `at`, running the timers due on the way. */
function advanceTo(clock: FakeClock, at: number) {
  clock.advance(at - clock.now);
}

Deno.test("connection: url is the server's address; frames of no call reach the handler", async () => {
  const { connection, socket, frames, closes } = await open({ heartbeatInterval: 1000 });
  try {
    assert.equal(connection.url, ADDRESS);
    assert.equal(connection.tenantId, "tenant-a");
    assert.equal(connection.serverVersion, "0.1.0");
    socket.receive({ error: "Binary frames are not supported" });
    socket.receive("not json");
    assert.deepEqual(frames, [
      { kind: "bare_error", message: "Binary frames are not supported" },
      { kind: "invalid", reason: "not JSON: not json" },
    ]);
  } finally {
    await within(1000, connection.close(1000, "", 0), "the close");
    socket.serverClose(1000, "");
  }
  assert.deepEqual(closes, [[1000, ""]]);
});

Deno.test("connection: an abandoned call keeps it busy until abandonedCallTtl after its last frame", async () => {
  await withClock(async (clock) => {
    const { connection, socket } = await open({ abandonedCallTtl: 1000 });
    connection.send("1", call("1"));
    connection.send("2", call("2"));
    assert.equal(connection.busy, 2);
    connection.abandon("1");
    assert.equal(connection.busy, 2, "the server is still producing call 1");
    clock.advance(400);
    // A late frame of the abandoned call (the dispatcher tells the socket): its TTL restarts.
    connection.seen("1");
    connection.seen("never-sent");
    assert.equal(connection.carries("never-sent"), false, "seen() adds no call");
    clock.advance(999);
    assert.equal(connection.busy, 2, "999 ms after its last frame");
    clock.advance(1);
    assert.equal(connection.busy, 1, "1000 ms after its last frame: forgotten");
    assert.deepEqual([connection.carries("1"), connection.carries("2")], [false, true]);
    // A call still listened to is never forgotten, however long it runs.
    clock.advance(60_000);
    assert.equal(connection.busy, 1);
    connection.settled("2");
    assert.equal(connection.busy, 0);
    assert.equal(socket.sent.length, 2);
    await shut(connection, socket);
  });
});

Deno.test("connection: abandon() and busy after the call left the socket do nothing", async () => {
  await withClock(async () => {
    const { connection, socket } = await open();
    // The call was answered (or the socket dropped) before its caller gave up.
    connection.abandon("never-sent");
    connection.send("1", call("1"));
    connection.settled("1");
    connection.abandon("1");
    assert.equal(connection.busy, 0);
    // Abandoned calls taken off the wire (a drop hands them to the dispatcher).
    connection.send("2", call("2"));
    connection.send("3", call("3"));
    connection.abandon("2");
    connection.abandon("3");
    assert.deepEqual(connection.takeCalls(), ["2", "3"]);
    assert.equal(connection.busy, 0);
    assert.equal(connection.oldestListening(), undefined);
    await shut(connection, socket);
  });
});

Deno.test("connection: oldestListening() is the oldest call still listened to", async () => {
  await withClock(async () => {
    const { connection, socket } = await open();
    assert.equal(connection.oldestListening(), undefined);
    for (const id of ["1", "2", "3"]) connection.send(id, call(id));
    assert.equal(connection.oldestListening(), "1");
    connection.abandon("1");
    assert.equal(connection.oldestListening(), "2", "call 1 is abandoned");
    connection.settled("2");
    assert.equal(connection.oldestListening(), "3");
    connection.abandon("3");
    assert.equal(connection.oldestListening(), undefined);
    assert.equal(connection.busy, 2, "both abandoned calls are still on the wire");
    await shut(connection, socket);
  });
});

Deno.test("connection: frameAt is when the last answer arrived; tokens count only with a heartbeat", async (t) => {
  for (const heartbeatInterval of [0, 1000]) {
    await t.step(heartbeatInterval ? "heartbeat on" : "heartbeat off", async () => {
      await withClock(async (clock) => {
        const { connection, socket, frames } = await open({ heartbeatInterval });
        const opened = clock.now;
        connection.send("1", call("1"));
        clock.advance(100);
        socket.receive({ id: "1", status: "streaming", data: { text: "a" } });
        // Without a heartbeat nothing needs a token's time: the clock is not read per token.
        assert.equal(connection.frameAt, heartbeatInterval ? opened + 100 : 0);
        clock.advance(100);
        socket.receive({ id: "1", status: "complete", data: {} });
        assert.equal(connection.frameAt, opened + 200);
        assert.equal(frames.length, 2);
        await shut(connection, socket);
      });
    });
  }
});

Deno.test("connection: close() reports the close once, also when the socket's close follows", async () => {
  await withClock(async () => {
    const { connection, socket, frames, closes } = await open();
    let closed = false;
    const ended = connection.close(4001, "bye").then(() => closed = true);
    assert.equal(connection.open, false);
    assert.deepEqual(closes, [[4001, "bye"]], "closed at once");
    assert.deepEqual(socket.closeCalls, [[4001, "bye"]]);
    socket.receive({ id: "1", status: "complete", data: {} });
    assert.deepEqual(frames, [], "no frame after close()");
    await null;
    assert.equal(closed, false, "waits for the socket");
    socket.serverClose(4001, "bye");
    await ended;
    assert.deepEqual(closes, [[4001, "bye"]], "the socket's own close is not reported again");
    await connection.close();
    assert.deepEqual(socket.closeCalls, [[4001, "bye"]]);
  });
});

Deno.test("connection: the heartbeat goes after heartbeatInterval of quiet, each with its own id", async () => {
  await withClock(async (clock) => {
    const { connection, socket, frames, closes } = await open({
      heartbeatInterval: 1000,
      heartbeatTimeout: 500,
    });
    const opened = clock.now;
    const armed = clock.delays.length;
    clock.advance(999);
    assert.deepEqual(socket.heartbeats(), []);
    clock.advance(1);
    assert.deepEqual(socket.sent, [{ at: opened + 1000, frame: heartbeat("heartbeat-1") }]);
    clock.advance(100);
    socket.receive({ id: "heartbeat-1", status: "complete", data: { status: "healthy" } });
    // A frame of a call (here a late one) 500 ms later is activity: the quiet starts again.
    clock.advance(500);
    socket.receive({ id: "7", status: "complete", data: {} });
    advanceTo(clock, opened + 2599);
    assert.equal(socket.heartbeats().length, 1);
    clock.advance(1);
    // The second heartbeat is rate limited: an answer all the same, the server is alive.
    socket.receive({
      id: "heartbeat-2",
      status: "error",
      error: { code: "RATE_LIMIT_EXCEEDED", message: "Rate limit exceeded", retry_after: 1 },
    });
    advanceTo(clock, opened + 3600);
    assert.deepEqual(socket.heartbeats(), [
      ["heartbeat-1", opened + 1000],
      ["heartbeat-2", opened + 2600],
      ["heartbeat-3", opened + 3600],
    ]);
    // The first tick, the first timeout, after the answer, after the call's frame (the rest of the
    // interval), the second timeout, after its answer, the third timeout.
    assert.deepEqual(clock.delays.slice(armed - 1), [1000, 500, 1000, 500, 500, 1000, 500]);
    assert.deepEqual(frames, [{ kind: "complete", id: "7", data: {} }], "heartbeats stay inside");
    assert.deepEqual(closes, []);
    assert.equal(connection.open, true);
    await shut(connection, socket);
  });
});

Deno.test("connection: no heartbeat while a call is in flight; it checks again every 50 ms", async () => {
  await withClock(async (clock) => {
    const { connection, socket, closes } = await open({
      heartbeatInterval: 1000,
      heartbeatTimeout: 500,
    });
    const opened = clock.now;
    const armed = clock.delays.length;
    clock.advance(300);
    connection.send("1", call("1"));
    advanceTo(clock, opened + 1450);
    assert.deepEqual(socket.heartbeats(), []);
    socket.receive({ id: "1", status: "complete", data: {} });
    advanceTo(clock, opened + 2449);
    assert.deepEqual(socket.heartbeats(), []);
    clock.advance(1);
    assert.deepEqual(socket.heartbeats(), [["heartbeat-1", opened + 2450]]);
    // At 1000 the call had been quiet 700 ms (300 to go), at 1300 it was 1000 ms: every 50 ms
    // from then on, until its answer at 1450 left 1000 ms of quiet to wait.
    assert.deepEqual(clock.delays.slice(armed - 1), [1000, 300, 50, 50, 50, 50, 950, 500]);
    assert.deepEqual(closes, []);
    await shut(connection, socket);
  });
});

Deno.test("connection: an unanswered heartbeat closes the socket with 4000, logged", async (t) => {
  for (const logged of [false, true]) {
    await t.step(logged ? "with a logger" : "without a logger", async () => {
      await withClock(async (clock) => {
        const logs: [string, Record<string, unknown> | undefined][] = [];
        const { connection, socket, frames, closes } = await open({
          heartbeatInterval: 1000,
          heartbeatTimeout: 500,
          log: logged ? (message, data) => void logs.push([message, data]) : undefined,
        });
        clock.advance(1000);
        assert.deepEqual(socket.heartbeats().map(([id]) => id), ["heartbeat-1"]);
        // Neither a token under the heartbeat's id nor another call's frame answers it.
        socket.receive({ id: "heartbeat-1", status: "streaming", data: { text: "x" } });
        socket.receive({ id: "9", status: "complete", data: {} });
        clock.advance(499);
        assert.equal(connection.open, true);
        clock.advance(1);
        assert.equal(connection.open, false);
        assert.deepEqual(closes, [[4000, "heartbeat timeout"]]);
        assert.deepEqual(socket.closeCalls, [[4000, "heartbeat timeout"]]);
        assert.deepEqual(frames, [{ kind: "complete", id: "9", data: {} }]);
        assert.deepEqual(
          logs.filter(([message]) => message !== "connected"),
          logged ? [["heartbeat unanswered", { timeoutMs: 500 }]] : [],
        );
        socket.serverClose(4000, "heartbeat timeout");
        assert.deepEqual(closes, [[4000, "heartbeat timeout"]]);
      });
    });
  }
});

Deno.test("connection: probe() sends a heartbeat at once, then the heartbeat runs as before", async () => {
  await withClock(async (clock) => {
    const { connection, socket, closes } = await open({
      heartbeatInterval: 1000,
      heartbeatTimeout: 500,
    });
    const opened = clock.now;
    clock.advance(300);
    connection.probe();
    assert.deepEqual(socket.heartbeats(), [["heartbeat-1", opened + 300]]);
    clock.advance(10);
    socket.receive({ id: "heartbeat-1", status: "complete", data: { status: "healthy" } });
    assert.equal(clock.timers, 1, "only the next heartbeat's timer");
    // Every heartbeat is answered at once from here on: the socket stays open.
    for (let i = 0; i < 3; i++) {
      clock.advance(1000);
      const [id] = socket.heartbeats().at(-1)!;
      socket.receive({ id, status: "complete", data: { status: "healthy" } });
    }
    assert.deepEqual(socket.heartbeats(), [
      ["heartbeat-1", opened + 300],
      ["heartbeat-2", opened + 1310],
      ["heartbeat-3", opened + 2310],
      ["heartbeat-4", opened + 3310],
    ]);
    assert.deepEqual(closes, []);
    clock.advance(1500);
    assert.deepEqual(socket.heartbeats().length, 5);
    assert.deepEqual(closes, [[4000, "heartbeat timeout"]], "the last one went unanswered");
  });
});

Deno.test("connection: probe() does nothing while a call or a heartbeat is out, or once closed", async (t) => {
  await t.step("a call in flight: no heartbeat behind it", async () => {
    await withClock(async (clock) => {
      const { connection, socket, closes } = await open({
        heartbeatInterval: 1000,
        heartbeatTimeout: 500,
      });
      connection.send("1", call("1"));
      clock.advance(300);
      connection.probe();
      clock.advance(2000);
      assert.deepEqual(socket.heartbeats(), []);
      assert.deepEqual(closes, [], "a long call is not a dead server");
      await shut(connection, socket);
    });
  });
  await t.step("a heartbeat out: no second one, and its answer still counts", async () => {
    await withClock(async (clock) => {
      const { connection, socket, frames, closes } = await open({
        heartbeatInterval: 1000,
        heartbeatTimeout: 500,
      });
      const opened = clock.now;
      clock.advance(1000);
      clock.advance(100);
      connection.probe();
      assert.deepEqual(socket.heartbeats(), [["heartbeat-1", opened + 1000]]);
      socket.receive({ id: "heartbeat-1", status: "complete", data: { status: "healthy" } });
      clock.advance(900);
      assert.deepEqual(frames, []);
      assert.deepEqual(closes, []);
      await shut(connection, socket);
    });
  });
  await t.step("closed: nothing is sent and no timer is left", async () => {
    await withClock(async (clock) => {
      const { connection, socket, closes } = await open({
        heartbeatInterval: 1000,
        heartbeatTimeout: 500,
      });
      const ended = connection.close(1000, "done");
      socket.serverClose(1000, "done");
      await ended;
      connection.probe();
      assert.deepEqual(socket.sent, []);
      assert.equal(clock.timers, 0);
      clock.advance(5000);
      assert.deepEqual(socket.closeCalls, [[1000, "done"]]);
      assert.deepEqual(closes, [[1000, "done"]]);
    });
  });
});

Deno.test({
  name: "connection: heartbeats and probe() against a real server over loopback",
  ...sanitize,
  fn: async () => {
    let answering = true;
    const server = scriptedServer({
      frame(socket, frame) {
        if (answering) {
          socket.send(
            JSON.stringify({ id: frame.id, status: "complete", data: { status: "healthy" } }),
          );
        }
      },
    });
    const closes: [number, string][] = [];
    const frames: ServerFrame[] = [];
    const connection = await within(
      3000,
      openConnection({
        url: server.url,
        WebSocket,
        tenantId: "tenant-a",
        connectTimeout: 2000,
        heartbeatInterval: 60_000,
        heartbeatTimeout: 600,
        abandonedCallTtl: 1000,
      }, {
        frame: (_c, frame) => void frames.push(frame),
        closed: (_c, code, reason) => void closes.push([code, reason]),
      }),
      "the handshake",
    );
    try {
      connection.probe();
      await until(() => server.received.length === 1, 2000, "the probe's heartbeat");
      assert.deepEqual(server.received, [heartbeat("heartbeat-1")]);
      await delay(800);
      assert.equal(connection.open, true, "answered: the socket stays");
      answering = false;
      connection.probe();
      await until(() => !connection.open, 2000, "the heartbeat timeout");
      assert.deepEqual(server.received.map((frame) => frame.id), ["heartbeat-1", "heartbeat-2"]);
      assert.deepEqual(closes, [[4000, "heartbeat timeout"]]);
      assert.deepEqual(frames, [], "the heartbeat's answer stays inside the connection");
    } finally {
      await within(3000, connection.close(), "the close");
      await server.close();
    }
  },
});

Deno.test("connection: a send forgets the abandoned calls quiet for abandonedCallTtl, with nothing reading busy", async () => {
  await withClock(async (clock) => {
    // One socket, no heartbeat, no stats(): only sends happen, as in a plain app.
    const { connection, socket } = await open({ abandonedCallTtl: 1000 });
    connection.send("1", call("1"));
    connection.abandon("1"); // a stream the server then stops with no final frame
    clock.advance(999);
    connection.send("2", call("2"));
    const onTheWire = () => ["1", "2", "3"].filter((id) => connection.carries(id));
    assert.deepEqual(onTheWire(), ["1", "2"], "999 ms: maybe still on the wire");
    clock.advance(1);
    connection.send("3", call("3"));
    assert.deepEqual(onTheWire(), ["2", "3"], "1000 ms quiet: forgotten");
    await shut(connection, socket);
  });
});
