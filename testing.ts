/**
 * A stub Realm server for testing clients of the Realm WebSocket protocol without a real Realm
 * server. By default it answers as the real `realm-server` 0.1.0 does in simulation mode, frame
 * for frame (checked against the real server, and with `deno task conformance`), quirks
 * included: one call at a time per connection, `id:"unknown"` errors, no `retry_after`,
 * streams that never end with `max_tokens: 0`, `uptime_seconds` always 0, no orchestrator (every
 * pipeline call is refused), the keys of its JSON objects sorted. Its extras for tests are
 * opt-in: long streams (`longStreams`), pipelines (`orchestrator`, `pipelines`), fault switches
 * (`faults`), a cap on concurrent generations.
 *
 * It listens on 127.0.0.1 only. The simulated `generate` answers like the real simulation:
 * without streaming, `Paris` for a prompt containing "capital of France" (any case), else
 * `Simulated response to: <prompt>`; a stream carries the words `The capital of France is Paris.
 * This is a simulated response to: <first word of the prompt>`, at most `max_tokens` of them (13
 * at most; with `longStreams`, exactly `max_tokens`, the words cycled).
 *
 * What it does not reproduce: a close frame sent during a stream takes effect at once (the real
 * server first finishes the stream), a plain HTTP request gets a 426 answer (the real server
 * closes the connection without one), and the real server's welcome frame arrives some 40 ms
 * after `auth_success` (its TCP writes are not sent at once).
 *
 * @example Start a server, make one call with a raw WebSocket, stop the server
 * ```ts
 * import { startStubServer } from "@realm-ai/ws-client/testing";
 *
 * const server = await startStubServer();
 * const socket = new WebSocket(server.url);
 * const frames: string[] = [];
 * const done = new Promise<void>((resolve) => {
 *   socket.onmessage = (event) => {
 *     frames.push(event.data);
 *     if (frames.length === 1) {
 *       socket.send(JSON.stringify({ id: "1", function: "health", params: {} }));
 *     } else resolve();
 *   };
 * });
 * await done;
 * const closed = new Promise((resolve) => (socket.onclose = resolve));
 * socket.close();
 * await closed;
 * await server.close();
 * const { status } = JSON.parse(frames[1]).data; // "healthy"
 * ```
 *
 * @module
 */

import {
  createStubServer,
  StubEngine,
  type StubListener,
  type StubServer,
  type StubServerOptions,
} from "./src/stub/server.ts";

export type {
  StubFaults,
  StubMalformedKind,
  StubServer,
  StubServerOptions,
} from "./src/stub/server.ts";
export type { StubPipelineHandler } from "./src/stub/dispatcher.ts";
export type { StubRateLimit } from "./src/stub/rate_limiter.ts";

/**
 * Starts a stub Realm server on 127.0.0.1 and resolves once it listens. Close it with
 * {@linkcode StubServer.close} when done: it owns a listening socket and timers.
 *
 * Runs on Deno, Node (through the `ws` package, the npm package's dependency) and Bun, with the
 * same behaviour and fault switches on each; in a browser it rejects with an `Error`.
 *
 * @example An authenticated server: the key decides the tenant
 * ```ts
 * import { startStubServer } from "@realm-ai/ws-client/testing";
 *
 * const server = await startStubServer({
 *   apiKeys: { "sk_test": "tenant-a" },
 *   rateLimit: { perMinute: 60, burst: 10 },
 *   tokenDelayMs: 1,
 * });
 * try {
 *   const { url, connectionCount } = server; // "ws://127.0.0.1:<port>", 0
 * } finally {
 *   await server.close();
 * }
 * ```
 */
export async function startStubServer(options: StubServerOptions = {}): Promise<StubServer> {
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`port must be an integer from 0 to 65535, got ${port}`);
  }
  const listen = await loadListener();
  const engine = new StubEngine(options);
  return createStubServer(engine, await listen(engine, port));
}

/** An adapter: serves `engine` on 127.0.0.1:`port` with one runtime's WebSocket server. */
type Listen = (engine: StubEngine, port: number) => StubListener | Promise<StubListener>;

/** The one place that knows runtimes: an adapter is imported only where it can run. */
async function loadListener(): Promise<Listen> {
  if ("Deno" in globalThis) return (await import("./src/stub/deno.ts")).listenDeno;
  // Before Node: Bun has `process.versions.node` too.
  if ("Bun" in globalThis) return (await import("./src/stub/bun.ts")).listenBun;
  const process = (globalThis as { process?: { versions?: { node?: string } } }).process;
  if (process?.versions?.node) return (await import("./src/stub/node.ts")).listenNode;
  throw new Error("startStubServer runs on Deno, Node and Bun; it cannot listen in a browser");
}
