/**
 * The handshake. `openConnection` and `closeSocket` on their own, with a scripted WebSocket: what
 * each way a handshake can end reports (exact codes, messages, `sent`, `cause`), which sockets are
 * closed and handed to `closing` (and which are not), the optional params left out, and closing a
 * socket that refuses a reason, closes at once, or never answers the close handshake. Then the
 * whole client over loopback, against open and authenticating servers: the tenant the key decides.
 */
import assert from "node:assert/strict";
import {
  type Connection,
  type ConnectionHandlers,
  type ConnectionParams,
  openConnection,
} from "../src/connection.ts";
import {
  type RealmError,
  type RealmEventMap,
  RealmWebSocketClient,
  type WebSocketConstructor,
} from "../mod.ts";
import {
  callFrames,
  complete,
  failedWith,
  FRANCE,
  outcome,
  rejection,
  sanitize,
  scriptedServer,
  ScriptedSocketBase,
  sendFrame,
  sentCalls,
  WELCOME,
  withClient,
  withFakeClock,
  within,
  withScripted,
} from "./_helpers.ts";

const URL = "ws://realm.test:8000";

/** How a scripted socket behaves beyond a well-behaved one. */
interface Quirks {
  /** `close(code, reason)` throws as a browser does for a reason over 123 bytes. */
  refusesLongReason?: boolean;
  /** `close()` closes at once: `readyState` 3 and the close event fired inside the call. */
  closesInsideClose?: boolean;
  /** `close()` makes `readyState` 3 at once, the close event follows on a microtask. */
  closedAtOnce?: boolean;
  /** The peer never answers the close handshake: no close event ever. */
  neverCloses?: boolean;
  /** `send()` throws (the socket went away under the handshake). */
  sendThrows?: boolean;
  /** Give the socket a `terminate()` as `ws`'s sockets have. */
  terminate?: boolean;
}

/** A WebSocket the test drives: it plays the server's side by hand. */
class ScriptedSocket extends ScriptedSocketBase {
  sent: string[] = [];
  /** Every `close()` call's arguments, in order. */
  closes: unknown[][] = [];
  terminated = 0;
  terminate?: () => void;
  constructor(readonly url: string, readonly quirks: Quirks) {
    super();
    if (quirks.terminate) this.terminate = () => void this.terminated++;
  }
  send(text: string) {
    if (this.quirks.sendThrows) throw new DOMException("socket is closed", "InvalidStateError");
    this.sent.push(text);
  }
  close(...args: [code?: number, reason?: string]) {
    this.closes.push(args);
    const [code = 1005, reason = ""] = args;
    if (this.quirks.refusesLongReason && new TextEncoder().encode(reason).length > 123) {
      throw new DOMException("The close reason is too long.", "SyntaxError");
    }
    if (this.readyState >= 2) return;
    const event = () => new CloseEvent("close", { code, reason });
    if (this.quirks.closesInsideClose) {
      this.readyState = 3;
      this.onclose?.(event());
    } else if (this.quirks.closedAtOnce) {
      this.readyState = 3;
      queueMicrotask(() => this.onclose?.(event()));
    } else {
      this.readyState = 2;
      if (this.quirks.neverCloses) return;
      queueMicrotask(() => {
        this.readyState = 3;
        this.onclose?.(event());
      });
    }
  }
}

/** A WebSocket constructor whose sockets have `quirks`; `made` lists them. */
function scripted(quirks: Quirks = {}) {
  const made: ScriptedSocket[] = [];
  const WebSocket = class extends ScriptedSocket {
    constructor(url: string) {
      super(url, quirks);
      made.push(this);
    }
  } as unknown as WebSocketConstructor;
  return { WebSocket, made };
}

const handlers: ConnectionHandlers = { frame: () => {}, closed: () => {} };

/** Params with no `signal`, `log` nor `closing` (they are optional), and no heartbeat. */
function params(
  WebSocket: WebSocketConstructor,
  more: Partial<ConnectionParams> = {},
): ConnectionParams {
  return {
    url: URL,
    WebSocket,
    tenantId: "tenant-a",
    connectTimeout: Infinity,
    heartbeatInterval: 0,
    heartbeatTimeout: 1000,
    abandonedCallTtl: 1000,
    ...more,
  };
}

/** Records what `closing` is told: one promise per socket given up, and whether it settled. */
function closings() {
  const told: { ended: boolean }[] = [];
  const closing = (closed: Promise<void>) => {
    const entry = { ended: false };
    told.push(entry);
    void closed.then(() => entry.ended = true);
  };
  return { told, closing };
}

/** Lets queued microtasks (scripted close events, promise reactions) run. */
async function microtasks(n = 8): Promise<void> {
  for (let i = 0; i < n; i++) await null;
}

const AUTH_REQUIRED = { type: "auth_required", message: "Send an auth frame" };

Deno.test("handshake: a welcome opens the connection without signal, log or closing", async () => {
  // None of the optional params is given: nothing may read them unguarded.
  const { WebSocket, made } = scripted();
  const opening = openConnection(params(WebSocket), handlers);
  made[0].open();
  made[0].receive(WELCOME);
  const connection = await within(1000, opening, "the connection");
  assert.equal(connection.tenantId, "tenant-a", "an open server assigns no tenant: the option's");
  assert.equal(connection.serverVersion, "0.1.0");
  assert.equal(connection.open, true);
  await within(1000, connection.close(), "the close");
  assert.deepEqual(made[0].closes, [[1000, ""]]);
});

Deno.test("handshake: the connection is logged with its url, tenant and server version", async () => {
  const { WebSocket, made } = scripted();
  const logs: unknown[][] = [];
  const opening = openConnection(
    params(WebSocket, { log: (...line: unknown[]) => void logs.push(line) }),
    handlers,
  );
  made[0].open();
  made[0].receive({ status: "connected", version: "0.2.1", tenant_id: "acme_1" });
  const connection = await within(1000, opening, "the connection");
  assert.equal(connection.tenantId, "acme_1", "the server's tenant id wins");
  assert.deepEqual(logs, [["connected", { url: URL, tenantId: "acme_1", version: "0.2.1" }]]);
  await within(1000, connection.close(), "the close");
});

Deno.test("handshake: a tenant id that breaks the server's rule is refused, quoted up to 80 characters", async () => {
  const { WebSocket, made } = scripted();
  const { told, closing } = closings();
  const opening = openConnection(params(WebSocket, { closing }), handlers);
  made[0].open();
  made[0].receive({ status: "connected", version: "0.1.0", tenant_id: "x".repeat(100) });
  const error = await rejection(opening, 1000);
  assert.equal(error.code, "PROTOCOL_ERROR");
  assert.equal(
    error.message,
    `The server at ${URL} assigned the tenant id "${"x".repeat(80)}", against its own rule ` +
      "(3 to 64 letters, digits, '-', '_'): is it a Realm server?",
  );
  await microtasks();
  assert.deepEqual(made[0].closes, [[1000, ""]], "the socket is closed");
  assert.deepEqual(told, [{ ended: true }], "and `closing` told of it, ended");
});

Deno.test("handshake: a signal aborted beforehand ends the attempt at once with ABORTED", async () => {
  const { WebSocket, made } = scripted();
  const { told, closing } = closings();
  const controller = new AbortController();
  controller.abort();
  const opening = openConnection(
    params(WebSocket, { signal: controller.signal, closing }),
    handlers,
  );
  // The socket never opens here: only the aborted signal can end the attempt.
  const error = await rejection(opening, 1000);
  assert.equal(error.code, "ABORTED");
  assert.equal(error.message, "The connection attempt was cancelled by disconnect().");
  assert.equal(error.sent, false);
  assert.equal(told.length, 1, "the connecting socket is handed to `closing`");
  made[0].open();
  assert.deepEqual(made[0].closes, [[1000, ""]], "and closed once it opens");
  await microtasks();
  assert.deepEqual(told, [{ ended: true }]);
});

Deno.test("handshake: a close before the handshake is CONNECTION_CLOSED with its code and reason", async (t) => {
  for (
    const [code, reason, said] of [[4001, "go away", "4001: go away"], [1006, "", "1006"]] as const
  ) {
    await t.step(`close code ${code}`, async () => {
      const { WebSocket, made } = scripted();
      const { told, closing } = closings();
      const opening = openConnection(params(WebSocket, { closing }), handlers);
      made[0].open();
      made[0].serverClose(code, reason);
      const error = await rejection(opening, 1000);
      assert.equal(error.code, "CONNECTION_CLOSED");
      assert.equal(
        error.message,
        `Could not connect to ${URL} (close code ${said}): is a server running there?`,
      );
      assert.equal(error.sent, false);
      // A socket that closed by itself has nothing left to close or wait for.
      assert.deepEqual(made[0].closes, []);
      assert.deepEqual(told, []);
    });
  }
});

Deno.test("handshake: an error names the HTTP status where the runtime tells it, and is the cause", async (t) => {
  const plain = `Could not connect to ${URL}: is a server running there?`;
  const cases: [runtime: string, message: string | undefined, said: string][] = [
    ["ws (Node 20)", "Unexpected server response: 404", " (an HTTP server answered 404)"],
    [
      "Deno",
      "NetworkError: failed to connect to WebSocket: Invalid status code: 426",
      " (an HTTP server answered 426)",
    ],
    [
      "Bun",
      `WebSocket connection to '${URL}/' failed: Expected 101 status code: 200`,
      " (an HTTP server answered 200)",
    ],
    // Node 22 says the same whatever answered; a refused connection tells no status either.
    ["Node 22", "Received network error or non-101 status code.", ""],
    ["ws, nothing listening", "connect ECONNREFUSED 127.0.0.1:8000", ""],
  ];
  for (const [runtime, message, said] of cases) {
    await t.step(runtime, async () => {
      const { WebSocket, made } = scripted();
      const opening = openConnection(params(WebSocket), handlers);
      const underlying = new Error(message);
      made[0].onerror?.(new ErrorEvent("error", { message, error: underlying }));
      const error = await rejection(opening, 1000);
      assert.equal(error.code, "CONNECTION_CLOSED");
      assert.equal(error.message, plain.replace(": is", `${said}: is`));
      assert.equal(error.cause, underlying);
      assert.equal(error.sent, false);
    });
  }
  await t.step("a browser: an Event with nothing in it, or no event at all", async () => {
    for (const event of [new Event("error"), undefined]) {
      const { WebSocket, made } = scripted();
      const opening = openConnection(params(WebSocket), handlers);
      made[0].onerror?.(event as Event);
      const error = await rejection(opening, 1000);
      assert.equal(error.message, plain);
      assert.equal(error.cause, event);
    }
  });
});

Deno.test({
  name: "handshake: a plain HTTP server at the address: connect() names its status, with the cause",
  ...sanitize,
  fn: async () => {
    const http = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      () => new Response("not here", { status: 404 }),
    );
    const url = `ws://127.0.0.1:${http.addr.port}/realm`;
    const client = new RealmWebSocketClient({ url, model: "m", reconnect: false });
    try {
      const error = failedWith(
        await outcome(client.connect(), 3000, "connect"),
        "CONNECTION_CLOSED",
      );
      assert.equal(
        error.message,
        `Could not connect to ${url} (an HTTP server answered 404): is a server running there?`,
      );
      assert.equal(error.sent, false);
      assert.match(String((error.cause as Error)?.message), /404/, "the runtime's own error");
    } finally {
      await client.disconnect();
      await http.shutdown();
    }
  },
});

Deno.test("handshake: a refused key is UNAUTHORIZED with the server's reason; the socket is closed", async () => {
  // An implementation that is CLOSED as soon as close() returns, its event a microtask later.
  const { WebSocket, made } = scripted({ closedAtOnce: true });
  const { told, closing } = closings();
  const opening = openConnection(params(WebSocket, { apiKey: "sk-wrong", closing }), handlers);
  made[0].open();
  made[0].receive(AUTH_REQUIRED);
  assert.deepEqual(made[0].sent.map((text) => JSON.parse(text)), [{
    type: "auth",
    api_key: "sk-wrong",
  }]);
  made[0].receive({ type: "auth_failed", error: "Invalid API key" });
  const error = await rejection(opening, 1000);
  assert.equal(error.code, "UNAUTHORIZED");
  assert.equal(error.message, "Authentication failed: Invalid API key. Check the `apiKey` option.");
  await microtasks();
  assert.deepEqual(made[0].closes, [[1000, ""]]);
  assert.deepEqual(told, [{ ended: true }]);
});

Deno.test("handshake: a key that cannot be sent is CONNECTION_CLOSED, not a throw", async () => {
  const { WebSocket, made } = scripted({ sendThrows: true });
  const opening = openConnection(params(WebSocket, { apiKey: "sk-1" }), handlers);
  made[0].open();
  made[0].receive(AUTH_REQUIRED);
  const error = await rejection(opening, 1000);
  assert.equal(error.code, "CONNECTION_CLOSED");
  assert.equal(
    error.message,
    `Could not connect to ${URL} (the socket closed during the handshake): is a server ` +
      "running there?",
  );
  assert.equal(error.sent, false);
});

Deno.test("handshake: an unexpected first frame is PROTOCOL_ERROR naming what came", async (t) => {
  const cases = [
    [{ id: "1", status: "complete", data: 1 }, "complete"],
    ["hello", "not JSON: hello"],
    [{ status: "bogus" }, 'unrecognised frame: {"status":"bogus"}'],
  ] as const;
  for (const [frame, said] of cases) {
    await t.step(said, async () => {
      // No `closing` given: the socket given up must be closed without it.
      const { WebSocket, made } = scripted();
      const opening = openConnection(params(WebSocket), handlers);
      made[0].open();
      made[0].receive(frame);
      const error = await rejection(opening, 1000);
      assert.equal(error.code, "PROTOCOL_ERROR");
      assert.equal(
        error.message,
        `Unexpected first frame from ${URL}; is it a Realm server? ${said}`,
      );
      assert.deepEqual(made[0].closes, [[1000, ""]]);
    });
  }
});

Deno.test("handshake: whatever the WebSocket constructor throws is INVALID_OPTIONS saying it", async (t) => {
  const thrown = [
    [new SyntaxError("Invalid URL: 'ws//x'"), "Invalid URL: 'ws//x'"],
    ["refused", "refused"],
    [null, "null"],
  ] as const;
  for (const [cause, said] of thrown) {
    await t.step(String(said), async () => {
      const WebSocket = class {
        constructor() {
          throw cause;
        }
      } as unknown as WebSocketConstructor;
      const error = await rejection(openConnection(params(WebSocket), handlers), 1000);
      assert.equal(error.code, "INVALID_OPTIONS");
      assert.equal(error.message, `Cannot open a WebSocket to ${URL}: ${said}`);
      assert.equal(error.cause, cause);
      assert.equal(error.sent, false);
    });
  }
});

Deno.test("handshake: connectTimeout ends a silent attempt; its socket is closed at the grace end", async () => {
  await withFakeClock(async (clock) => {
    const { WebSocket, made } = scripted();
    const { told, closing } = closings();
    let failure: RealmError | undefined;
    /** Read through a call: an assert on `failure` must not narrow it for the later ones. */
    const failed = () => failure;
    openConnection(params(WebSocket, { connectTimeout: 100, closing }), handlers)
      .catch((error) => failure = error);
    clock.advance(99);
    await microtasks();
    assert.equal(failed(), undefined, "not before connectTimeout");
    clock.advance(1);
    await microtasks();
    assert.equal(failed()?.code, "TIMEOUT");
    assert.equal(
      failed()?.message,
      `No handshake from ${URL} within 100 ms: is it a Realm server, and answering? Else ` +
        "raise `connectTimeout`.",
    );
    assert.equal(failed()?.sent, false, "nothing was sent: safe to retry");
    // The socket never opened: closing it now would leave Deno's server end open.
    assert.deepEqual(made[0].closes, []);
    assert.deepEqual(told, [{ ended: false }]);
    clock.advance(1999);
    await microtasks();
    assert.deepEqual(made[0].closes, [], "not before the 2 s grace");
    assert.deepEqual(told, [{ ended: false }]);
    clock.advance(1);
    await microtasks();
    assert.deepEqual(made[0].closes, [[1000, ""]], "still connecting at the grace end: closed");
    assert.deepEqual(told, [{ ended: true }], "and counted as ended");
  });
});

/** An open connection over a socket with `quirks`. */
async function connected(
  quirks: Quirks,
): Promise<{ connection: Connection; socket: ScriptedSocket }> {
  const { WebSocket, made } = scripted(quirks);
  const opening = openConnection(params(WebSocket), handlers);
  made[0].open();
  made[0].receive(WELCOME);
  return { connection: await within(1000, opening, "the connection"), socket: made[0] };
}

Deno.test("closing: a reason the socket refuses (over 123 bytes) still closes it, without one", async () => {
  const { connection, socket } = await connected({ refusesLongReason: true });
  const reason = "é".repeat(62); // 124 bytes
  await within(1000, connection.close(4000, reason, 5000), "the close");
  assert.deepEqual(socket.closes, [[4000, reason], []]);
  assert.equal(socket.readyState, 3);
});

Deno.test("closing: a socket that closes inside close() does not keep the close waiting", async (t) => {
  await t.step("an open connection", async () => {
    const { connection, socket } = await connected({ closesInsideClose: true });
    // The grace is 5 s: the close must not wait for it, the socket is already closed.
    await within(1000, connection.close(1000, "", 5000), "the close");
    assert.deepEqual(socket.closes, [[1000, ""]]);
  });
  await t.step("a socket given up during the handshake", async () => {
    const { WebSocket, made } = scripted({ closesInsideClose: true });
    let closed: Promise<void> | undefined;
    const opening = openConnection(
      params(WebSocket, { closing: (promise) => closed = promise }),
      handlers,
    );
    made[0].open();
    made[0].receive({ type: "auth_success", tenant_id: "x" });
    assert.equal((await rejection(opening, 1000)).code, "PROTOCOL_ERROR");
    assert.ok(closed);
    await within(1000, closed, "the end of the socket given up (grace 2 s)");
  });
});

Deno.test("closing: a peer that never answers the close is terminated at the grace end (ws)", async (t) => {
  await t.step("with terminate(): called once, at the grace end", async () => {
    await withFakeClock(async (clock) => {
      const { connection, socket } = await connected({ neverCloses: true, terminate: true });
      let ended = false;
      void connection.close(1000, "", 300).then(() => ended = true);
      assert.equal(connection.open, false, "closed for calls at once");
      clock.advance(299);
      await microtasks();
      assert.equal(socket.terminated, 0);
      assert.equal(ended, false);
      clock.advance(1);
      await microtasks();
      assert.equal(socket.terminated, 1);
      assert.equal(ended, true);
      assert.deepEqual(socket.closes, [[1000, ""]]);
    });
  });
  await t.step(
    "without (Deno, browsers): the close resolves at the grace end all the same",
    async () => {
      await withFakeClock(async (clock) => {
        const { connection } = await connected({ neverCloses: true });
        let ended = false;
        void connection.close(1000, "", 300).then(() => ended = true);
        clock.advance(300);
        await microtasks();
        assert.equal(ended, true);
      });
    },
  );
});

// -- the handshake over loopback, with the whole client -----------------------------------------

Deno.test({
  name: "open server: connect, events, tenant id, server version",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client, server) => {
      const connected: RealmEventMap["connected"][] = [];
      const viaTarget: unknown[] = [];
      client.on("connected", (detail) => connected.push(detail));
      client.addEventListener(
        "connected",
        (event) => viaTarget.push((event as CustomEvent).detail),
      );
      assert.equal(client.isConnected(), false);
      await client.connect();
      assert.equal(client.isConnected(), true);
      assert.equal(client.getServerVersion(), "0.1.0");
      assert.equal(connected.length, 1);
      assert.deepEqual(viaTarget, connected);
      assert.equal(connected[0].tenantId, client.getTenantId());
      assert.match(client.getTenantId(), /^[0-9a-f-]{36}$/);
      await client.health();
      assert.equal(sentCalls(server)[0].tenant_id, client.getTenantId());
      assert.equal(client.getWebSocketSource(), "global");
    }),
});

Deno.test({
  name: "open server with an API key configured: no auth frame is sent, calls work",
  ...sanitize,
  fn: () =>
    withClient({}, { apiKey: "unused-key", tenantId: "my-tenant" }, async (client, server) => {
      const errors: RealmError[] = [];
      client.on("error", (e) => errors.push(e));
      await client.connect();
      assert.equal((await client.health()).status, "healthy");
      assert.ok(!server.receivedFrames().some((f) => f.includes('"auth"')));
      assert.equal(client.getTenantId(), "my-tenant");
      assert.deepEqual(errors, []);
    }),
});

Deno.test({
  name: "authenticated server: the key decides the tenant and every call carries it",
  ...sanitize,
  fn: () =>
    withClient(
      { apiKeys: { "key-acme": "acme-corp" } },
      { apiKey: "key-acme", tenantId: "self-chosen" },
      async (client, server) => {
        const connected: string[] = [];
        client.on("connected", ({ tenantId }) => connected.push(tenantId));
        await client.connect();
        assert.equal(client.getTenantId(), "acme-corp");
        assert.deepEqual(connected, ["acme-corp"]);
        await client.health();
        await client.generate({ prompt: FRANCE });
        await client.metadata();
        const calls = sentCalls(server);
        assert.equal(calls.length, 3);
        for (const call of calls) assert.equal(call.tenant_id, "acme-corp");
      },
    ),
});

Deno.test({
  name: "authenticated server: a refused key rejects connect() with UNAUTHORIZED and the reason",
  ...sanitize,
  fn: () =>
    withClient(
      { apiKeys: { "key-acme": "acme-corp" } },
      { apiKey: "wrong-secret-key" },
      async (client) => {
        const error = await rejection(client.connect());
        assert.equal(error.code, "UNAUTHORIZED");
        assert.match(error.message, /Invalid API key/);
        assert.ok(!error.message.includes("wrong-secret-key"));
        assert.equal(client.isConnected(), false);
        assert.equal((await rejection(client.health())).code, "NOT_CONNECTED");
      },
    ),
});

Deno.test({
  name: "authenticated server, no key: connect() fails at once saying a key is required",
  ...sanitize,
  fn: () =>
    withClient(
      { apiKeys: { k: "acme-corp" }, authTimeoutMs: 10_000 },
      {},
      async (client, server) => {
        const started = performance.now();
        const error = await rejection(client.connect());
        assert.equal(error.code, "UNAUTHORIZED");
        assert.match(error.message, /requires an API key/);
        // Not the server's 10-second auth timeout: the client gave up on auth_required.
        assert.ok(performance.now() - started < 5000);
        assert.deepEqual(server.receivedFrames(), []);
      },
    ),
});

Deno.test({
  name: "auth: the tenant is adopted from auth_success even when the welcome names another",
  ...sanitize,
  fn: () =>
    withScripted(
      {
        open: (socket) =>
          socket.send(JSON.stringify({ type: "auth_required", message: "Please send the key" })),
        frame: (socket, frame) => {
          if (frame.type === "auth") {
            assert.equal(frame.api_key, "sk-scripted");
            socket.send(JSON.stringify({ type: "auth_success", tenant_id: "tenant-from-auth" }));
            // A welcome that disagrees: the key decides the tenant, not this frame.
            socket.send(JSON.stringify({
              status: "connected",
              version: "0.1.0",
              tenant_id: "tenant-from-welcome",
            }));
            return;
          }
          complete(socket, frame.id, { status: "healthy", version: "0.1.0", uptime_seconds: 1 });
        },
      },
      { apiKey: "sk-scripted", tenantId: "tenant-from-options" },
      async (client, received) => {
        assert.equal(client.getTenantId(), "tenant-from-auth");
        await client.health();
        await client.metadata();
        assert.deepEqual(received[0], { type: "auth", api_key: "sk-scripted" });
        assert.deepEqual(
          callFrames(received).map((f) => f.tenant_id),
          ["tenant-from-auth", "tenant-from-auth"],
        );
      },
    ),
});

Deno.test({
  name: "auth: the connected event carries the tenant from auth_success",
  ...sanitize,
  fn: async () => {
    const server = scriptedServer({
      open: (socket) => socket.send(JSON.stringify({ type: "auth_required", message: "key?" })),
      frame: (socket) => {
        socket.send(JSON.stringify({ type: "auth_success", tenant_id: "acme" }));
        socket.send(JSON.stringify({ status: "connected", version: "0.1.0", tenant_id: "other" }));
      },
    });
    const client = new RealmWebSocketClient({ url: server.url, model: "m", apiKey: "k" });
    const connected: string[] = [];
    client.on("connected", ({ tenantId }) => connected.push(tenantId));
    try {
      await within(5000, client.connect(), "connect()");
      assert.deepEqual(connected, ["acme"]);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "a bad tenant id from the server fails the handshake with PROTOCOL_ERROR",
  ...sanitize,
  fn: async () => {
    for (
      const frames of [
        [{ status: "connected", version: "0.1.0", tenant_id: "x" }],
        [{ type: "auth_success", tenant_id: "no spaces allowed" }, WELCOME],
      ]
    ) {
      const server = scriptedServer({
        open: (socket) => frames.forEach((frame) => sendFrame(socket, frame)),
        frame: () => {},
      });
      const client = new RealmWebSocketClient({ url: server.url, model: "m" });
      try {
        const error = failedWith(
          await outcome(client.connect(), 2000, "bad tenant"),
          "PROTOCOL_ERROR",
        );
        assert.match(error.message, /tenant id/);
        assert.equal(client.state, "closed");
      } finally {
        await client.disconnect();
        await server.close();
      }
    }
  },
});
