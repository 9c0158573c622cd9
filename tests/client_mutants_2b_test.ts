/**
 * What the client façade (src/client.ts, its second half: connecting to a list of servers,
 * teardown, calls' results, listener bookkeeping) promises, pinned where the mutation run found
 * no test that would notice a change. Every test runs the client against servers over loopback.
 * @module
 */
import assert from "node:assert/strict";
import { RealmError, RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import {
  complete,
  deadUrl,
  delay,
  FAST,
  outcome,
  recordEvents,
  sanitize,
  scriptedServer,
  until,
  WELCOME,
  within,
} from "./_helpers.ts";

Deno.test({
  name: "client: an unreachable server of a list is reported once, with its url and cause, " +
    "and with `reconnect` off not retried",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const dead = deadUrl();
    const client = new RealmWebSocketClient({
      ...FAST,
      url: [server.url, dead],
      model: "llama-2-7b",
      connections: 4,
      reconnect: false,
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect() with one of two servers down");
      assert.equal(seen.error.length, 1, "one report for the two sockets of the dead server");
      const reported = seen.error[0];
      assert.ok(reported instanceof RealmError);
      assert.deepEqual(reported.details, { url: dead });
      assert.ok(reported.cause instanceof RealmError, "the socket's own failure is the cause");
      const cause = reported.cause as RealmError;
      assert.equal(reported.code, cause.code);
      assert.equal(
        reported.message,
        `The server at ${dead} could not be used: ${cause.message}`,
        "with `reconnect` off the message does not promise a retry",
      );
      const attempts = seen.connecting.length;
      await delay(200); // 20 reconnect intervals
      assert.equal(seen.reconnecting.length, 0, "no socket to the dead server is retried");
      assert.equal(seen.connecting.length, attempts);
      assert.equal(client.stats().openConnections, 2);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "client: a server of a list that one socket reached is not reported when its other " +
    "socket fails",
  ...sanitize,
  fn: async () => {
    // It takes its first socket, greets it and never answers; a second socket to it gets 503.
    const half = scriptedServer({ upgrades: 1, frame() {} });
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: [half.url, server.url],
      model: "llama-2-7b",
      connections: 4,
      reconnect: false,
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect() with a server that takes one socket");
      assert.equal(client.stats().openConnections, 3);
      assert.deepEqual(seen.error, [], "both servers are in use: nothing to report");
    } finally {
      await client.disconnect();
      await half.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "client: a server of a list that assigns another tenant is reported with its url",
  ...sanitize,
  fn: async () => {
    const acme = await startStubServer({ apiKeys: { "key-1": "acme" }, tokenDelayMs: 0 });
    const other = await startStubServer({ apiKeys: { "key-1": "globex" }, tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: [acme.url, other.url],
      model: "llama-2-7b",
      apiKey: "key-1",
      reconnect: false,
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect() with two tenants");
      assert.equal(seen.error.length, 1);
      const reported = seen.error[0];
      const url = (reported.details as { url: string }).url;
      assert.ok(url === acme.url || url === other.url, `reported url ${url}`);
      const cause = reported.cause as RealmError;
      assert.equal(cause.code, "TENANT_MISMATCH");
      assert.deepEqual(cause.details, { url }, "the mismatch names the server not used");
    } finally {
      await client.disconnect();
      await acme.close();
      await other.close();
    }
  },
});

Deno.test({
  name: "client: a dropped socket is logged with its close code, reason, retry and socket",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const lines: [string, Record<string, unknown> | undefined][] = [];
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      reconnect: false,
      logger: (message, data) => lines.push([message, data]),
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect()");
      server.faults.dropAfterFrames(0);
      server.faults.clear();
      await until(() => seen.disconnected.length === 1, 3000, "the disconnected event");
      const { code, reason } = seen.disconnected[0];
      assert.deepEqual(lines.filter(([message]) => message === "disconnected"), [
        ["disconnected", { code, reason, willReconnect: false, socket: 0 }],
      ]);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "client: a listener added for two events that throws is logged under each event's name",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const lines: string[] = [];
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      logger: (message) => lines.push(message),
    });
    const throwing = () => {
      throw new Error("listener bug");
    };
    client.addEventListener("connecting", throwing);
    client.addEventListener("connected", throwing);
    try {
      await within(5000, client.connect(), "connect()");
      assert.deepEqual(lines.filter((line) => line.includes("listener threw")), [
        'a "connecting" listener threw; the client went on',
        'a "connected" listener threw; the client went on',
      ]);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "client: generate's result without text or token count is empty text and 0 tokens; " +
    "a stream's without a count counts the tokens it streamed",
  ...sanitize,
  fn: async () => {
    const server = scriptedServer({
      frame(socket, frame) {
        const params = frame.params as Record<string, unknown>;
        if (params.stream === true) {
          ["Par", "is", "!"].forEach((text, index) =>
            socket.send(JSON.stringify({
              id: frame.id,
              status: "streaming",
              data: { text, index, is_final: index === 2 },
            }))
          );
          complete(socket, frame.id, { status: "complete" });
        } else complete(socket, frame.id, { status: "complete" });
      },
    });
    const client = new RealmWebSocketClient({ ...FAST, url: server.url, model: "llama-2-7b" });
    try {
      await within(5000, client.connect(), "connect()");
      const whole = await within(5000, client.generate({ prompt: "Hi" }), "generate");
      assert.equal(whole.text, "");
      assert.equal(whole.tokens_generated, 0);
      const streamed = await within(
        5000,
        client.generate({ prompt: "Hi", stream: true }),
        "streamed generate",
      );
      assert.equal(streamed.text, "Paris!");
      assert.equal(streamed.tokens_generated, 3);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "client: a statechange listener that disconnects on open hears no connected event",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({ ...FAST, url: server.url, model: "llama-2-7b" });
    const seen = recordEvents(client);
    client.on("statechange", ({ to }) => {
      if (to === "open") void client.disconnect();
    });
    try {
      const error = await within(
        5000,
        client.connect().then(() => undefined, (error: RealmError) => error),
        "connect() stopped by its listener",
      );
      assert.equal(error?.code, "ABORTED");
      assert.deepEqual(seen.connected, []);
      assert.equal(client.state, "idle");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name:
    "client: reconnect() called by a connected listener resolves only once a new socket is open",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({ ...FAST, url: server.url, model: "llama-2-7b" });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect()");
      let reconnected: Promise<number> | undefined;
      client.on("connected", () => {
        reconnected ??= client.reconnect().then(() => client.stats().openConnections);
      });
      server.faults.dropAfterFrames(0);
      server.faults.clear();
      await until(() => reconnected !== undefined, 3000, "the socket to reopen");
      assert.equal(await within(3000, reconnected!, "reconnect()"), 1);
      assert.equal(seen.connected.length, 3, "the first socket, its reopening, and reconnect()'s");
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "client: with `reconnect` off, the close of the last socket moves to closed with an " +
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
      server.faults.dropAfterFrames(0);
      server.faults.clear();
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

Deno.test({
  name: "client: a call waiting for connect() outlives a socket that gave up while another " +
    "was still opening",
  ...sanitize,
  fn: async () => {
    // The first socket opens, takes the call without answering, and drops; its one retry is
    // refused (503). The second socket is greeted only after that, and answers.
    let first: WebSocket | undefined;
    const server = scriptedServer({
      upgrades: 2,
      open(socket) {
        if (first === undefined) {
          first = socket;
          socket.send(WELCOME);
          setTimeout(() => socket.close(1011, "first one down"), 20);
        } else setTimeout(() => socket.readyState === WebSocket.OPEN && socket.send(WELCOME), 300);
      },
      frame(socket, frame) {
        if (socket !== first) {
          complete(socket, frame.id, { status: "healthy", active_connections: 1 });
        }
      },
    });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: server.url,
      model: "llama-2-7b",
      connections: 2,
      maxReconnectAttempts: 1,
    });
    const seen = recordEvents(client);
    try {
      const connected = client.connect();
      const health = outcome(client.health(), 5000, "health() sent on the second socket");
      await within(5000, connected, "connect()");
      assert.equal(seen.disconnected.length, 1, "the first socket dropped during connect()");
      assert.equal(seen.error.length, 1, "and gave up after its one retry");
      const result = await health;
      assert.ok("value" in result, `health() failed: ${"error" in result && result.error}`);
      const answer = result.value;
      assert.deepEqual(answer, {
        status: "healthy",
        active_connections: 1,
        requestId: answer.requestId,
      });
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});
