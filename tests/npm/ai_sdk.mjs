/**
 * The `./ai-sdk` entry of the installed package, driven by the real AI SDK on Node 22 against the
 * stub server: generateText, streamText (text and full streams), abort, a retried rate limit, a
 * refused key, warnings.
 *
 * Usage: `node ai_sdk.mjs <ai package>` from a project that has the package installed, where
 * `<ai package>` names the installed `ai` to drive it with (`ai` for the current major, or an
 * alias such as `ai6` for an older one). Exits with 1 when a check fails.
 *
 * @module
 */
import assert from "node:assert/strict";
import process from "node:process";
import { RealmError } from "@realm-ai/ws-client";
import { createRealm } from "@realm-ai/ws-client/ai-sdk";
import { startStubServer } from "@realm-ai/ws-client/testing";

const aiPackage = process.argv[2];
if (!aiPackage) {
  console.error("usage: ai_sdk.mjs <ai package, e.g. ai or ai6>");
  process.exit(2);
}
const watchdog = setTimeout(() => {
  console.error("ai_sdk.mjs: still running after 60 s, giving up");
  process.exit(2);
}, 60_000);
watchdog.unref();

const { APICallError, generateText, streamText } = await import(aiPackage);
const { version } = (await import(`${aiPackage}/package.json`, { with: { type: "json" } }))
  .default;
console.log(`# Node ${process.version}, ai ${version}`);
// The AI SDK prints warnings unless told not to; the checks read them instead.
globalThis.AI_SDK_LOG_WARNINGS = false;

const FRANCE = "What is the capital of France?";
const WORDS = ["The ", "capital ", "of ", "France ", "is ", "Paris. "];
// 30 ms between tokens: an abort lands long before the next token is due.
const open = await startStubServer({ tokenDelayMs: 30 });
const limited = await startStubServer({
  apiKeys: { "sk-test": "tenant-a" },
  rateLimit: { perMinute: 60, burst: 1 },
  tokenDelayMs: 5,
});
const realm = createRealm({ url: open.url, timeout: 10_000 });
const limitedRealm = createRealm({ url: limited.url, apiKey: "sk-test", timeout: 10_000 });
const refused = createRealm({ url: limited.url, apiKey: "sk-wrong", timeout: 10_000 });

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

check("generateText answers Paris, with the server's usage", async () => {
  const result = await generateText({ model: realm("llama-2-7b"), prompt: FRANCE });
  assert.equal(result.text, "Paris");
  assert.equal(result.finishReason, "stop");
  assert.equal(result.usage.inputTokens, 6);
  assert.equal(result.usage.outputTokens, 1);
});

check("streamText: textStream delivers every token in order", async () => {
  const result = streamText({ model: realm("llama-2-7b"), prompt: "Hi", maxOutputTokens: 6 });
  const deltas = [];
  for await (const delta of result.textStream) deltas.push(delta);
  assert.deepEqual(deltas, WORDS);
  assert.equal(await result.finishReason, "length");
});

check("streamText: fullStream parts in order; finish carries usage", async () => {
  const result = streamText({ model: realm("llama-2-7b"), prompt: "Hi", maxOutputTokens: 2 });
  const parts = [];
  for await (const part of result.fullStream) parts.push(part);
  assert.deepEqual(parts.map((p) => p.type), [
    "start",
    "start-step",
    "text-start",
    "text-delta",
    "text-delta",
    "text-end",
    "finish-step",
    "finish",
  ]);
  assert.equal(parts.at(-1).totalUsage.outputTokens, 2);
});

check("abort mid-stream stops the call; nothing stays pending", async () => {
  const controller = new AbortController();
  const result = streamText({
    model: realm("llama-2-7b"),
    prompt: "Hi",
    maxOutputTokens: 20,
    abortSignal: controller.signal,
  });
  const deltas = [];
  for await (const delta of result.textStream) {
    deltas.push(delta);
    if (deltas.length === 2) controller.abort();
  }
  assert.deepEqual(deltas, WORDS.slice(0, 2));
  const stats = realm.client.stats();
  assert.equal(stats.pendingCalls, 0);
  assert.equal(stats.queuedCalls, 0);
});

check("a rate-limited call is retried by maxRetries, then succeeds", async () => {
  const model = limitedRealm("llama-2-7b");
  assert.equal((await generateText({ model, prompt: FRANCE })).text, "Paris");
  const before = limited.callCount;
  const result = await generateText({ model, prompt: FRANCE, maxRetries: 1 });
  assert.equal(result.text, "Paris");
  assert.equal(limited.callCount - before, 2);
});

check("a refused key: a non-retryable APICallError caused by the RealmError", async () => {
  let error;
  try {
    await generateText({ model: refused("llama-2-7b"), prompt: FRANCE, maxRetries: 2 });
  } catch (e) {
    error = e;
  }
  assert.ok(APICallError.isInstance(error), `expected an APICallError, got ${error}`);
  assert.equal(error.isRetryable, false);
  assert.ok(error.cause instanceof RealmError, "its cause is the package's RealmError");
  assert.equal(error.cause.code, "UNAUTHORIZED");
});

check("an unsupported setting comes back as a warning", async () => {
  const result = await generateText({ model: realm("llama-2-7b"), prompt: FRANCE, seed: 1 });
  assert.deepEqual(result.warnings, [
    { type: "unsupported", feature: "seed", details: "Realm's sampling takes no seed." },
  ]);
});

let passed = 0;
let failed = 0;
try {
  for (const [index, { name, fn }] of checks.entries()) {
    try {
      await fn();
      passed++;
      console.log(`ok ${index + 1} - ${name}`);
    } catch (error) {
      failed++;
      console.log(`not ok ${index + 1} - ${name}: ${error?.stack ?? error}`);
    }
  }
} finally {
  await Promise.all([realm.close(), limitedRealm.close(), refused.close()]);
  await Promise.all([open.close(), limited.close()]);
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
