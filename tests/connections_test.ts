/**
 * Several sockets to one server (`connections: N`), the whole client over loopback: every socket
 * opens before `connect()` resolves, calls spread over the least busy sockets and run in parallel,
 * a call's timeout, abort and errors behave as on one socket, one dropped socket reconnects on its
 * own while the others serve, and `disconnect()` closes all. Parallelism is asserted through the
 * order tokens arrive in, never timing.
 */
import assert from "node:assert/strict";
import {
  type RealmClientOptions,
  RealmError,
  type RealmEventMap,
  RealmWebSocketClient,
} from "../mod.ts";
import { startStubServer, type StubServerOptions } from "../testing.ts";
import {
  deadUrl,
  delay,
  FAST,
  idleStats,
  rejection,
  sanitize,
  scriptedServer,
  until,
  WELCOME,
  withClient,
  within,
} from "./_helpers.ts";

type EventType = keyof RealmEventMap;
const EVENT_TYPES = ["connecting", "connected", "disconnected", "reconnecting", "error"] as const;

/**
 * A `WebSocket` option that keeps every socket the client opens, in order, with
 * the text frames sent on it: a test can close one of them (a drop of that
 * socket alone) and see which socket carried which call.
 */
function trackedWebSocket() {
  const sockets: { socket: WebSocket; sent: string[] }[] = [];
  class TrackedWebSocket extends WebSocket {
    readonly #sent: string[] = [];
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols);
      sockets.push({ socket: this, sent: this.#sent });
    }
    override send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
      if (typeof data === "string") this.#sent.push(data);
      super.send(data);
    }
  }
  return { WebSocket: TrackedWebSocket, sockets };
}

async function setup(
  connections: number,
  serverOptions: StubServerOptions = {},
  clientOptions: Partial<RealmClientOptions> = {},
) {
  const server = await startStubServer({
    tokenDelayMs: 1,
    longStreams: true,
    orchestrator: true,
    ...serverOptions,
  });
  const tracked = trackedWebSocket();
  const client = new RealmWebSocketClient({
    url: server.url,
    model: "llama-2-7b",
    connections,
    ...FAST,
    WebSocket: tracked.WebSocket,
    ...clientOptions,
  });
  const events: { type: EventType; detail: Record<string, unknown> }[] = [];
  for (const type of EVENT_TYPES) {
    client.on(type, (detail: unknown) => events.push({ type, detail: detail as never }));
  }
  return {
    server,
    client,
    events,
    sockets: tracked.sockets,
    /** The events of one type, in order. */
    of(type: EventType) {
      return events.filter((e) => e.type === type).map((e) => e.detail);
    },
    async [Symbol.asyncDispose]() {
      await client.disconnect();
      await server.close();
    },
  };
}

/** The `function` and the prompt or name of every call frame sent on a socket. */
function callsOn(sent: string[]): string[] {
  return sent.map((text) => JSON.parse(text)).filter((frame) => "function" in frame).map((
    frame,
  ) => frame.params?.prompt ?? frame.function);
}

/** Reads a whole stream, appending `name` to `arrivals` for every token. */
async function readStream(
  client: RealmWebSocketClient,
  name: string,
  maxTokens: number,
  arrivals: string[],
): Promise<number> {
  let count = 0;
  for await (const _ of client.generateStream({ prompt: name, max_tokens: maxTokens })) {
    arrivals.push(name);
    count++;
  }
  return count;
}

Deno.test({
  name:
    "connections: connect() resolves once all N sockets are open, each announced with its index",
  ...sanitize,
  fn: async () => {
    await using t = await setup(3);
    await t.client.connect();
    assert.equal(t.server.connectionCount, 3);
    assert.equal(t.client.isConnected(), true);
    assert.deepEqual(t.client.stats(), idleStats(3, EVENT_TYPES.length));
    const indices = t.of("connected").map((d) => d.socket).sort();
    assert.deepEqual(indices, [0, 1, 2]);
    assert.deepEqual(t.of("connecting").map((d) => d.attempt), [0]);
    assert.equal(t.sockets.length, 3);
    // Calling it again while connected does not open more.
    await t.client.connect();
    assert.equal(t.sockets.length, 3);
  },
});

Deno.test({
  name:
    "connections: a socket that cannot open at connect() is reported, the others serve, and it is not retried when retrying cannot help",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 1 });
    let opened = 0;
    class ThirdFails extends WebSocket {
      constructor(url: string | URL, protocols?: string | string[]) {
        if (++opened === 3) throw new SyntaxError("no third socket today");
        super(url, protocols);
      }
    }
    const client = new RealmWebSocketClient({
      url: server.url,
      model: "llama-2-7b",
      connections: 3,
      WebSocket: ThirdFails,
    });
    const errors: RealmError[] = [];
    client.on("error", (error) => errors.push(error));
    try {
      await within(5000, client.connect(), "connect()");
      assert.equal(client.state, "open");
      assert.equal(errors.length, 1, "the socket that cannot open is reported");
      assert.equal(errors[0].code, "INVALID_OPTIONS");
      assert.match(errors[0].message, /no third socket today/);
      assert.deepEqual(errors[0].details, { url: server.url, socket: 2 });
      assert.match(errors[0].message, /could not be used by socket 2: /);
      assert.equal(client.stats().openConnections, 2);
      assert.equal((await client.health()).status, "healthy");
      await delay(100);
      assert.equal(opened, 3, "a fatal error is not retried");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name:
    "connections: a socket that failed at connect() on a server the others reached keeps trying until the pool is full",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 1 });
    const dead = deadUrl();
    let made = 0;
    // The third socket's first attempt goes nowhere (as if the server refused it); later ones
    // reach the server.
    class ThirdMissesOnce extends WebSocket {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(++made === 3 ? dead : url, protocols);
      }
    }
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      connections: 3,
      WebSocket: ThirdMissesOnce,
    });
    const errors: RealmError[] = [];
    client.on("error", (error) => errors.push(error));
    try {
      await within(5000, client.connect(), "connect()");
      assert.equal(client.state, "open");
      assert.deepEqual(errors, [], "the server was reached: nothing to report");
      await until(() => client.stats().openConnections === 3, 3000, "the third socket");
      assert.equal(server.connectionCount, 3);
      assert.equal(made, 4, "one more attempt, then none: the pool is full");
      await delay(100);
      assert.equal(made, 4);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "connections: N concurrent streams run in parallel (their tokens interleave)",
  ...sanitize,
  fn: async () => {
    await using t = await setup(3, { tokenDelayMs: 2 });
    await t.client.connect();
    const arrivals: string[] = [];
    const names = ["alpha", "beta", "gamma"];
    const counts = await Promise.all(names.map((name) => readStream(t.client, name, 20, arrivals)));
    assert.deepEqual(counts, [20, 20, 20]);
    // Every stream had started before any had finished: on one socket each would wait for
    // the one before it to end.
    const lastFirst = Math.max(...names.map((name) => arrivals.indexOf(name)));
    const firstLast = Math.min(...names.map((name) => arrivals.lastIndexOf(name)));
    assert.ok(lastFirst < firstLast, `streams did not overlap: ${arrivals.join(" ")}`);
    // One stream per socket.
    assert.deepEqual(t.sockets.map((s) => callsOn(s.sent)).flat().sort(), names);
    for (const { sent } of t.sockets) assert.equal(callsOn(sent).length, 1);
  },
});

Deno.test({
  name: "connections: calls spread over the least busy sockets",
  ...sanitize,
  fn: async () => {
    await using t = await setup(3);
    await t.client.connect();
    const answers = await Promise.all(Array.from({ length: 6 }, () => t.client.health()));
    assert.ok(answers.every((a) => a.status === "healthy"));
    assert.deepEqual(t.sockets.map((s) => callsOn(s.sent).length), [2, 2, 2]);
  },
});

Deno.test({
  name:
    "connections: a call sent while one socket streams goes to the idle one and is answered first",
  ...sanitize,
  fn: async () => {
    await using t = await setup(2, { tokenDelayMs: 2 });
    await t.client.connect();
    const arrivals: string[] = [];
    const stream = readStream(t.client, "long", 30, arrivals);
    await until(() => arrivals.length > 0, 3000, "the stream's first token");
    const health = t.client.health().then(() => arrivals.push("health"));
    await Promise.all([stream, health]);
    assert.ok(arrivals.indexOf("health") < arrivals.length - 1, arrivals.join(" "));
  },
});

Deno.test({
  name: "connections: a stream left early still counts as busy, so the next call avoids its socket",
  ...sanitize,
  fn: async () => {
    await using t = await setup(2, { tokenDelayMs: 2 });
    await t.client.connect();
    for await (const _ of t.client.generateStream({ prompt: "abandoned", max_tokens: 100 })) break;
    const carrier = t.sockets.findIndex((s) => callsOn(s.sent).includes("abandoned"));
    assert.ok(carrier >= 0);
    // The server is still streaming it: that socket is busy though nobody listens.
    assert.equal(t.client.stats().callsOnTheWire, 1);
    assert.equal((await t.client.health()).status, "healthy");
    assert.deepEqual(callsOn(t.sockets[1 - carrier].sent), ["health"]);
    await until(() => t.client.stats().callsOnTheWire === 0, 5000, "the abandoned stream's end");
  },
});

Deno.test({
  name:
    "connections: a stream left early stops counting as busy once it has been quiet for a while",
  ...sanitize,
  fn: async () => {
    // abandonedCallTtl is streamIdleTimeout: 30 ms here, against 400 ms between tokens.
    await using t = await setup(2, { tokenDelayMs: 400 }, { streamIdleTimeout: 30 });
    await t.client.connect();
    // One socket carries a stream that is still read (its own idle timeout is long): busy.
    const kept = t.client.generate(
      { prompt: "kept", max_tokens: 2, stream: true },
      { streamIdleTimeout: 5000 },
    );
    kept.catch(() => {}); // Awaited below; a failed assertion first must not leave it unhandled.
    const sent = (i: number) => callsOn(t.sockets[i].sent);
    await until(() => [0, 1].some((i) => sent(i).includes("kept")), 3000, "the kept stream sent");
    const busy = sent(0).includes("kept") ? 0 : 1;
    const other = 1 - busy;
    // The other socket then carries a stream that is left after its first token.
    for await (const _ of t.client.generateStream({ prompt: "abandoned", max_tokens: 2 })) break;
    assert.deepEqual(sent(other), ["abandoned"]);
    await delay(100);
    // The abandoned stream has been quiet for longer than 30 ms: that socket counts as idle
    // again, while the first is still busy with the stream being read. The call goes there.
    const health = t.client.health();
    health.catch(() => {});
    assert.deepEqual(sent(other), ["abandoned", "health"]);
    assert.deepEqual(sent(busy), ["kept"]);
    assert.equal(
      (await within(5000, health, "health behind the abandoned stream")).status,
      "healthy",
    );
    assert.equal((await within(5000, kept, "the kept stream")).text, "The capital ");
  },
});

/** The outcome of a rejected call, in a form to compare between pool sizes. */
function outcome(error: RealmError) {
  return { code: error.code, sent: error.sent, message: error.message.replace(/call \d+/g, "") };
}

for (const connections of [1, 3]) {
  Deno.test({
    name: `connections: timeout, abort and server errors, with the option at ${connections}`,
    ...sanitize,
    fn: async () => {
      await using t = await setup(connections, { tokenDelayMs: 5 });
      await t.client.connect();

      // A server error reaches the caller unchanged.
      const missing = await rejection(t.client.executePipeline("nope", {}));
      assert.deepEqual(outcome(missing), {
        code: "DISPATCH_ERROR",
        sent: true,
        message: "Pipeline not found: nope",
      });

      // A stream aborted midway rejects with ABORTED; the sockets keep working.
      const controller = new AbortController();
      let tokens = 0;
      const aborted = await rejection((async () => {
        const stream = t.client.generateStream({ prompt: "story", max_tokens: 50 }, {
          signal: controller.signal,
        });
        for await (const _ of stream) if (++tokens === 2) controller.abort();
      })());
      assert.equal(aborted.code, "ABORTED");
      assert.equal(aborted.sent, true);
      assert.equal((await t.client.health()).status, "healthy");

      // A stalled server: the call times out with TIMEOUT and says it was sent.
      t.server.faults.stall(true);
      const timedOut = await rejection(t.client.health({ timeout: 30 }), 2000, "the 30 ms timeout");
      t.server.faults.stall(false);
      assert.equal(timedOut.code, "TIMEOUT");
      assert.equal(timedOut.sent, true);
      assert.match(timedOut.message, /within 30 ms/);

      // Bad input rejects before anything is sent.
      const before = t.server.callCount;
      const invalid = await rejection(t.client.generate({ prompt: "x", max_tokens: 0 }));
      assert.equal(invalid.code, "INVALID_PARAMS");
      assert.equal(t.server.callCount, before);
      assert.equal(t.client.isConnected(), true);
    },
  });
}

Deno.test({
  name: "connections: before connect() and after disconnect() calls fail with NOT_CONNECTED",
  ...sanitize,
  fn: async () => {
    await using t = await setup(2);
    assert.equal((await rejection(t.client.health())).code, "NOT_CONNECTED");
    await t.client.connect();
    await t.client.disconnect();
    assert.equal((await rejection(t.client.health())).code, "NOT_CONNECTED");
  },
});

Deno.test({
  name: "connections: one socket dropped reconnects on its own while the others keep serving",
  ...sanitize,
  fn: async () => {
    await using t = await setup(3, { tokenDelayMs: 2 });
    await t.client.connect();
    const arrivals: string[] = [];
    // One stream per socket; the test drops the socket that carries "victim".
    const streams = ["victim", "other-1", "other-2"].map((name) =>
      readStream(t.client, name, 40, arrivals).then(
        (count) => ({ name, count }),
        (error: RealmError) => ({ name, error }),
      )
    );
    await until(() => new Set(arrivals).size === 3, 3000, "a token of every stream");
    const dropped = t.sockets.findIndex((s) => callsOn(s.sent).includes("victim"));
    assert.ok(dropped >= 0);
    // Keep the dropped socket from coming back until the others have been checked.
    t.server.faults.rejectConnections(true);
    t.sockets[dropped].socket.close();
    await until(() => t.of("disconnected").length === 1, 3000, "the disconnected event");
    const [gone] = t.of("disconnected");
    assert.equal(gone.willReconnect, true);
    const slot = gone.socket as number;
    assert.equal(t.client.isConnected(), true);
    assert.equal(t.client.stats().openConnections, 2);
    assert.equal((await t.client.health()).status, "healthy");

    const results = await within(5000, Promise.all(streams), "every stream's end");
    const victim = results.find((r) => r.name === "victim")!;
    assert.ok("error" in victim, "the stream on the dropped socket fails");
    assert.equal(victim.error.code, "CONNECTION_CLOSED");
    assert.equal(victim.error.sent, true);
    for (const other of results.filter((r) => r.name !== "victim")) {
      assert.deepEqual(other, { name: other.name, count: 40 }, "the other streams end intact");
    }

    t.server.faults.rejectConnections(false);
    await until(() => t.of("connected").length === 4, 5000, "the socket reconnected");
    assert.equal(t.of("connected")[3].socket, slot);
    assert.ok(t.of("reconnecting").length >= 1);
    assert.ok(t.of("reconnecting").every((d) => d.socket === slot), "only that socket");
    assert.ok(t.of("connecting").slice(1).every((d) => d.socket === slot), "only that socket");
    assert.equal(t.of("disconnected").length, 1);
    assert.equal(t.server.connectionCount, 3);
    assert.equal(t.client.stats().openConnections, 3);
    const replacement = t.sockets.at(-1)!;
    const answers = await Promise.all(Array.from({ length: 6 }, () => t.client.health()));
    assert.equal(answers.length, 6);
    assert.equal(callsOn(replacement.sent).length, 2, "the new socket takes its share");
  },
});

Deno.test({
  name: "connections: a health call on the dropped socket is resent on another and succeeds",
  ...sanitize,
  fn: async () => {
    await using t = await setup(2, { tokenDelayMs: 2 });
    await t.client.connect();
    const arrivals: string[] = [];
    // A stream occupies one socket; a health call queued behind it on the same socket
    // is only possible when the other is busy too, so fill both.
    const streams = ["s0", "s1"].map((name) =>
      readStream(t.client, name, 40, arrivals).catch((error: RealmError) => error)
    );
    await until(() => new Set(arrivals).size === 2, 3000, "both streams started");
    const health = t.client.health();
    const carrier = t.sockets.findIndex((s) => callsOn(s.sent).includes("health"));
    assert.ok(carrier >= 0);
    // No reconnect meanwhile: the resent call can only go to the other socket.
    t.server.faults.rejectConnections(true);
    t.sockets[carrier].socket.close();
    assert.equal((await within(3000, health, "the resent health")).status, "healthy");
    const [dropped] = t.of("disconnected");
    assert.equal(dropped.willReconnect, true);
    assert.equal(t.of("connected").length, 2, "answered before any reconnect");
    assert.equal(callsOn(t.sockets[1 - carrier].sent).filter((c) => c === "health").length, 1);
    const failed = (await within(5000, Promise.all(streams), "both streams' ends")).filter((r) =>
      r instanceof RealmError
    );
    assert.equal(failed.length, 1, "only the stream on the dropped socket fails");
    assert.equal((failed[0] as RealmError).code, "CONNECTION_CLOSED");
    t.server.faults.rejectConnections(false);
    await until(() => t.server.connectionCount === 2 && t.client.stats().openConnections === 2);
  },
});

Deno.test({
  name:
    "connections: every socket dropped at once: calls wait, all sockets reconnect, calls are served",
  ...sanitize,
  fn: async () => {
    await using t = await setup(3);
    await t.client.connect();
    t.server.faults.rejectConnections(true);
    t.server.faults.dropAfterFrames(0);
    t.server.faults.dropAfterFrames(Infinity);
    await until(() => t.of("disconnected").length === 3, 3000, "every socket seen closed");
    assert.equal(t.client.isConnected(), false);
    assert.deepEqual(t.of("disconnected").map((d) => d.socket).sort(), [0, 1, 2]);
    const waiting = Promise.all(Array.from({ length: 5 }, () => t.client.health()));
    assert.equal(t.client.stats().queuedCalls, 5);
    t.server.faults.clear();
    const answers = await within(5000, waiting, "the calls waiting for a reconnect");
    assert.ok(answers.every((a) => a.status === "healthy"));
    await until(() => t.client.stats().openConnections === 3, 3000, "all three reopened");
    assert.equal(t.server.connectionCount, 3);
  },
});

Deno.test({
  name: "connections: isConnected() stays true while at least one socket is open",
  ...sanitize,
  fn: async () => {
    await using t = await setup(2, {}, { reconnect: false });
    await t.client.connect();
    t.sockets[0].socket.close();
    await until(() => t.of("disconnected").length === 1, 3000, "the first close");
    assert.equal(t.of("disconnected")[0].willReconnect, false);
    assert.equal(t.client.isConnected(), true);
    assert.equal((await t.client.health()).status, "healthy");
    assert.equal(callsOn(t.sockets[1].sent).length, 1, "served by the socket left");
    t.sockets[1].socket.close();
    await until(() => t.of("disconnected").length === 2, 3000, "the second close");
    assert.equal(t.client.isConnected(), false);
    assert.equal((await rejection(t.client.health())).code, "NOT_CONNECTED");
    assert.deepEqual(t.of("disconnected").map((d) => d.socket).sort(), [0, 1]);
  },
});

Deno.test({
  name: "connections: disconnect() closes every socket and leaves nothing behind",
  ...sanitize,
  fn: async () => {
    await using t = await setup(4, { tokenDelayMs: 2 });
    await t.client.connect();
    assert.equal(t.server.connectionCount, 4);
    const arrivals: string[] = [];
    const stream = readStream(t.client, "story", 100, arrivals).catch((e: RealmError) => e);
    await until(() => arrivals.length > 0, 3000, "a first token");
    await t.client.disconnect();
    assert.equal(t.client.isConnected(), false);
    const ended = await within(3000, stream, "the stream's end on disconnect()");
    assert.ok(ended instanceof RealmError && ended.code === "CONNECTION_CLOSED");
    await until(() => t.server.connectionCount === 0, 3000, "the server saw every close");
    const closes = t.of("disconnected");
    assert.deepEqual(closes.map((d) => d.socket).sort(), [0, 1, 2, 3]);
    assert.ok(closes.every((d) => d.willReconnect === false));
    assert.deepEqual(t.client.stats(), idleStats(0, EVENT_TYPES.length));
  },
});

Deno.test({
  name: "connections: disconnect() while one socket waits to reconnect stops that reconnect too",
  ...sanitize,
  fn: async () => {
    await using t = await setup(2, {}, { reconnectInterval: 20, maxReconnectInterval: 40 });
    await t.client.connect();
    t.server.faults.rejectConnections(true);
    t.sockets[0].socket.close();
    await until(() => t.of("reconnecting").length >= 1, 3000, "a reconnect scheduled");
    await t.client.disconnect();
    t.server.faults.rejectConnections(false);
    await until(() => t.server.connectionCount === 0, 3000, "every socket closed");
    // Well past the longest reconnect delay: nothing came back.
    await delay(150);
    assert.equal(t.server.connectionCount, 0);
    assert.equal(t.of("connected").length, 2, "only the first two connections");
    assert.equal(t.client.isConnected(), false);
    assert.deepEqual(t.client.stats(), idleStats(0, EVENT_TYPES.length));
  },
});

Deno.test({
  name:
    "connections: a socket that gave up reconnecting is reopened by connect() while others serve",
  ...sanitize,
  fn: async () => {
    await using t = await setup(2, {}, { maxReconnectAttempts: 2 });
    await t.client.connect();
    t.server.faults.rejectConnections(true);
    t.sockets[0].socket.close();
    await until(() => t.of("error").length === 1, 3000, "socket 0 giving up");
    assert.equal((t.of("error")[0] as unknown as RealmError).code, "CONNECTION_CLOSED");
    assert.equal(t.client.isConnected(), true, "socket 1 still serves");
    assert.equal(t.client.stats().openConnections, 1);
    assert.equal((await t.client.health()).status, "healthy");
    t.server.faults.rejectConnections(false);
    // While open, connect() resolves at once and reopens what is down in the background.
    await within(1000, t.client.connect(), "connect() while open");
    await until(() => t.client.stats().openConnections === 2, 3000, "socket 0 reopened");
    assert.equal(t.server.connectionCount, 2);
  },
});

Deno.test({
  name: "connections: N opens N sockets and runs calls in parallel",
  ...sanitize,
  fn: () =>
    withClient({ tokenDelayMs: 2 }, { connections: 2 }, async (client, server) => {
      await client.connect();
      assert.equal(server.connectionCount, 2);
      assert.equal(client.stats().openConnections, 2);
      const arrivals: string[] = [];
      await Promise.all(["a", "b"].map((name) =>
        client.generate({
          prompt: "story",
          stream: true,
          max_tokens: 6,
          onToken: () => arrivals.push(name),
        })
      ));
      // On one socket the second stream would wait for the first; on two they interleave.
      assert.notDeepEqual(arrivals, [...arrivals].sort());
    }),
});

Deno.test({
  name: 'connections: the state is never "open" with no open socket, also while connect() opens ' +
    "the pool",
  ...sanitize,
  fn: async () => {
    // The first socket is greeted and dropped 20 ms later; the two others are greeted at 300 ms.
    let greeted = 0;
    const server = scriptedServer({
      open(socket) {
        if (greeted++ === 0) {
          socket.send(WELCOME);
          setTimeout(() => socket.readyState === WebSocket.OPEN && socket.close(1011, "gone"), 20);
        } else setTimeout(() => socket.readyState === WebSocket.OPEN && socket.send(WELCOME), 300);
      },
      frame: () => {},
    });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      connections: 3,
    });
    const seen: { type: string; state: string; openConnections: number }[] = [];
    const look = (type: string) =>
      seen.push({ type, state: client.state, openConnections: client.stats().openConnections });
    for (const type of [...EVENT_TYPES, "statechange"] as const) client.on(type, () => look(type));
    // Between events too: the state as code polling it would read it.
    const polling = setInterval(() => look("poll"), 1);
    try {
      await within(5000, client.connect(), "connect()");
      await until(() => client.stats().openConnections === 3, 3000, "all three sockets open");
      await delay(20);
    } finally {
      clearInterval(polling);
      await within(5000, client.disconnect(), "disconnect()");
      await server.close();
    }
    assert.ok(seen.some(({ type }) => type === "disconnected"), "the first socket dropped");
    const wrong = seen.filter(({ state, openConnections }) =>
      state === "open" && openConnections === 0
    );
    assert.deepEqual(wrong, [], 'the state was "open" with no open socket');
  },
});

type Fixture = Awaited<ReturnType<typeof setup>>;

/** Socket 0 drops and gives up reconnecting (its attempts refused); sockets 1 and 2 serve. */
async function oneGaveUp({ server, client, sockets, of }: Fixture): Promise<void> {
  await within(5000, client.connect(), "connect()");
  server.faults.rejectConnections(true);
  sockets[0].socket.close();
  await until(() => of("error").length === 1, 3000, "socket 0 giving up");
  server.faults.rejectConnections(false);
}

/**
 * What a test does to a client of `connections: 3` (five reconnect attempts at most) before
 * watching its sockets settle, and how many sockets that makes in all.
 */
const IN_A_ROW: {
  name: string;
  made: number;
  before?(fixture: Fixture): Promise<void>;
  run(client: RealmWebSocketClient): Promise<void>[];
}[] = [
  {
    name: "connect() then reconnect() at once",
    made: 3,
    run: (client) => [client.connect(), client.reconnect()],
  },
  {
    name: "open, then reconnect() and connect() at once",
    made: 6,
    before: ({ client }) => within(5000, client.connect(), "connect()"),
    run: (client) => [client.reconnect(), client.connect()],
  },
  {
    name: "open, then connect() and reconnect() at once",
    made: 6,
    before: ({ client }) => within(5000, client.connect(), "connect()"),
    run: (client) => [client.connect(), client.reconnect()],
  },
  {
    name: "open, then reconnect() twice at once",
    made: 6,
    before: ({ client }) => within(5000, client.connect(), "connect()"),
    run: (client) => [client.reconnect(), client.reconnect()],
  },
  {
    // Three at first, socket 0's five refused retries, then it and the two dropped ones again.
    name: "a socket given up, then connect() and reconnect() at once",
    made: 11,
    before: oneGaveUp,
    run: (client) => [client.connect(), client.reconnect()],
  },
  {
    name: "a socket given up, then reconnect() and connect() at once",
    made: 11,
    before: oneGaveUp,
    run: (client) => [client.reconnect(), client.connect()],
  },
];

Deno.test({
  name: "connections: never more sockets than `connections`, also after connect() and " +
    "reconnect() in a row, and none opened afterwards",
  ...sanitize,
  fn: async (t) => {
    for (const sequence of IN_A_ROW) {
      await t.step({
        name: sequence.name,
        ...sanitize,
        fn: async () => {
          await using fixture = await setup(3, {}, { maxReconnectAttempts: 5 });
          const { server, client, sockets } = fixture;
          await sequence.before?.(fixture);
          let most = 0;
          const counting = setInterval(() => most = Math.max(most, server.connectionCount), 1);
          try {
            const settled = await within(
              5000,
              Promise.allSettled(sequence.run(client)),
              "the calls",
            );
            assert.deepEqual(settled.map(({ status }) => status), settled.map(() => "fulfilled"));
            await until(() => server.connectionCount === 3, 3000, "three sockets on the server");
            // Many backoff steps (10 to 50 ms): a loop still running would open and close more.
            await delay(300);
            assert.equal(sockets.length, sequence.made, "sockets made");
            assert.equal(server.connectionCount, 3);
            assert.equal(client.stats().openConnections, 3);
            assert.equal(client.state, "open");
          } finally {
            clearInterval(counting);
          }
          assert.ok(most <= 3, `the server saw ${most} sockets at once`);
        },
      });
    }
  },
});
