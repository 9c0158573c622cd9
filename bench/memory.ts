/**
 * Memory held by the client across heavy use: heap in use (after a full GC) before and after
 * 100,000 calls and 1,000 streams on one client, and the difference. Target: within 1 MB.
 * Ends with `client.stats()` after `disconnect()`, all zero expected.
 *
 * ```sh
 * deno task bench:memory
 * ```
 *
 * The stub server runs in a worker, whose heap is its own: only the client's heap is measured.
 *
 * @module
 */
import { RealmWebSocketClient } from "../mod.ts";

const CALLS = 100_000;
const CALL_BATCH = 1_000;
const STREAMS = 1_000;
const STREAM_BATCH = 10;
const STREAM_TOKENS = 20;

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc (deno task bench:memory)");

/** Heap in use after a full collection, once pending callbacks and timers have run. */
async function heapUsed(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    gc!();
  }
  return Deno.memoryUsage().heapUsed;
}

const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;

const worker = new Worker(new URL("./_stub_worker.ts", import.meta.url), { type: "module" });
const url = await new Promise<string>((resolve) => {
  worker.onmessage = (event) => resolve(event.data);
  worker.postMessage({ tokenDelayMs: 0 });
});

const client = new RealmWebSocketClient({ url, model: "llama-2-7b" });
await client.connect();

async function calls(count: number): Promise<void> {
  for (let done = 0; done < count; done += CALL_BATCH) {
    const batch = Math.min(CALL_BATCH, count - done);
    await Promise.all(Array.from({ length: batch }, () => client.health()));
  }
}

async function streams(count: number): Promise<void> {
  for (let done = 0; done < count; done += STREAM_BATCH) {
    await Promise.all(Array.from({ length: Math.min(STREAM_BATCH, count - done) }, async () => {
      let tokens = 0;
      for await (const _ of client.generateStream({ prompt: "story", max_tokens: STREAM_TOKENS })) {
        tokens++;
      }
      if (tokens !== STREAM_TOKENS) throw new Error(`expected ${STREAM_TOKENS}, got ${tokens}`);
    }));
  }
}

// Warm up first, so that compiled code and lazily built caches are in "before".
await calls(2 * CALL_BATCH);
await streams(2 * STREAM_BATCH);
const before = await heapUsed();

const started = performance.now();
await calls(CALLS);
await streams(STREAMS);
const elapsed = performance.now() - started;
const after = await heapUsed();

await client.disconnect();
const disconnected = await heapUsed();
const stats = client.stats();

console.log(
  `${CALLS} health() calls and ${STREAMS} streams of ${STREAM_TOKENS} tokens ` +
    `in ${(elapsed / 1000).toFixed(1)} s`,
);
console.log(`heap in use before:       ${kb(before)}`);
console.log(`heap in use after:        ${kb(after)}`);
console.log(`difference:               ${kb(after - before)} (target: within 1024 KiB)`);
console.log(`after disconnect():       ${kb(disconnected)}`);
console.log(`client.stats():`, stats);

await new Promise<void>((resolve) => {
  worker.onmessage = () => resolve();
  worker.postMessage("close");
});
const ok = Math.abs(after - before) <= 1024 * 1024 &&
  Object.values(stats).every((value) => value === 0);
console.log(ok ? "target met" : "TARGET MISSED");
if (!ok) Deno.exitCode = 1;
