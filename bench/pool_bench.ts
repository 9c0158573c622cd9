import { RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import { closeOnUnload } from "./_raw.ts";

const STREAMS = 8;
const TOKENS = 20;

// The real server serves one call at a time per socket, so 8 streams on 1 socket run one after
// another, and on 4 sockets two at a time each.
const server = await startStubServer({ tokenDelayMs: 10 });
const single = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b", connections: 1 });
const pool = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b", connections: 4 });
await Promise.all([single.connect(), pool.connect()]);
closeOnUnload(() => single.disconnect(), () => pool.disconnect(), () => server.close());

async function eightStreams(client: RealmWebSocketClient): Promise<void> {
  await Promise.all(Array.from({ length: STREAMS }, async () => {
    let count = 0;
    for await (const _token of client.generateStream({ prompt: "story", max_tokens: TOKENS })) {
      count++;
    }
    if (count !== TOKENS) throw new Error(`expected ${TOKENS} tokens, got ${count}`);
  }));
}

// 8 concurrent 20-token streams, 10 ms between tokens: connections: 4 against connections: 1.
// Target: at least 3.5× sooner with 4 sockets.
Deno.bench({
  name: "connections: 1, 8 streams",
  group: "pool",
  baseline: true,
  n: 5,
  warmup: 1,
  fn: async () => await eightStreams(single),
});

Deno.bench({
  name: "connections: 4, 8 streams",
  group: "pool",
  n: 5,
  warmup: 1,
  fn: async () => await eightStreams(pool),
});
