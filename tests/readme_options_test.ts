/**
 * The README's options table says what the code does: the same option names as
 * `RealmClientOptions` and as the constructor's checks (`resolveOptions` in src/validate.ts), and
 * each default as the constructor fills it in.
 */
import assert from "node:assert/strict";
import { type RealmClientOptions, RealmWebSocketClient } from "../mod.ts";
import { OPTION_DEFAULTS, resolveOptions } from "../src/validate.ts";

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
  pipelining: true,
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

/** The `@default` tag of each option of `RealmClientOptions`, as `deno doc --json` reads it. */
async function documentedTags(): Promise<Map<string, { doc: string; default?: string }>> {
  const { stdout, success } = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--json", new URL("../src/types.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.ok(success, "deno doc --json ran");
  type Property = {
    name: string;
    jsDoc?: { doc?: string; tags?: { kind: string; value?: string }[] };
  };
  type Symbol = { name: string; declarations: { def?: { properties?: Property[] } }[] };
  const json = JSON.parse(new TextDecoder().decode(stdout));
  const symbols = (Object.values(json.nodes)[0] as { symbols: Symbol[] }).symbols;
  const options = symbols.find((symbol) => symbol.name === "RealmClientOptions");
  assert.ok(options, "deno doc lists RealmClientOptions");
  const tags = new Map<string, { doc: string; default?: string }>();
  for (const property of options.declarations[0].def?.properties ?? []) {
    const tag = property.jsDoc?.tags?.find((t) => t.kind === "default");
    tags.set(property.name, { doc: property.jsDoc?.doc ?? "", default: tag?.value });
  }
  return tags;
}

Deno.test("each option's @default tag, shown by deno doc and editors, is the default the client applies", async () => {
  const tags = await documentedTags();
  assert.deepEqual(sorted(tags.keys()), sorted(Object.keys(OPTION_DEFAULTS)));
  for (const [name, fallback] of Object.entries(OPTION_DEFAULTS)) {
    const { doc, default: tag } = tags.get(name)!;
    if (fallback === undefined) {
      // Required, none, or computed: said in prose, with no @default that could mislead.
      assert.equal(tag, undefined, `${name} has no fixed default, so no @default tag`);
      assert.match(doc, /Default: |Required/, `${name} says in prose what it defaults to`);
      continue;
    }
    assert.ok(tag !== undefined, `${name} has an @default tag`);
    assert.deepEqual(
      tag === "Infinity" ? Infinity : JSON.parse(tag),
      fallback,
      `${name}: @default ${tag}`,
    );
  }
});

Deno.test("the README's defaults and the constructor's fill-ins both come from the one table", () => {
  const resolved = resolveOptions({ model: "m" }) as unknown as Record<string, unknown>;
  for (const [name, cell] of readmeOptions()) {
    const fallback = (OPTION_DEFAULTS as Record<string, unknown>)[name];
    if (fallback === undefined) continue;
    assert.deepEqual(documentedDefault(cell), fallback, `${name}: README says ${cell}`);
    assert.deepEqual(
      name === "url" ? resolved.urls : resolved[name],
      name === "url" ? [fallback] : fallback,
    );
  }
  // Computed defaults.
  assert.equal(
    resolveOptions({ model: "m", url: ["ws://a:1", "ws://b:1", "ws://c:1"] }).connections,
    3,
  );
  assert.equal(
    resolveOptions({ model: "m", reconnectInterval: 90_000 }).maxReconnectInterval,
    90_000,
  );
});
