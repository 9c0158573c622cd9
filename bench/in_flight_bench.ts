import { RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import { closeOnUnload, RawSocket } from "./_raw.ts";

const CALLS = 1_000;

const server = await startStubServer({ tokenDelayMs: 0 });
const client = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b" });
await client.connect();
const raw = await RawSocket.open(server.url);
const tenantId = client.getTenantId();
closeOnUnload(() => raw.close(), () => client.disconnect(), () => server.close());

// 1,000 health calls sent at once on one socket, all awaited: the raw socket pipelining 1,000
// requests against 1,000 concurrent client.health(). Time per call = time/iter ÷ 1,000.
Deno.bench({
  name: "raw WebSocket: 1,000 pipelined health calls",
  group: "1,000 calls in flight",
  baseline: true,
  fn: async () => {
    await Promise.all(Array.from({ length: CALLS }, () => raw.call("health", {}, tenantId)));
  },
});

Deno.bench({
  name: "client: 1,000 concurrent health()",
  group: "1,000 calls in flight",
  fn: async () => {
    await Promise.all(Array.from({ length: CALLS }, () => client.health()));
  },
});
