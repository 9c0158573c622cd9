/**
 * The package prints nothing unasked, at every `connections` value up to the largest allowed: a
 * pool connects, serves calls on every socket, loses every socket and reconnects, and
 * disconnects. The runner (`scripts/test_npm.ts`) fails this step when anything reached stderr
 * (a `MaxListenersExceededWarning`, for one: Node prints it once 11 listeners share one
 * `AbortSignal`).
 *
 * Usage: `node quiet.mjs` (or `bun quiet.mjs`) from a project that has the package installed.
 *
 * @module
 */
import process from "node:process";
import { RealmWebSocketClient } from "@realm-ai/ws-client";
import { startStubServer } from "@realm-ai/ws-client/testing";

const watchdog = setTimeout(() => {
  console.log("quiet.mjs: still running after 60 s, giving up");
  process.exit(2);
}, 60_000);
watchdog.unref?.();

const bun = globalThis.Bun;
console.log(`# ${bun ? `Bun ${bun.version}` : `Node ${process.version}`}`);

let passed = 0;
let failed = 0;
const check = (ok, name) => {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "ok" : "not ok"} ${passed + failed} - ${name}`);
};

/** Resolves once `condition()` holds; rejects after `ms`. */
async function until(condition, ms, what) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const server = await startStubServer({ tokenDelayMs: 0 });
try {
  for (const connections of [16, 32, 64]) {
    const client = new RealmWebSocketClient({
      url: server.url,
      model: "llama-2-7b",
      connections,
      reconnectInterval: 5,
      maxReconnectInterval: 20,
      timeout: 10_000,
    });
    let connected = 0;
    client.on("connected", () => connected++);
    try {
      await client.connect();
      check(client.stats().openConnections === connections, `connections: ${connections} open`);
      // One call per socket, at once: the pool spreads them.
      const healths = await Promise.all(
        Array.from({ length: connections }, () => client.health()),
      );
      check(healths.every((h) => h.status === "healthy"), `${connections} calls in parallel`);
      // Every socket drops and reconnects: a wait per socket, on the client's own signal.
      server.faults.dropAfterFrames(0);
      server.faults.clear();
      await until(() => connected === 2 * connections, 20_000, "every socket to reconnect");
      await until(() => client.stats().openConnections === connections, 5_000, "open sockets");
      const { text } = await client.generate({ prompt: "What is the capital of France?" });
      check(text === "Paris", `connections: ${connections} reconnected and serving`);
    } catch (error) {
      check(
        false,
        `connections: ${connections}: ${error instanceof Error ? error.message : error}`,
      );
    } finally {
      await client.disconnect();
    }
    check(client.stats().openConnections === 0, `connections: ${connections} closed`);
  }
} finally {
  await server.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
