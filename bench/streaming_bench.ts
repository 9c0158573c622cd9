import { RealmWebSocketClient } from "../mod.ts";
import { clientBesideRaw, closeOnUnload, RawSocket } from "./_raw.ts";

const TOKENS = 10_000;
const PROMPT = "Tell me a story";
const PARAMS = { prompt: PROMPT, model: "llama-2-7b", max_tokens: TOKENS, stream: true };

function expect(count: number): void {
  if (count !== TOKENS) throw new Error(`expected ${TOKENS} tokens, got ${count}`);
}

async function clientStream(client: RealmWebSocketClient): Promise<void> {
  let count = 0;
  for await (const _token of client.generateStream({ prompt: PROMPT, max_tokens: TOKENS })) {
    count++;
  }
  expect(count);
}

const { client, raw, tenantId } = await clientBesideRaw();

// See _fast_server_worker.ts: the same frames as the stub's, written as fast as TCP takes them.
const fastServer = new Worker(new URL("./_fast_server_worker.ts", import.meta.url), {
  type: "module",
});
const fastUrl = await new Promise<string>((resolve) => {
  fastServer.onmessage = (event) => resolve(event.data);
  fastServer.postMessage("start");
});
const fastClient = new RealmWebSocketClient({ url: fastUrl, model: "llama-2-7b" });
await fastClient.connect();
const fastRaw = await RawSocket.open(fastUrl);

closeOnUnload(
  () => fastRaw.close(),
  () => fastClient.disconnect(),
  () => Promise.resolve(fastServer.terminate()),
);

// One 10,000-token stream per iteration from the stub (token delay 0): generateStream() against
// counting the raw `streaming` frames until `complete`. Target: time at most 1.11× raw (≥ 0.90×
// the throughput). The stub yields to a timer every 100 tokens, which paces both.
Deno.bench({
  name: "stub, raw WebSocket: 10,000 streaming frames",
  group: "streaming throughput (stub)",
  baseline: true,
  fn: async () => expect(await raw.stream(PARAMS, tenantId)),
});

Deno.bench({
  name: "stub, client.generateStream(): 10,000 tokens",
  group: "streaming throughput (stub)",
  fn: async () => await clientStream(client),
});

// The same from a source that never waits (a worker writing the stub's frames back to back), so
// that the reader is the bottleneck and the ratio is the client's own cost per token.
// Same target.
Deno.bench({
  name: "unpaced, raw WebSocket: 10,000 streaming frames",
  group: "streaming throughput (unpaced source)",
  baseline: true,
  fn: async () => expect(await fastRaw.stream(PARAMS, tenantId)),
});

Deno.bench({
  name: "unpaced, client.generateStream(): 10,000 tokens",
  group: "streaming throughput (unpaced source)",
  fn: async () => await clientStream(fastClient),
});
