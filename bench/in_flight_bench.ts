import { clientBesideRaw } from "./_raw.ts";

const CALLS = 1_000;

const { client, raw, tenantId } = await clientBesideRaw();

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
