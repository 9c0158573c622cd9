/**
 * What the tracing costs, in one run against one server: today's client with its tracing hooks
 * made no-ops (a copy of `mod.ts` and `src/` in a temporary folder whose `src/telemetry.ts`
 * exports functions that do nothing: the client as it would be without tracing) beside today's
 * client (its tracing on) with no subscriber and with one. Target: with no subscriber, the same time per call and
 * per token as without tracing (within the run's noise).
 *
 * `deno task bench:telemetry` (it needs a temporary folder; without `--allow-write` the copy
 * without tracing is left out and only the subscriber's cost is shown).
 *
 * @module
 */
import diagnostics from "node:diagnostics_channel";
import { RealmWebSocketClient } from "../mod.ts";
import { startServerProcess } from "./_process.ts";

/** Runs `closers` when the bench file is done. */
function closeOnUnload(...closers: (() => Promise<unknown>)[]): void {
  globalThis.addEventListener("unload", () => {
    for (const close of closers) void close().catch(() => {});
  });
}

const TOKENS = 10_000;
const PARAMS = { prompt: "Tell me a story", max_tokens: TOKENS };

type Client = Pick<RealmWebSocketClient, "connect" | "disconnect" | "health" | "generateStream">;

type Entry = { RealmWebSocketClient: typeof RealmWebSocketClient };

/**
 * Today's client entry with every function `src/telemetry.ts` exports replaced by one that does
 * nothing, loaded from a copy in a temporary folder; undefined without the permission to write it.
 */
async function entryWithoutTracing(): Promise<Entry | undefined> {
  const write = await Deno.permissions.query({ name: "write" });
  if (write.state !== "granted") return undefined;
  const root = new URL("../", import.meta.url);
  const dir = await Deno.makeTempDir({ prefix: "realm-bench-no-tracing-" });
  closeOnUnload(() => Deno.remove(dir, { recursive: true }));
  await Deno.mkdir(`${dir}/src`);
  await Deno.copyFile(new URL("mod.ts", root), `${dir}/mod.ts`);
  for await (const { name, isFile } of Deno.readDir(new URL("src/", root))) {
    if (isFile && name.endsWith(".ts")) {
      await Deno.copyFile(new URL(`src/${name}`, root), `${dir}/src/${name}`);
    }
  }
  const telemetry = await Deno.readTextFile(new URL("src/telemetry.ts", root));
  const hooks = [...telemetry.matchAll(/^export function (\w+)/gm)].map((match) => match[1]);
  if (hooks.length === 0) throw new Error("src/telemetry.ts exports no function to make a no-op");
  // Its constants (the channels' names) and types stay as they are: only the hooks do nothing.
  const constants = telemetry.match(/^export const \w+ = .*;$/gm) ?? [];
  await Deno.writeTextFile(
    `${dir}/src/telemetry.ts`,
    [...constants, ...hooks.map((name) => `export function ${name}(): undefined {}`)].join("\n") +
      "\nexport type CallTraceContext = Record<string, unknown>;" +
      "\nexport type ConnectionTraceMessage = Record<string, unknown>;\n",
  );
  return await import(`file://${dir}/mod.ts`);
}

// The unpaced server, in its own process (see _unpaced_server.ts): the reader is the bottleneck.
const server = await startServerProcess(
  Deno.execPath(),
  ["run", "--allow-net=127.0.0.1", "bench/_unpaced_server.ts"],
  new URL("..", import.meta.url).pathname,
);
const url = server.url;

async function open(Client: typeof RealmWebSocketClient): Promise<Client> {
  const client = new Client({ url, model: "llama-2-7b" });
  await client.connect();
  return client;
}

const Untraced = await entryWithoutTracing();
const untraced = Untraced ? await open(Untraced.RealmWebSocketClient) : undefined;
const traced = await open(RealmWebSocketClient);
closeOnUnload(
  () => untraced?.disconnect() ?? Promise.resolve(),
  () => traced.disconnect(),
  () => server.stop(),
);

/** A subscriber that does what a light one does: looks at each context once. */
const channel = diagnostics.tracingChannel<unknown, Record<string, unknown>>("realm:call");
let seen = 0;
const subscriber = {
  start: () => void seen++,
  end: () => {},
  asyncStart: () => {},
  asyncEnd: () => void seen++,
  error: () => {},
};

async function stream(client: Client): Promise<void> {
  let count = 0;
  for await (const _token of client.generateStream(PARAMS)) count++;
  if (count !== TOKENS) throw new Error(`expected ${TOKENS} tokens, got ${count}`);
}

async function subscribed(fn: () => Promise<void>): Promise<void> {
  channel.subscribe(subscriber);
  try {
    await fn();
  } finally {
    channel.unsubscribe(subscriber);
  }
}

const groups = [
  { group: "health() round trip", what: "health()", fn: (client: Client) => client.health() },
  { group: "stream of 10,000 tokens", what: "generateStream()", fn: stream },
];

for (const { group, what, fn } of groups) {
  if (untraced) {
    Deno.bench({
      name: `without tracing: ${what}`,
      group,
      baseline: true,
      fn: async () => void await fn(untraced),
    });
  }
  Deno.bench({
    name: `tracing, no subscriber: ${what}`,
    group,
    baseline: !untraced,
    fn: async () => void await fn(traced),
  });
  Deno.bench({
    name: `tracing, a realm:call subscriber: ${what}`,
    group,
    // An async function: `deno bench` awaits only those.
    fn: async () => await subscribed(async () => void await fn(traced)),
  });
}

// Without I/O, so that a difference of a few hundred nanoseconds is not lost in the socket's noise:
// the whole path of a call that fails at once (checks, registry, tracing hook, dispatch, settle).
const offline = { url: "ws://127.0.0.1:9", model: "llama-2-7b" };
const idle = new RealmWebSocketClient(offline);
const idleUntraced = Untraced && new Untraced.RealmWebSocketClient(offline);
const local = "a call without I/O (health() before connect(): NOT_CONNECTED)";
if (idleUntraced) {
  Deno.bench({
    name: "without tracing: health()",
    group: local,
    baseline: true,
    fn: async () => void await idleUntraced.health().catch(() => {}),
  });
}
Deno.bench({
  name: "tracing, no subscriber: health()",
  group: local,
  baseline: !idleUntraced,
  fn: async () => void await idle.health().catch(() => {}),
});
Deno.bench({
  name: "tracing, a realm:call subscriber: health()",
  group: local,
  fn: async () => await subscribed(async () => void await idle.health().catch(() => {})),
});
