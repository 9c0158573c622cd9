import { RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import { closeOnUnload, RawSocket } from "./_raw.ts";

const server = await startStubServer({ tokenDelayMs: 0 });
const client = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b" });
await client.connect();
const raw = await RawSocket.open(server.url);
const tenantId = client.getTenantId();
closeOnUnload(() => raw.close(), () => client.disconnect(), () => server.close());

// One call at a time, answered before the next: client.health() against the raw loop.
// Target: the client's time per call at most 1.10× the raw loop's.
Deno.bench({
  name: "raw WebSocket: health round trip",
  group: "round trip",
  baseline: true,
  fn: async () => {
    await raw.call("health", {}, tenantId);
  },
});

Deno.bench({
  name: "client.health() round trip",
  group: "round trip",
  fn: async () => {
    await client.health();
  },
});
