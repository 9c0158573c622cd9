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
function socket(failSend = false, url = "ws://a") {
  const inFlight = new Map<string, number>();
  const abandoned = new Set<string>();
  const sent: string[] = [];
  const fake = {
    open: true,
    url,
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
    pick: (avoid?: string) => open.find((c) => c.url !== avoid) ?? open[0],
    connected: () => open.length > 0,
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
      ["PROTOCOL_ERROR", 'Ignored a frame for call id "99", not pending.'],
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

Deno.test("dispatch: a closed socket's calls behind the one being served are re-sent, whatever their function", async () => {
  const [a, b] = [socket(false, "ws://a"), socket(false, "ws://b")];
  const t = setup([a]);
  // The server serves a socket's calls one at a time: "served" may have run, the others not.
  const served = t.make({ fn: "pipeline", paramsJson: '{"pipeline":"p","input":{}}' });
  const behind = [
    t.make({ fn: "pipeline", paramsJson: '{"pipeline":"q","input":{}}' }),
    t.make({ fn: "generate", paramsJson: '{"prompt":"x"}' }),
    t.make({ fn: "health" }),
  ];
  for (const call of [served, ...behind]) t.dispatcher.dispatch(call);
  t.dispatcher.socketClosed(a, 1006, true);
  const error = await failure(served);
  assert.equal(error?.code, "CONNECTION_CLOSED");
  assert.equal(error?.sent, true, "the server may have run it");
  assert.match(error!.message, /safeToRepeat: true/);
  assert.deepEqual(t.dispatcher.queue, behind, "re-sent in their order, ahead of newer calls");
  assert.deepEqual(behind.map((call) => [call.sent, call.avoid]), Array(3).fill([false, "ws://a"]));
  t.setOpen([a, b]);
  t.dispatcher.flush();
  assert.deepEqual(behind.map((call) => call.connection), [b, b, b], "another server first");
  assert.deepEqual(behind.map((call) => call.attempts), [2, 2, 2]);
  assert.deepEqual(t.dispatcher.counts.get("ws://a"), { resentCalls: 3, retriesWithheld: 0 });
  assert.deepEqual(t.dispatcher.counts.get(""), { resentCalls: 3, retriesWithheld: 0 });
  for (const call of behind) call.abandon();
});

Deno.test("dispatch: the call being served is re-sent when it changes nothing: generate, health, metadata, or a pipeline safe to repeat", async () => {
  for (
    const spec of [
      { fn: "generate", stream: true },
      { fn: "generate" },
      { fn: "health" },
      { fn: "metadata" },
      { fn: "pipeline", safeToRepeat: true },
    ] as Partial<CallSpec>[]
  ) {
    const [a, b] = [socket(false, "ws://a"), socket(false, "ws://b")];
    const t = setup([a, b]);
    const call = t.make(spec);
    t.dispatcher.dispatch(call);
    assert.equal(call.connection, a);
    t.dispatcher.socketClosed(a, 1006, true);
    t.setOpen([b]);
    t.dispatcher.flush();
    assert.equal(call.connection, b, spec.fn);
    t.dispatcher.frame(b, { kind: "complete", id: call.id, data: { ok: true } });
    assert.deepEqual(await call.result, { ok: true, requestId: call.id });
    assert.equal(call.mayHaveRun, true);
  }
});

Deno.test("dispatch: a stream that delivered tokens fails with delivered: true and is never re-sent", async () => {
  const [a, b] = [socket(false, "ws://a"), socket(false, "ws://b")];
  const t = setup([a, b]);
  const call = t.make({ fn: "generate", stream: true });
  t.dispatcher.dispatch(call);
  t.dispatcher.frame(a, { kind: "streaming", id: call.id, data: { text: "The " } });
  t.dispatcher.frame(a, { kind: "streaming", id: call.id, data: { text: "capital " } });
  t.dispatcher.socketClosed(a, 1006, true);
  const error = await failure(call);
  assert.equal(error?.code, "CONNECTION_CLOSED");
  assert.equal(error?.delivered, true);
  assert.equal(error?.sent, true);
  assert.match(error!.message, /after 2 token\(s\)/);
  assert.deepEqual(b.sent, [], "never restarted elsewhere");
});

Deno.test("dispatch: a call is re-sent at most 3 times, then fails", async () => {
  const t = setup([]);
  const call = t.make({ fn: "health" });
  for (let i = 0; i < 4; i++) {
    const s = socket(false, `ws://s${i}`);
    t.setOpen([s]);
    if (i === 0) t.dispatcher.dispatch(call);
    else t.dispatcher.flush();
    assert.equal(call.connection, s);
    t.dispatcher.socketClosed(s, 1006, true);
  }
  const error = await failure(call);
  assert.equal(error?.code, "CONNECTION_CLOSED");
  assert.match(error!.message, /under health \(call \d+\) 4 times: it is not sent again/);
  assert.equal(call.attempts, 4);
});

Deno.test("dispatch: when the client stops, a closed socket's calls fail instead of being re-sent", async () => {
  const a = socket();
  const t = setup([a]);
  const [served, behind] = [t.make({ fn: "health" }), t.make({ fn: "health" })];
  t.dispatcher.dispatch(served);
  t.dispatcher.dispatch(behind);
  t.dispatcher.socketClosed(a, 1000, false);
  const [first, second] = [await failure(served), await failure(behind)];
  assert.deepEqual([first?.code, first?.sent], ["CONNECTION_CLOSED", true]);
  assert.deepEqual([second?.code, second?.sent], ["CONNECTION_CLOSED", false], "never read");
  assert.deepEqual(t.dispatcher.queue, []);
});

Deno.test("dispatch: re-sending the call being served draws from the retry budget; an empty one withholds it", async () => {
  const t = setup([]);
  const outcomes: (string | undefined)[] = [];
  for (let i = 0; i < 12; i++) {
    const s = socket(false, `ws://s${i}`);
    t.setOpen([s]);
    const call = t.make({ fn: "health" });
    t.dispatcher.dispatch(call);
    t.dispatcher.socketClosed(s, 1006, true);
    if (call.settled) outcomes.push((await failure(call))?.message);
    else {
      outcomes.push(undefined);
      call.abandon();
    }
  }
  assert.deepEqual(outcomes.slice(0, 10), Array(10).fill(undefined), "10 re-sent");
  for (const message of outcomes.slice(10)) assert.match(message!, /retry was withheld/);
  assert.deepEqual(t.dispatcher.counts.get(""), { resentCalls: 10, retriesWithheld: 2 });
});
