import { clientBesideRaw } from "./_raw.ts";

const { client, raw, tenantId } = await clientBesideRaw();

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
