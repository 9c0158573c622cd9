/**
 * The README's options table says what the code does: the same option names as
 * `RealmClientOptions` and as the constructor's checks (`resolveOptions` in src/validate.ts), and
 * each default as the constructor fills it in.
 */
import assert from "node:assert/strict";
import { type RealmClientOptions, RealmWebSocketClient } from "../mod.ts";
import { resolveOptions } from "../src/validate.ts";

const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));

/** The rows of the table under `### \`new RealmWebSocketClient(options)\``: option → default. */
function readmeOptions(): Map<string, string> {
  const start = readme.indexOf("### `new RealmWebSocketClient(options)`");
  assert.ok(start >= 0, "the README has the constructor's section");
  const section = readme.slice(start, readme.indexOf("\n### ", start + 1));
  const rows = new Map<string, string>();
  for (const line of section.split("\n")) {
    const cells = line.split("|").slice(1, -1).map((cell) => cell.trim());
    const name = cells[0]?.match(/^`(\w+)`$/)?.[1];
    if (name !== undefined) rows.set(name, cells[1]);
  }
  return rows;
}

/** Every option of the type: the compiler fails this object when a key is missing or unknown. */
const TYPED: Record<keyof RealmClientOptions, true> = {
  model: true,
  url: true,
  apiKey: true,
  tenantId: true,
  reconnect: true,
  reconnectInterval: true,
  maxReconnectInterval: true,
  maxReconnectAttempts: true,
  timeout: true,
  streamIdleTimeout: true,
  connectTimeout: true,
  heartbeatInterval: true,
  heartbeatTimeout: true,
  maxRetries: true,
  maxQueuedCalls: true,
  connections: true,
  allowInsecureAuth: true,
  WebSocket: true,
  logger: true,
};

const sorted = (names: Iterable<string>) => [...names].sort();

Deno.test("the README's options table names every option the code accepts, and no other", () => {
  const documented = sorted(readmeOptions().keys());
  assert.deepEqual(documented, sorted(Object.keys(TYPED)));
  // The resolved options hold `url` as `urls` (a list of one for a single address) and
  // `serverList` (whether it was given as a list).
  const resolved = Object.keys(resolveOptions({ model: "m" }))
    .filter((name) => name !== "serverList")
    .map((name) => name === "urls" ? "url" : name);
  assert.deepEqual(documented, sorted(resolved));
});

/** What a default cell means, as a value the resolved options hold. */
function documentedDefault(cell: string): unknown {
  const text = cell.replaceAll("`", "");
  if (text === "none" || text === "the runtime's WebSocket" || text === "random UUID") {
    return undefined;
  }
  if (text === "true" || text === "false") return text === "true";
  if (text.startsWith('"')) return JSON.parse(text);
  const number = text.match(/^(Infinity|\d+)( \(off\))?$/);
  assert.ok(number, `a default the test does not know how to read: ${cell}`);
  return Number(number[1]);
}

Deno.test("each default in the README is the one the constructor fills in", () => {
  const resolved = resolveOptions({ model: "m" }) as unknown as Record<string, unknown>;
  for (const [name, cell] of readmeOptions()) {
    if (name === "model") {
      // Required: no default.
      assert.equal(cell, "—");
      assert.throws(() => resolveOptions({} as RealmClientOptions), /`model` is required/);
      continue;
    }
    if (name === "url") {
      assert.deepEqual(resolved.urls, [documentedDefault(cell)], `url: README says ${cell}`);
      continue;
    }
    assert.deepEqual(resolved[name], documentedDefault(cell), `${name}: README says ${cell}`);
  }
  // "random UUID": the client draws one when no tenantId is given.
  assert.equal(readmeOptions().get("tenantId"), "random UUID");
  assert.match(new RealmWebSocketClient({ model: "m" }).getTenantId(), /^[0-9a-f-]{36}$/);
});
