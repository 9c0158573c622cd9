/**
 * The pool on its own, with a scripted WebSocket: ejection of a server of a list and its growing
 * period, the backoff reset after a stable connection only, `reconnect(slot, now)`, a socket that
 * opens after `closeAll()`, and the least-busy pick's tie-break.
 */
import assert from "node:assert/strict";
import { EJECT_AFTER, Pool, type PoolHandlers, type Slot } from "../src/pool.ts";
import { resolveOptions } from "../src/validate.ts";
import type { RealmClientOptions, WebSocketConstructor } from "../mod.ts";
import { until } from "./_helpers.ts";

const WELCOME = JSON.stringify({ status: "connected", version: "0.1.0", tenant_id: null });

/** How each address answers: a handshake, a refusal, or nothing until `release()`. */
const behaviour = new Map<string, "open" | "refuse" | "hold">();
const held: (() => void)[] = [];

class ScriptedSocket extends EventTarget {
  readyState = 0;
  onopen: ((event: Event) => void) | null = null;
  onmessage: ((event: MessageEvent) => void) | null = null;
  onerror: ((event: Event) => void) | null = null;
  onclose: ((event: CloseEvent) => void) | null = null;
  sent: string[] = [];
  constructor(readonly url: string) {
    super();
    const how = behaviour.get(url) ?? "open";
    const open = () => {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this.onopen?.(new Event("open"));
      this.onmessage?.(new MessageEvent("message", { data: WELCOME }));
    };
    if (how === "open") queueMicrotask(open);
    else if (how === "hold") held.push(open);
    else queueMicrotask(() => this.onerror?.(new Event("error")));
  }
  send(text: string) {
    this.sent.push(text);
  }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.(new CloseEvent("close", { code, reason })));
  }
}

function pool(options: Partial<RealmClientOptions>) {
  const events: string[] = [];
  const delays: number[] = [];
  const handlers: PoolHandlers = {
    opened: (slot) => events.push(`opened ${slot.index}`),
    accept: () => undefined,
    frame: () => {},
    closed: (slot) => events.push(`closed ${slot.index}`),
    reconnecting: (_slot, _attempt, delay) => void delays.push(delay),
    connecting: () => {},
    attemptFailed: (slot) => events.push(`failed ${slot.index}`),
    gaveUp: (slot) => events.push(`gave up ${slot.index}`),
    tenantId: () => "tenant-a",
    log: () => {},
  };
  const made = new Pool(resolveOptions({ model: "m", connectTimeout: 1000, ...options }), handlers);
  made.WebSocket = ScriptedSocket as unknown as WebSocketConstructor;
  return { pool: made, events, delays };
}

Deno.test("pool: a server of a list is ejected after EJECT_AFTER failures, for longer each time", async () => {
  behaviour.set("ws://127.0.0.1:1", "open").set("ws://127.0.0.1:2", "refuse");
  const { pool: p } = pool({
    url: ["ws://127.0.0.1:1", "ws://127.0.0.1:2"],
    reconnectInterval: 1,
    maxReconnectInterval: 10_000,
  });
  try {
    const [, down] = p.slots;
    const server = down.server;
    for (let i = 0; i < EJECT_AFTER - 1; i++) await assert.rejects(p.open(down));
    assert.equal(p.serverState(server), "down", "not yet");
    const before = performance.now();
    await assert.rejects(p.open(down));
    assert.equal(p.serverState(server), "ejected");
    // The first ejection lasts reconnectInterval · 2, the next twice that.
    const first = server.ejectedUntil - before;
    assert.ok(first >= 2 && first < 50, `first ejection ${first} ms`);
    for (let i = 0; i < EJECT_AFTER; i++) await assert.rejects(p.open(down));
    const second = server.ejectedUntil - performance.now();
    assert.ok(second > 2 && second <= 4, `second ejection ${second} ms`);
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

Deno.test("pool: reconnect(slot, now) waits nothing first; without it the backoff applies", async () => {
  behaviour.set("ws://127.0.0.1:4", "refuse");
  const { pool: p, delays } = pool({
    url: "ws://127.0.0.1:4",
    reconnectInterval: 10_000,
    maxReconnectAttempts: 1,
  });
  try {
    await p.reconnect(p.slots[0], true);
    assert.deepEqual(delays, [0]);
    p.slots[0].attempts = 0;
    const waiting = p.reconnect(p.slots[0]);
    await until(() => delays.length === 2, 1000, "the second schedule");
    assert.ok(delays[1] >= 0 && delays[1] <= 20_000, `a backoff delay, got ${delays[1]}`);
    await p.closeAll();
    await waiting;
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
  held[0]();
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
