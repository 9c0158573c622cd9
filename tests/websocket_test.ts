/**
 * Which WebSocket implementation the client picks: the option, else the runtime's global, else
 * the registered fallback (the npm package's `ws` on Node 20), else a clear INVALID_OPTIONS.
 */
import assert from "node:assert/strict";
import { resolveWebSocket, setWebSocketFallback } from "../src/websocket.ts";
import { RealmError } from "../mod.ts";

class OptionSocket extends WebSocket {}
class FallbackSocket extends WebSocket {}

/** Runs `fn` as on a runtime without a global WebSocket. */
async function withoutGlobal(fn: () => Promise<void>): Promise<void> {
  const global = globalThis.WebSocket;
  // deno-lint-ignore no-explicit-any
  delete (globalThis as any).WebSocket;
  try {
    await fn();
  } finally {
    globalThis.WebSocket = global;
    setWebSocketFallback(undefined as never);
  }
}

Deno.test("resolveWebSocket: the option first, then the global", async () => {
  assert.deepStrictEqual(await resolveWebSocket(OptionSocket), {
    WebSocket: OptionSocket,
    source: "option",
  });
  assert.deepStrictEqual(await resolveWebSocket(undefined), {
    WebSocket: globalThis.WebSocket,
    source: "global",
  });
});

Deno.test("resolveWebSocket: the fallback only without a global, and an error without either", async () => {
  let loads = 0;
  setWebSocketFallback(() => {
    loads++;
    return Promise.resolve(FallbackSocket);
  });
  assert.equal((await resolveWebSocket(undefined)).source, "global");
  assert.equal(loads, 0, "the fallback is not loaded while a global exists");
  await withoutGlobal(async () => {
    setWebSocketFallback(() => Promise.resolve(FallbackSocket));
    assert.deepStrictEqual(await resolveWebSocket(undefined), {
      WebSocket: FallbackSocket,
      source: "fallback",
    });
    assert.equal((await resolveWebSocket(OptionSocket)).source, "option");
    setWebSocketFallback(undefined as never);
    const error = await resolveWebSocket(undefined).then(() => undefined, (e) => e);
    assert.ok(error instanceof RealmError);
    assert.equal(error.code, "INVALID_OPTIONS");
    assert.match(error.message, /no global WebSocket/);
  });
});
