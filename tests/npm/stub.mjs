/**
 * The stub server's Node and Bun adapters (`@realm-ai/ws-client/testing`, installed from the
 * tarball) behave like the Deno one: frames, close codes, and every fault switch, seen by a raw
 * WebSocket client (the global one, or `ws` on Node 20).
 *
 * Usage: `node stub.mjs` or `bun stub.mjs` from a project that has the package installed.
 *
 * @module
 */
import { connect as tcpConnect } from "node:net";
import process from "node:process";
import { startStubServer } from "@realm-ai/ws-client/testing";

const WebSocketImpl = globalThis.WebSocket ?? (await import("ws")).WebSocket;
const runtime = globalThis.Bun ? `Bun ${globalThis.Bun.version}` : `Node ${process.version}`;
console.log(`# ${runtime}, raw client: ${globalThis.WebSocket ? "global WebSocket" : "ws"}`);
const WELCOME = '{"status":"connected","tenant_id":null,"version":"0.1.0"}';

/** A raw socket whose frames can be awaited one by one. */
function connect(url, protocols) {
  const socket = new WebSocketImpl(url, protocols);
  socket.binaryType = "arraybuffer";
  const frames = [];
  let wake = () => {};
  socket.onmessage = (event) => {
    frames.push(String(event.data));
    wake();
  };
  // A handshake that neither opens nor fails within 3 s counts as failed (Bun < 1.4's client
  // reports nothing at all when the server picks no subprotocol).
  const opened = new Promise((resolve) => {
    socket.onopen = () => resolve(true);
    socket.onerror = () => resolve(false);
    sleep(3000).then(() => resolve(false));
  });
  const closed = new Promise((resolve) => {
    socket.onclose = (event) => resolve(event.code);
  });
  /** The next frame, or undefined when none arrives within `ms` (or the socket closed). */
  const next = async (ms = 2000) => {
    const deadline = Date.now() + ms;
    while (frames.length === 0 && Date.now() < deadline) {
      const arrived = new Promise((resolve) => (wake = resolve));
      const closedNow = closed.then(() => "closed");
      const waited = await Promise.race([arrived, closedNow, sleep(deadline - Date.now())]);
      if (waited === "closed" && frames.length === 0) return undefined;
    }
    return frames.shift();
  };
  return { socket, opened, closed, next, close: () => socket.close() };
}

/** The HTTP status a WebSocket upgrade request gets, read from a raw TCP socket. */
function upgradeStatus(port) {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(port, "127.0.0.1", () => {
      socket.write(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      );
    });
    let head = "";
    socket.on("data", (chunk) => {
      head += chunk.toString("latin1");
      const line = head.match(/^HTTP\/1\.1 (\d{3})/);
      if (line) {
        socket.destroy();
        resolve(Number(line[1]));
      }
    });
    socket.on("error", reject);
    socket.on("close", () => reject(new Error(`no status line: ${JSON.stringify(head)}`)));
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

check("open mode: the welcome frame, a call, callCount and receivedFrames", async (server) => {
  const client = connect(server.url);
  assert(await client.next() === WELCOME, "welcome frame");
  const call = '{"id":"1","function":"health","params":{}}';
  client.socket.send(call);
  const reply = JSON.parse(await client.next());
  assert(reply.id === "1" && reply.status === "complete", JSON.stringify(reply));
  assert(reply.data.status === "healthy", "healthy");
  assert(server.callCount === 1, `callCount ${server.callCount}`);
  assert(server.receivedFrames()[0] === call, "receivedFrames");
  assert(server.connectionCount === 1, `connectionCount ${server.connectionCount}`);
  client.close();
  await client.closed;
});

check("a binary frame is answered without an id", async (server) => {
  const client = connect(server.url);
  await client.next();
  client.socket.send(new Uint8Array([1, 2, 3]));
  assert(await client.next() === '{"error":"Binary messages not supported"}', "binary reply");
  client.close();
});

check("a frame that is not a call gets an id:unknown error", async (server) => {
  const client = connect(server.url);
  await client.next();
  client.socket.send("{oops");
  const reply = JSON.parse(await client.next());
  assert(reply.id === "unknown" && reply.error.code === "INTERNAL_ERROR", JSON.stringify(reply));
  client.close();
});

check("auth: success names the tenant; failure then a close without status (1005)", async () => {
  const server = await startStubServer({ apiKeys: { "sk-good": "tenant-x" } });
  try {
    const good = connect(server.url);
    assert(JSON.parse(await good.next()).type === "auth_required", "auth_required");
    good.socket.send('{"type":"auth","api_key":"sk-good"}');
    const success = JSON.parse(await good.next());
    assert(success.type === "auth_success" && success.tenant_id === "tenant-x", "auth_success");
    assert(JSON.parse(await good.next()).tenant_id === "tenant-x", "welcome with the tenant");
    good.close();
    const bad = connect(server.url);
    await bad.next();
    bad.socket.send('{"type":"auth","api_key":"sk-bad"}');
    const failed = JSON.parse(await bad.next());
    assert(failed.type === "auth_failed" && failed.error === "Invalid API key", "auth_failed");
    const code = await bad.closed;
    assert(code === 1005, `close code ${code}, want 1005`);
  } finally {
    await server.close();
  }
});

check("a client that asks for a subprotocol fails the handshake", async (server) => {
  const client = connect(server.url, ["realm.v1"]);
  // Clients differ in what follows (Node 22's fires no close event after the error).
  assert(!(await client.opened), "the handshake fails");
});

check("fault sendMalformed reaches every open connection", async (server) => {
  const client = connect(server.url);
  await client.next();
  server.faults.sendMalformed("not-json");
  assert(await client.next() === "{oops", "not-json frame");
  server.faults.sendMalformed("id-unknown");
  assert(JSON.parse(await client.next()).id === "unknown", "id-unknown frame");
  client.close();
});

check("fault stall: no first frame until it is turned off", async (server) => {
  server.faults.stall(true);
  const client = connect(server.url);
  assert(await client.opened, "the socket opens");
  assert(await client.next(200) === undefined, "nothing while stalled");
  server.faults.stall(false);
  assert(await client.next() === WELCOME, "welcome after the stall");
  client.close();
});

check(
  "fault dropAfterFrames: cut now (1006 or 1011), new ones too, until cleared",
  async (server) => {
    const client = connect(server.url);
    await client.next();
    server.faults.dropAfterFrames(0);
    const code = await client.closed;
    assert(code === 1006 || code === 1011, `close code ${code}`);
    const fresh = connect(server.url);
    assert(await fresh.next(500) === undefined, "a new connection gets no frame");
    server.faults.clear();
    const healed = connect(server.url);
    assert(await healed.next() === WELCOME, "welcome after clear()");
    healed.close();
  },
);

check("fault rejectConnections: upgrades fail until turned off", async (server) => {
  server.faults.rejectConnections(true);
  const refused = connect(server.url);
  assert(!(await refused.opened), "the handshake fails");
  const status = await upgradeStatus(server.port);
  assert(status === 503, `HTTP ${status} to an upgrade request, want 503`);
  server.faults.rejectConnections(false);
  const accepted = connect(server.url);
  assert(await accepted.next() === WELCOME, "welcome once accepted again");
  accepted.close();
});

check("close(): clients see 1005, it is idempotent, and the port is freed", async () => {
  const server = await startStubServer();
  const client = connect(server.url);
  await client.next();
  const closing = server.close();
  assert(server.close() === closing, "the same promise");
  await closing;
  const code = await client.closed;
  assert(code === 1005, `close code ${code}, want 1005`);
  const late = connect(server.url);
  assert(!(await late.opened), "nothing listens any more");
});

const watchdog = setTimeout(() => {
  console.error("stub.mjs: still running after 60 s, giving up");
  process.exit(2);
}, 60_000);
watchdog.unref?.();

let passed = 0;
let failed = 0;
for (const [index, { name, fn }] of checks.entries()) {
  const server = await startStubServer({ tokenDelayMs: 1 });
  try {
    await fn(server);
    passed++;
    console.log(`ok ${index + 1} - ${name}`);
  } catch (error) {
    failed++;
    console.log(`not ok ${index + 1} - ${name}: ${error?.message ?? error}`);
  } finally {
    await server.close();
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
