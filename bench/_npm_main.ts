/**
 * The benchmarks' entry on Node and Bun, bundled by `bench/npm.ts` with the client left as an
 * import of the installed npm package. Reads the servers' URLs from the environment and prints
 * the report, with the client-only group's (`bench/_client_only.ts`), as one line of JSON.
 *
 * @module
 */
import process from "node:process";
import { RealmWebSocketClient } from "@realm-ai/ws-client";
import { runBenchmarks } from "./_harness.ts";
import { CLIENT_ONLY_ROUNDS, runClientOnly, serverFrames } from "./_client_only.ts";

/** Node 20 has no global WebSocket: the raw loop then uses `ws`, as the client itself does. */
async function webSocketClass(): Promise<new (url: string) => WebSocket> {
  if (typeof globalThis.WebSocket === "function") return globalThis.WebSocket;
  const name = "ws"; // not a literal, so that `deno check` does not look for it
  const ws = await import(name);
  return ws.WebSocket ?? ws.default;
}

const env = process.env;
const WebSocketClass = await webSocketClass();
const cpuMicros = () => {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
};
const log = (line: string) => process.stderr.write(`${line}\n`);
const report = await runBenchmarks({
  createClient: (url, connections) =>
    new RealmWebSocketClient({ url, model: "llama-2-7b", connections }),
  WebSocket: WebSocketClass,
  cpuMicros,
  stubUrl: env.REALM_STUB_URL!,
  slowStubUrl: env.REALM_SLOW_STUB_URL!,
  unpacedUrl: env.REALM_UNPACED_URL!,
  rounds: Number(env.REALM_BENCH_ROUNDS ?? 7),
  log,
});
log(`client only: health() on a fake socket, ${CLIENT_ONLY_ROUNDS} rounds`);
const clientOnly = await runClientOnly({
  Client: RealmWebSocketClient,
  cpuMicros,
  frames: await serverFrames(WebSocketClass, env.REALM_STUB_URL!),
  rounds: CLIENT_ONLY_ROUNDS,
  log,
});
const runtime = "Bun" in globalThis
  ? `Bun ${(globalThis as { Bun?: { version: string } }).Bun?.version}`
  : `Node ${process.version}`;
process.stdout.write(`${JSON.stringify({ runtime, ...report, clientOnly })}\n`);
// Sockets closed by runBenchmarks; a lingering handle must not keep the run alive.
process.exit(0);
