/**
 * The main job: starts the stub Realm server on a free port (with an API
 * key, so the demo shows authentication and tenant adoption) and runs four
 * examples against it: basic, streaming, error handling and the AI SDK.
 * `deno task demo` (with its own lockfile, `examples/deno.lock`: a first run
 * downloads only the AI SDK).
 *
 * @module
 */
import { startStubServer } from "@realm-ai/ws-client/testing";
import { main as basic } from "./basic.ts";
import { main as streaming } from "./streaming.ts";
import { main as errorHandling } from "./error-handling.ts";
import { main as aiSdk } from "./ai-sdk.ts";

const apiKey = "demo-key";
const server = await startStubServer({
  // The basic example runs a pipeline: the stub's orchestrator (the real simulation has none).
  orchestrator: true,
  apiKeys: { [apiKey]: "demo-tenant" },
  rateLimit: { perMinute: 600, burst: 100 },
  tokenDelayMs: 30,
});
console.log(`Stub Realm server listening on ${server.url}\n`);
try {
  for (
    const [name, run] of [["basic", basic], ["streaming", streaming], [
      "error-handling",
      errorHandling,
    ], ["ai-sdk", aiSdk]] as const
  ) {
    console.log(`--- ${name} ---`);
    await run(server.url, apiKey);
    console.log();
  }
} finally {
  await server.close();
}
