/**
 * The connection state: `Lifecycle` on its own (its edges, its runs, give-ups and refused moves),
 * then the client's states and `statechange` events over loopback.
 */
import assert from "node:assert/strict";
import { Lifecycle } from "../src/lifecycle.ts";
import {
  type ConnectionState,
  RealmError,
  RealmWebSocketClient,
  STATE_EDGES,
  type StateChange,
} from "../mod.ts";
import { startStubServer } from "../testing.ts";
import {
  assertEdgesAllowed,
  dropNow,
  failedWith,
  FAST,
  outcome,
  recordEvents,
  sanitize,
  stubAndClientWithStates,
  until,
  within,
} from "./_helpers.ts";

Deno.test("Lifecycle: only the table's edges, each announced once, runs renewed", () => {
  const seen: string[] = [];
  const life = new Lifecycle(({ from, to }) => seen.push(`${from}>${to}`));
  assert.equal(life.state, "idle");
  const run = life.start();
  assert.equal(life.state, "connecting");
  life.update({ open: 1, retrying: 0 });
  assert.equal(life.state, "connecting", "open only with the start's outcome");
  life.started({ open: 1, retrying: 0 });
  assert.equal(life.state, "open");
  life.update({ open: 0, retrying: 1 });
  assert.equal(life.state, "reconnecting");
  life.update({ open: 0, retrying: 0 });
  assert.equal(life.state, "closed");
  assert.notEqual(life.run, run, "giving up ends the run");
  assert.equal(life.running, false);
  life.update({ open: 1, retrying: 0 });
  assert.equal(life.state, "closed", "a closed client moves only on connect()");
  life.start();
  life.stop();
  assert.equal(life.state, "idle");
  assert.deepEqual(seen, [
    "idle>connecting",
    "connecting>open",
    "open>reconnecting",
    "reconnecting>closed",
    "closed>connecting",
    "connecting>idle",
  ]);
  // A start whose sockets all dropped before it ended, and are coming back: reconnecting.
  const fresh = new Lifecycle(({ from, to }) => seen.push(`${from}>${to}`));
  fresh.start();
  fresh.update({ open: 0, retrying: 1 });
  assert.equal(fresh.state, "connecting", "no move before the start's outcome");
  fresh.started({ open: 0, retrying: 1 });
  assert.equal(fresh.state, "reconnecting");
  assert.deepEqual(seen.slice(-2), ["idle>connecting", "connecting>reconnecting"]);
  // Every state can reach idle, and idle leads only to connecting.
  for (const state of Object.keys(STATE_EDGES) as ConnectionState[]) {
    if (state !== "idle") assert.ok(STATE_EDGES[state].includes("idle"), state);
  }
  assert.deepEqual(STATE_EDGES.idle, ["connecting"]);
});

Deno.test("Lifecycle: starting, give-ups, fresh run numbers and refused moves", async (t) => {
  const reason = new RealmError("UNAUTHORIZED", "The server refused the API key.");
  await t.step("starting is true only between start() and started()", () => {
    const seen: StateChange[] = [];
    const life = new Lifecycle((change) => seen.push(change));
    assert.equal(life.starting, false);
    life.start();
    assert.equal(life.starting, true);
    // While connect() opens its sockets, none open yet is not a give-up.
    life.update({ open: 0, retrying: 0 });
    assert.equal(life.state, "connecting");
    life.started({ open: 0, retrying: 0 }, reason);
    assert.equal(life.starting, false);
    assert.equal(life.state, "closed");
    assert.deepEqual(seen.at(-1), { from: "connecting", to: "closed", reason });
  });
  await t.step("giveUp() ends the run and the start; it does nothing when not running", () => {
    const seen: StateChange[] = [];
    const life = new Lifecycle((change) => seen.push(change));
    life.giveUp(reason);
    assert.equal(life.state, "idle");
    assert.equal(life.run, 0);
    assert.deepEqual(seen, []);
    const first = life.start();
    life.giveUp(reason);
    assert.equal(life.state, "closed");
    assert.equal(life.starting, false);
    assert.deepEqual(seen.at(-1), { from: "connecting", to: "closed", reason });
    // Work of the given-up run must never look current to the next one.
    const second = life.start();
    assert.ok(second > first, `run ${second} after run ${first}`);
    life.update({ open: 0, retrying: 0 });
    life.started({ open: 0, retrying: 0 });
    const third = life.start();
    assert.ok(third > second + 1, `run ${third} after run ${second} closed`);
  });
  await t.step("a move outside STATE_EDGES throws and changes nothing", () => {
    const seen: StateChange[] = [];
    const life = new Lifecycle((change) => seen.push(change));
    life.start();
    life.started({ open: 1, retrying: 0 });
    assert.throws(() => life.start(), /Realm client bug: state open cannot move to connecting/);
    assert.equal(life.state, "open");
    assert.equal(seen.length, 2);
  });
});

// -- the client's states over loopback -------------------------------------------------------

Deno.test({
  name: "state: idle → connecting → open → reconnecting → open → idle, with statechange events",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates();
    assert.equal(t.client.state, "idle");
    await t.client.connect();
    assert.equal(t.client.state, "open");
    dropNow(t.server);
    // The reconnecting phase can be shorter than a poll: read the recorded moves.
    await until(() => t.path().length === 4, 3000, "reconnecting, then open again");
    await t.client.disconnect();
    assert.equal(t.client.state, "idle");
    assert.deepEqual(t.path(), ["connecting", "open", "reconnecting", "open", "idle"]);
    const drop = t.changes[2];
    assert.equal(drop.reason?.code, "CONNECTION_CLOSED", "the drop says why");
    assertEdgesAllowed(t.changes);
  },
});

Deno.test({
  name: "state: a failed connect() is closed with its reason; connect() from closed starts over",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({ apiKeys: { sk_good: "tenant-a" } }, {
      apiKey: "sk_bad",
    });
    failedWith(await outcome(t.client.connect(), 3000, "refused key"), "UNAUTHORIZED");
    assert.equal(t.client.state, "closed");
    assert.equal(t.changes.at(-1)?.reason?.code, "UNAUTHORIZED");
    t.server.setApiKey("sk_bad", "tenant-b");
    await within(3000, t.client.connect(), "connect after closed");
    assert.equal(t.client.state, "open");
    assert.equal(t.client.getTenantId(), "tenant-b");
    assert.deepEqual(t.path(), ["connecting", "closed", "connecting", "open"]);
  },
});

Deno.test({
  name: "state: with reconnect off a drop closes the client; queued calls fail at once",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({}, { reconnect: false });
    await t.client.connect();
    dropNow(t.server);
    await until(() => t.client.state === "closed", 2000, "closed");
    failedWith(await outcome(t.client.health(), 1000, "health when closed"), "NOT_CONNECTED");
    assert.deepEqual(t.path(), ["connecting", "open", "closed"]);
  },
});

Deno.test({
  name: "state: gave up after maxReconnectAttempts is closed, and the error event says why",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({}, { maxReconnectAttempts: 2 });
    const errors: string[] = [];
    t.client.on("error", (error) => errors.push(error.code));
    await t.client.connect();
    t.server.faults.rejectConnections(true);
    dropNow(t.server);
    t.server.faults.rejectConnections(true);
    await until(() => t.client.state === "closed", 3000, "gave up");
    assert.deepEqual(t.path(), ["connecting", "open", "reconnecting", "closed"]);
    assert.match(t.changes.at(-1)!.reason!.message, /after 2 attempts/);
    assert.deepEqual(errors, ["CONNECTION_CLOSED"]);
  },
});

Deno.test({
  name: "state: with `reconnect` off, the close of the last socket moves to closed with an " +
    "unsent CONNECTION_CLOSED",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      reconnect: false,
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect()");
      dropNow(server);
      await until(() => client.state === "closed", 3000, "the closed state");
      const change = seen.statechange.at(-1)!;
      assert.equal(change.from, "open");
      assert.equal(change.to, "closed");
      const { code } = seen.disconnected[0];
      assert.equal(change.reason?.code, "CONNECTION_CLOSED");
      assert.equal(
        change.reason?.message,
        `The connection closed (code ${code}) and \`reconnect\` is off. Call connect() again.`,
      );
      assert.equal(change.reason?.sent, false);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});
