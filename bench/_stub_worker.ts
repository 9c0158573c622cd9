/**
 * Runs the stub server in a worker for `memory.ts`: a worker has its own heap, so the server's
 * memory (it keeps every frame it receives) stays out of the client's `heapUsed`.
 *
 * Messages in: `{ tokenDelayMs }` starts the server, answered with its URL; `"close"` closes it,
 * answered with `"closed"`.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { startStubServer, type StubServer } from "../testing.ts";

let server: StubServer | undefined;
self.onmessage = async (event: MessageEvent) => {
  if (event.data === "close") {
    await server?.close();
    self.postMessage("closed");
    self.close();
    return;
  }
  server = await startStubServer({ tokenDelayMs: event.data.tokenDelayMs });
  self.postMessage(server.url);
};
