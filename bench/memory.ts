/**
 * Memory held by the client across heavy use: heap in use (after a full GC) before and after
 * 100,000 calls and 1,000 streams on one client, and the difference. Target: within 1 MB.
 * Ends with `client.stats()` after `disconnect()`, all zero expected. Then a slow reader: a
 * 20,000-token stream from the unpaced server arrives whole before the reader reads on; the heap
 * must shrink as it reads (it holds only the tokens not read yet), back to where it started plus
 * the tokens' joined text, which the stream keeps for `result.text`.
 *
 * ```sh
 * deno task bench:memory
 * ```
 *
 * The servers run in their own processes: only the client's heap is measured.
 *
 * @module
 */
import { RealmWebSocketClient } from "../mod.ts";
import { startServerProcess } from "./_process.ts";

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

const root = new URL("..", import.meta.url).pathname;
const net = "--allow-net=127.0.0.1,localhost";
const stub = await startServerProcess(
  Deno.execPath(),
  ["run", net, "--allow-env", "--allow-read", "bench/_stub_server.mjs", "0"],
  root,
);
const unpaced = await startServerProcess(
  Deno.execPath(),
  ["run", net, "bench/_unpaced_server.ts"],
  root,
);
const url = stub.url;

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

// A slow reader: the whole stream arrives before it reads on.
const SLOW_TOKENS = 20_000;
const reader = new RealmWebSocketClient({ url: unpaced.url, model: "llama-2-7b" });
await reader.connect();
// Warm up the path, so that its code is in the baseline.
for await (const _ of reader.generateStream({ prompt: "story", max_tokens: 100 }));
const slowBase = await heapUsed();
const slowStream = reader.generateStream({ prompt: "story", max_tokens: SLOW_TOKENS });
const tokens = slowStream[Symbol.asyncIterator]();
await tokens.next();
// The unpaced server writes 20,000 frames in well under a second; wait for the last one.
const arrived = performance.now() + 10_000;
while (reader.stats().pendingCalls > 0 && performance.now() < arrived) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}
const unread = await heapUsed();
for (let i = 1; i < SLOW_TOKENS / 2; i++) await tokens.next();
const halfRead = await heapUsed();
let read = SLOW_TOKENS / 2;
while (!(await tokens.next()).done) read++;
const allRead = await heapUsed();
await reader.disconnect();
// The stream also keeps the tokens joined, for `result.text` (the server's final frame of a stream
// has no text): one byte a character here (ASCII), held as long as the stream is.
const textBytes = (await slowStream.result).text.length;
console.log(`\nslow reader, ${SLOW_TOKENS} tokens arrived before it read on (${read} read):`);
console.log(`  all unread:    +${kb(unread - slowBase)}`);
console.log(`  half read:     +${kb(halfRead - slowBase)}`);
console.log(`  all read:      +${kb(allRead - slowBase)}`);
console.log(`  of which the joined text for result.text: ${kb(textBytes)}`);
// Holding only what is unread, beside the text: half read holds at most about half of what all
// unread did, all read holds the text and nothing else (within 128 KiB).
const unreadHeld = (heap: number) => heap - slowBase - textBytes;
const slowOk = read === SLOW_TOKENS && reader.stats().pendingCalls === 0 &&
  unreadHeld(halfRead) <= 0.6 * unreadHeld(unread) && unreadHeld(allRead) <= 128 * 1024;

await Promise.all([stub.stop(), unpaced.stop()]);
const ok = Math.abs(after - before) <= 1024 * 1024 &&
  Object.values(stats).every((value) => value === 0) && slowOk;
console.log(ok ? "targets met" : "TARGET MISSED");
if (!ok) Deno.exitCode = 1;
