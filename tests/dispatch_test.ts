/**
 * The dispatcher on its own: a real call registry and sockets that record what is sent, so each
 * routing rule is checked with exact values.
 */
import assert from "node:assert/strict";
import type { RealmError } from "../mod.ts";
import { type Call, type CallEnd, CallRegistry, type CallSpec } from "../src/calls.ts";
import type { Connection } from "../src/connection.ts";
import { Dispatcher } from "../src/dispatch.ts";
import type { ServerFrame } from "../src/protocol.ts";

/** A socket that records the frames sent on it. */
function socket(failSend = false) {
  const inFlight = new Map<string, number>();
  const abandoned = new Set<string>();
  const sent: string[] = [];
  const fake = {
    open: true,
    tenantId: "tenant-a",
    callTail: ',"tenant_id":"tenant-a"}',
    inFlight,
    abandoned,
    sent,
    get busy() {
      return inFlight.size;
    },
    send(id: string, text: string) {
      if (failSend) throw new Error("socket closing");
      inFlight.set(id, 0);
      sent.push(text);
    },
    settled(id: string) {
      inFlight.delete(id);
      abandoned.delete(id);
    },
    abandon(id: string) {
      if (inFlight.has(id)) abandoned.add(id);
    },
    seen(id: string) {
      if (inFlight.has(id)) inFlight.set(id, performance.now());
    },
    carries(id: string) {
      return inFlight.has(id);
    },
    takeCalls() {
      const ids = [...inFlight.keys()];
      inFlight.clear();
      abandoned.clear();
      return ids;
    },
    oldestListening() {
      for (const id of inFlight.keys()) if (!abandoned.has(id)) return id;
      return undefined;
    },
  };
  return fake as typeof fake & Connection;
}

function setup(sockets: Connection[] = []) {
  const calls = new CallRegistry();
  const reports: RealmError[] = [];
  const logs: [string, Record<string, unknown> | undefined][] = [];
  const dropped: Connection[] = [];
  let open = [...sockets];
  const dispatcher = new Dispatcher(calls, {
    pick: () => open[0],
    mayWait: () => true,
    maxQueuedCalls: 10,
    report: (error) => reports.push(error),
    dropSocket: (connection) => {
      dropped.push(connection);
      open = open.filter((c) => c !== connection);
    },
    log: (message, data) => logs.push([message, data]),
  });
  const make = (spec: Partial<CallSpec> = {}): Call =>
    calls.create(
      {
        fn: "health",
        paramsJson: "{}",
        stream: false,
        timeout: 5000,
        idleTimeout: 5000,
        maxRetries: 0,
        ...spec,
      },
      (call: Call, end: CallEnd) => dispatcher.ended(call, end),
    );
  const setOpen = (next: Connection[]) => (open = next);
  return { calls, dispatcher, reports, logs, dropped, make, setOpen };
}

/** The call's outcome: its error, or `undefined` when it resolved. */
async function failure(call: Call): Promise<RealmError | undefined> {
  try {
    await call.result;
    return undefined;
  } catch (error) {
    return error as RealmError;
  }
}

Deno.test("dispatch: a call that ends leaves the queue, and only that call", async () => {
  const t = setup();
  const aborts = [new AbortController(), new AbortController(), new AbortController()];
  const [a, b, c] = aborts.map((abort) => t.make({ signal: abort.signal }));
  t.dispatcher.dispatch(a);
  t.dispatcher.dispatch(b);
  assert.deepEqual(t.dispatcher.queue, [a, b]);
  aborts[2].abort(); // c was never queued
  assert.equal((await failure(c))?.code, "ABORTED");
  assert.deepEqual(t.dispatcher.queue, [a, b]);
  aborts[0].abort();
  assert.equal((await failure(a))?.code, "ABORTED");
  assert.deepEqual(t.dispatcher.queue, [b]);
  aborts[1].abort();
  await failure(b);
  assert.deepEqual(t.dispatcher.queue, []);
});

Deno.test("dispatch: a send that throws drops the socket, logs why, and requeues", () => {
  const broken = socket(true);
  const t = setup([broken]);
  const call = t.make();
  t.dispatcher.dispatch(call);
  assert.deepEqual(t.dropped, [broken]);
  assert.deepEqual(t.logs, [["send failed; closing the socket", {
    error: "Error: socket closing",
  }]]);
  assert.deepEqual(t.dispatcher.queue, [call]);
  assert.equal(call.sent, false);
  call.abandon();
});

Deno.test("dispatch: frames are routed by id and socket; late and foreign ones", async (t) => {
  await t.step("a token that is not a string fails the call, naming it", async () => {
    const s = socket();
    const d = setup([s]);
    const call = d.make({ fn: "generate", stream: true });
    d.dispatcher.dispatch(call);
    d.dispatcher.frame(s, { kind: "streaming", id: call.id, data: { text: 42 } });
    const error = await failure(call);
    assert.equal(error?.code, "PROTOCOL_ERROR");
    assert.equal(error?.requestId, call.id);
    assert.equal(error?.sent, true);
  });
  await t.step("a frame for a call sent on another socket does not settle it", async () => {
    const [a, b] = [socket(), socket()];
    const d = setup([a, b]);
    const call = d.make();
    d.dispatcher.dispatch(call);
    assert.equal(call.connection, a);
    d.dispatcher.frame(b, { kind: "complete", id: call.id, data: { status: "b" } });
    d.dispatcher.frame(b, {
      kind: "error",
      id: call.id,
      error: { code: "INTERNAL_ERROR", message: "b" },
    });
    assert.equal(call.settled, false);
    assert.deepEqual(d.reports, [], "an id this client gave out is late, not foreign");
    d.dispatcher.frame(a, { kind: "complete", id: call.id, data: { status: "a" } });
    assert.deepEqual(await call.result, { requestId: call.id, status: "a" });
  });
  await t.step("late frames of an abandoned call: tokens keep it, a final frame frees it", () => {
    const s = socket();
    const d = setup([s]);
    const call = d.make({ fn: "generate", stream: true });
    d.dispatcher.dispatch(call);
    call.abandon();
    assert.equal(s.abandoned.has(call.id), true);
    d.dispatcher.frame(s, { kind: "streaming", id: call.id, data: { text: "late" } });
    assert.ok(s.inFlight.get(call.id)! > 0, "a late token marks the call as still streaming");
    d.dispatcher.frame(s, { kind: "error", id: call.id, error: { code: "X", message: "late" } });
    assert.equal(s.inFlight.has(call.id), false, "a late final frame frees the socket");
    assert.deepEqual(d.reports, []);
  });
  await t.step("frames the client cannot use are reported as PROTOCOL_ERROR", () => {
    const s = socket();
    const d = setup([s]);
    const frames: ServerFrame[] = [
      { kind: "invalid", reason: "not JSON: x" },
      { kind: "welcome", version: "1", tenantId: null },
      { kind: "complete", id: "99", data: {} },
    ];
    for (const frame of frames) d.dispatcher.frame(s, frame);
    assert.deepEqual(d.reports.map((e) => [e.code, e.message]), [
      ["PROTOCOL_ERROR", "Ignored a frame the client cannot use (not JSON: x)."],
      ["PROTOCOL_ERROR", "Ignored an unexpected welcome frame after the handshake."],
      ["PROTOCOL_ERROR", 'Ignored a frame for call id "99", which is not pending.'],
    ]);
  });
});

Deno.test("dispatch: only a rate limit is retried; other errors fail at once", async () => {
  const s = socket();
  const t = setup([s]);
  const call = t.make({ maxRetries: 3 });
  t.dispatcher.dispatch(call);
  t.dispatcher.frame(s, {
    kind: "error",
    id: call.id,
    error: { code: "INTERNAL_ERROR", message: "boom" },
  });
  const error = await failure(call);
  assert.equal(error?.code, "INTERNAL_ERROR");
  assert.equal(error?.retryAfter, undefined, "only a rate limit carries retryAfter");
  assert.equal(s.sent.length, 1);
  assert.equal(call.retriesLeft, 3);
});

Deno.test("dispatch: a health call dropped twice is resent once, then fails", async () => {
  const [a, b] = [socket(), socket()];
  const t = setup([a]);
  const call = t.make({ fn: "health" });
  t.dispatcher.dispatch(call);
  t.dispatcher.socketClosed(a, 1006, true);
  assert.deepEqual(t.dispatcher.queue, [call]);
  t.setOpen([b]);
  t.dispatcher.flush();
  assert.equal(call.connection, b);
  t.dispatcher.socketClosed(b, 1006, true);
  const error = await failure(call);
  assert.equal(error?.code, "CONNECTION_CLOSED");
  assert.deepEqual(t.dispatcher.queue, []);
});
