/**
 * The CommonJS entries: `require`s the client and the stub server and runs one round trip of
 * each kind (connect, generate, stream, health). Usage: `node roundtrip.cjs <expected source>`.
 */
"use strict";
const process = require("node:process");
const { RealmError, RealmWebSocketClient } = require("@realm-ai/ws-client");
const { startStubServer } = require("@realm-ai/ws-client/testing");

async function main() {
  const expectedSource = process.argv[2];
  const entry = require.resolve("@realm-ai/ws-client");
  const testing = require.resolve("@realm-ai/ws-client/testing");
  console.log(`# Node ${process.version}, CommonJS entries ${entry} and ${testing}`);
  let passed = 0;
  let failed = 0;
  const check = (ok, name) => {
    if (ok) passed++;
    else failed++;
    console.log(`${ok ? "ok" : "not ok"} ${passed + failed} - ${name}`);
  };
  check(/[\\/]cjs[\\/]/.test(entry) && /[\\/]cjs[\\/]/.test(testing), "resolved to the cjs build");
  const server = await startStubServer({ tokenDelayMs: 1 });
  const client = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b" });
  try {
    await client.connect();
    check(client.getWebSocketSource() === expectedSource, `WebSocket source ${expectedSource}`);
    const result = await client.generate({ prompt: "What is the capital of France?" });
    const exact = {
      text: "Paris",
      tokens_generated: 1,
      prompt_tokens: 6,
      cost_usd: 0.00024,
      time_ms: 150,
    };
    const sorted = (o) => JSON.stringify(Object.entries(o).sort());
    // The server's exact answer, beside the call's id and its duration.
    const { requestId, durationMs, ...answer } = result;
    check(
      sorted(answer) === sorted(exact) && requestId === "1" && durationMs >= 0,
      `generate: the server's exact answer (${JSON.stringify(result)})`,
    );
    const tokens = [];
    for await (const token of client.generateStream({ prompt: "Hi", max_tokens: 3 })) {
      tokens.push(token);
    }
    check(tokens.join("|") === "The |capital |of ", `generateStream (${tokens.join("|")})`);
    check((await client.health()).status === "healthy", "health");
    const error = await client.executePipeline("missing", {}).catch((e) => e);
    check(error instanceof RealmError && error.code === "DISPATCH_ERROR", "RealmError code");
  } catch (error) {
    check(false, `round trip threw ${error && error.stack || error}`);
  } finally {
    await client.disconnect();
    await server.close();
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 ? 0 : 1;
}

main();
