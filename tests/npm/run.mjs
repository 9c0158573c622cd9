/**
 * Runs the behaviour suite on Node or Bun against the installed package (ESM entry), with both
 * stub servers started in this process through `@realm-ai/ws-client/testing`.
 *
 * Usage: `node run.mjs <expected WebSocket source>` (or `bun run.mjs ...`) from a project that
 * has the package installed. Exits with 1 when a check fails.
 *
 * @module
 */
import process from "node:process";
import { RealmError, RealmWebSocketClient } from "@realm-ai/ws-client";
import { startStubServer } from "@realm-ai/ws-client/testing";
import { runBehaviour } from "./behaviour.mjs";

const expectedSource = process.argv[2];
if (!["global", "fallback", "option"].includes(expectedSource)) {
  console.error("usage: run.mjs <global|fallback|option>");
  process.exit(2);
}
// A hung suite must not hang CI; unref'd so that it never keeps a finished run alive.
const watchdog = setTimeout(() => {
  console.error("run.mjs: still running after 120 s, giving up");
  process.exit(2);
}, 120_000);
watchdog.unref?.();

const bun = globalThis.Bun;
const runtime = bun ? `Bun ${bun.version}` : `Node ${process.version}`;
// import.meta.resolve is synchronous from Node 20.6 on; older ones only name the runtime.
const entry = typeof import.meta.resolve === "function"
  ? `, ESM entry ${import.meta.resolve("@realm-ai/ws-client")}`
  : "";
console.log(`# ${runtime}${entry}`);

const apiKey = "sk-test-npm";
const tenantId = "tenant-npm";
// The behaviour suite runs the built-in rag-pipeline: the stub's orchestrator, a test extra.
const open = await startStubServer({ tokenDelayMs: 5, orchestrator: true });
const auth = await startStubServer({ apiKeys: { [apiKey]: tenantId }, tokenDelayMs: 5 });
try {
  const result = await runBehaviour({
    RealmWebSocketClient,
    RealmError,
    openUrl: open.url,
    authUrl: auth.url,
    apiKey,
    tenantId,
    expectedSource,
    dropConnections: () => {
      open.faults.dropAfterFrames(0);
      open.faults.clear();
      return Promise.resolve();
    },
  });
  process.exitCode = result.failed === 0 ? 0 : 1;
} finally {
  await Promise.all([open.close(), auth.close()]);
}
