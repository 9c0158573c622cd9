/**
 * The connection lifecycle where runtimes differ, against the installed package:
 * - a refused port fails `connect()` at once (Node 22's `WebSocket` fires `error` and never
 *   `close` there), and reconnect attempts against a gone server do not each wait
 *   `connectTimeout`;
 * - a peer that never answers the close handshake: `disconnect()` still resolves after its
 *   grace, and where the implementation can tear the socket down (`ws` on Node 20) the peer
 *   sees the TCP connection end;
 * - a plain HTTP server at the address: the error names the status where the runtime tells it
 *   (`ws` and Bun do, Node 22's `WebSocket` does not) and keeps the runtime's error as `cause`;
 * - a server that never answers the upgrade: `connect()` fails with `TIMEOUT` at
 *   `connectTimeout` (not after a close grace too), `disconnect()` meanwhile makes it fail with
 *   `ABORTED`, and the socket closed while connecting never ends the process (`ws` emits
 *   `error` for it).
 *
 * The peer is a hand-written WebSocket server on `node:net` (so that it can ignore close
 * frames), listening on 127.0.0.1.
 *
 * Usage: `node lifecycle.mjs` (or `bun lifecycle.mjs`) from a project that has the package
 * installed. Prints one line per check and `N passed, N failed`.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { createServer as createHttpServer } from "node:http";
import { createServer } from "node:net";
import process from "node:process";
import { RealmError, RealmWebSocketClient } from "@realm-ai/ws-client";
import { startStubServer } from "@realm-ai/ws-client/testing";

const watchdog = setTimeout(() => {
  console.error("lifecycle.mjs: still running after 60 s, giving up");
  process.exit(2);
}, 60_000);
watchdog.unref?.();

const bun = globalThis.Bun;
console.log(`# lifecycle on ${bun ? `Bun ${bun.version}` : `Node ${process.version}`}`);

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

/** A port nothing listens on: one the system gave out and took back. */
async function closedPort() {
  const server = createServer();
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address();
  await new Promise((done) => server.close(done));
  return port;
}

/**
 * A WebSocket peer that completes the upgrade, sends the welcome frame and then ignores
 * everything, close frames included. Records when each TCP connection ends.
 */
async function deafPeer() {
  const ended = [];
  const sockets = new Set();
  const server = createServer((socket) => {
    sockets.add(socket);
    let request = "";
    socket.on("data", (chunk) => {
      if (request.endsWith("\r\n\r\n")) return; // after the upgrade: deaf
      request += chunk.toString("latin1");
      if (!request.endsWith("\r\n\r\n")) return;
      const key = /sec-websocket-key: *(.+)\r\n/i.exec(request)?.[1].trim();
      const accept = createHash("sha1")
        .update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
        .digest("base64");
      socket.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
      );
      const welcome = Buffer.from('{"status":"connected","version":"0.1.0","tenant_id":null}');
      socket.write(Buffer.concat([Buffer.from([0x81, welcome.length]), welcome]));
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      sockets.delete(socket);
      ended.push(performance.now());
    });
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  return {
    url: `ws://127.0.0.1:${server.address().port}`,
    ended,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((done) => server.close(done));
    },
  };
}

/**
 * A server that accepts the TCP connection and never answers the WebSocket upgrade: the
 * socket stays in its connecting state until the client gives up on it.
 */
async function silentServer() {
  const sockets = new Set();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  return {
    url: `ws://127.0.0.1:${server.address().port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((done) => server.close(done));
    },
  };
}

function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

function expectCode(error, code) {
  assert(error instanceof RealmError, `expected a RealmError, got ${error}`);
  assert(error.code === code, `expected ${code}, got ${error.code}: ${error.message}`);
}

/** Settles `promise` within `ms`, as `{ value }` or `{ error }`; fails past `ms`. */
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not settled within ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([
    promise.then((value) => ({ value }), (error) => ({ error })),
    timeout,
  ]).finally(() => clearTimeout(timer));
}

check("a refused port fails connect() at once, whatever connectTimeout", async () => {
  const port = await closedPort();
  const client = new RealmWebSocketClient({
    url: `ws://127.0.0.1:${port}`,
    model: "m",
    connectTimeout: 60_000,
  });
  const started = performance.now();
  const result = await within(client.connect(), 5_000, "connect() to a refused port");
  expectCode(result.error, "CONNECTION_CLOSED");
  assert(performance.now() - started < 5_000, "failed before connectTimeout");
  assert(client.state === "closed", `state ${client.state}`);
  await client.disconnect();
});

check(
  "a plain HTTP server at the address: its status where the runtime tells it, the cause kept",
  async () => {
    const server = createHttpServer((_request, response) => {
      response.writeHead(404, { connection: "close" });
      response.end("not here");
    });
    await new Promise((done) => server.listen(0, "127.0.0.1", done));
    const url = `ws://127.0.0.1:${server.address().port}/realm`;
    const client = new RealmWebSocketClient({ url, model: "m", reconnect: false });
    try {
      const { error } = await within(client.connect(), 5_000, "connect() to an HTTP server");
      expectCode(error, "CONNECTION_CLOSED");
      assert(error.sent === false, "sent: false");
      assert(error.cause !== undefined, "the runtime's error is the cause");
      // ws (Node 20) and Bun say which status answered; Node 22's WebSocket does not.
      const tells = bun || !globalThis.WebSocket;
      const expected =
        `Could not connect to ${url}${tells ? " (an HTTP server answered 404)" : ""}: ` +
        "is a server running there?";
      assert(error.message === expected, `message: ${error.message}`);
    } finally {
      await client.disconnect();
      server.closeAllConnections?.();
      await new Promise((done) => server.close(done));
    }
  },
);

check("reconnect attempts to a gone server do not each wait connectTimeout", async () => {
  const server = await startStubServer({ tokenDelayMs: 0 });
  const client = new RealmWebSocketClient({
    url: server.url,
    model: "m",
    connectTimeout: 60_000,
    reconnectInterval: 1,
    maxReconnectInterval: 5,
    maxReconnectAttempts: 5,
  });
  let attempts = 0;
  client.on("connecting", ({ attempt }) => attempt > 0 && attempts++);
  await client.connect();
  const gaveUp = new Promise((resolve) => {
    client.on("statechange", ({ to }) => to === "closed" && resolve());
  });
  await server.close();
  const result = await within(gaveUp, 10_000, "five failed attempts, then closed");
  assert("value" in result, String(result.error));
  assert(attempts === 5, `${attempts} attempts`);
  await client.disconnect();
});

check("a peer that never answers the close handshake: disconnect() resolves", async () => {
  const peer = await deafPeer();
  const client = new RealmWebSocketClient({ url: peer.url, model: "m" });
  try {
    await client.connect();
    assert(client.state === "open", `state ${client.state}`);
    const started = performance.now();
    const result = await within(client.disconnect(), 5_000, "disconnect() from a deaf peer");
    assert("value" in result, String(result.error));
    const source = client.getWebSocketSource();
    if (source === "fallback") {
      // ws can tear the socket down: the peer sees the TCP connection end after the grace.
      const deadline = performance.now() + 4_000;
      while (peer.ended.length === 0 && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert(peer.ended.length === 1, "ws terminated the socket");
      assert(peer.ended[0] - started < 4_000, "within the close grace");
    }
    console.log(`#   (${source}: the peer saw ${peer.ended.length} connection end(s))`);
  } finally {
    await peer.close();
  }
});

check(
  "a server that never answers the upgrade: connect() fails with TIMEOUT at connectTimeout",
  async () => {
    const server = await silentServer();
    const client = new RealmWebSocketClient({ url: server.url, model: "m", connectTimeout: 300 });
    try {
      const started = performance.now();
      const result = await within(client.connect(), 5_000, "connect() to a silent server");
      const took = performance.now() - started;
      expectCode(result.error, "TIMEOUT");
      // Closing the stalled socket happens in the background: no close grace (2 s) is added.
      assert(took < 1_500, `rejected after ${Math.round(took)} ms, not at connectTimeout`);
      assert(client.state === "closed", `state ${client.state}`);
      await within(client.disconnect(), 5_000, "disconnect()");
    } finally {
      await server.close();
    }
  },
);

check(
  "disconnect() while the upgrade is unanswered: connect() fails with ABORTED, the process lives",
  async () => {
    const server = await silentServer();
    try {
      // At several moments of the stalled upgrade, a socket closed while connecting (which makes
      // `ws` emit "error") must not end the process.
      for (const wait of [0, 1, 20, 100]) {
        const client = new RealmWebSocketClient({
          url: server.url,
          model: "m",
          connectTimeout: 5_000,
        });
        const connecting = client.connect();
        await new Promise((resolve) => setTimeout(resolve, wait));
        await within(client.disconnect(), 5_000, "disconnect()");
        const result = await within(connecting, 5_000, "connect()");
        expectCode(result.error, "ABORTED");
        assert(client.state === "idle", `state ${client.state}`);
      }
      // Let any late "error" of the closed sockets fire while the process still runs.
      await new Promise((resolve) => setTimeout(resolve, 2_500));
    } finally {
      await server.close();
    }
  },
);

let passed = 0;
let failed = 0;
for (const { name, fn } of checks) {
  try {
    await fn();
    passed++;
    console.log(`ok - ${name}`);
  } catch (error) {
    failed++;
    console.log(`not ok - ${name}: ${error?.stack ?? error}`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
