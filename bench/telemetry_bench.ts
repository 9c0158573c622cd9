/**
 * What the tracing costs: the client as it was before it had any (commit `BEFORE`, loaded from
 * git into a temporary folder) beside today's, with no subscriber and with one, in the same run
 * and against the same server. Target: with no subscriber, the same time per call and per token
 * as before (within the run's noise).
 *
 * `deno task bench:telemetry` (it needs `git` and a temporary folder; under plain
 * `deno task bench` the "before" client is left out and only the subscriber's cost is shown).
 *
 * @module
 */
import diagnostics from "node:diagnostics_channel";
import { RealmWebSocketClient, TokenStream } from "../mod.ts";
import { startServerProcess } from "./_process.ts";

/** Runs `closers` when the bench file is done. */
function closeOnUnload(...closers: (() => Promise<unknown>)[]): void {
  globalThis.addEventListener("unload", () => {
    for (const close of closers) void close().catch(() => {});
  });
}

/** The last commit without tracing, request ids or timings. */
const BEFORE = "e4355fd";
const TOKENS = 10_000;
const PARAMS = { prompt: "Tell me a story", max_tokens: TOKENS };

type Client = Pick<RealmWebSocketClient, "connect" | "disconnect" | "health" | "generateStream">;

type Entry = { RealmWebSocketClient: typeof RealmWebSocketClient; TokenStream: typeof TokenStream };

/** The client entry at `BEFORE`, or undefined without the permissions to fetch it. */
async function entryBefore(): Promise<Entry | undefined> {
  const run = await Deno.permissions.query({ name: "run", command: "git" });
  const write = await Deno.permissions.query({ name: "write" });
  if (run.state !== "granted" || write.state !== "granted") return undefined;
  const git = async (...args: string[]) => {
    const { success, stdout, stderr } = await new Deno.Command("git", { args }).output();
    if (!success) throw new Error(`git ${args.join(" ")}: ${new TextDecoder().decode(stderr)}`);
    return new TextDecoder().decode(stdout);
  };
  const dir = await Deno.makeTempDir({ prefix: "realm-bench-before-" });
  const files = (await git("ls-tree", "-r", "--name-only", BEFORE, "mod.ts", "src"))
    .split("\n").filter((path) => path.endsWith(".ts") && !path.startsWith("src/stub/"));
  await Deno.mkdir(`${dir}/src`);
  for (const path of files) {
    await Deno.writeTextFile(`${dir}/${path}`, await git("show", `${BEFORE}:${path}`));
  }
  closeOnUnload(() => Deno.remove(dir, { recursive: true }));
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

const Before = await entryBefore();
const before = Before ? await open(Before.RealmWebSocketClient) : undefined;
const after = await open(RealmWebSocketClient);
closeOnUnload(
  () => before?.disconnect() ?? Promise.resolve(),
  () => after.disconnect(),
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
  if (before) {
    Deno.bench({
      name: `before tracing (${BEFORE}): ${what}`,
      group,
      baseline: true,
      fn: async () => void await fn(before),
    });
  }
  Deno.bench({
    name: `now, no subscriber: ${what}`,
    group,
    baseline: !before,
    fn: async () => void await fn(after),
  });
  Deno.bench({
    name: `now, a realm:call subscriber: ${what}`,
    group,
    // An async function: `deno bench` awaits only those.
    fn: async () => await subscribed(async () => void await fn(after)),
  });
}

// Without I/O, so that a difference of a few hundred nanoseconds is not lost in the socket's noise:
// the whole path of a call that fails at once (checks, registry, tracing hook, dispatch, settle)...
const offline = { url: "ws://127.0.0.1:9", model: "llama-2-7b" };
const idleBefore = Before && new Before.RealmWebSocketClient(offline);
const idleAfter = new RealmWebSocketClient(offline);
/** ...and 10,000 tokens through a TokenStream, the part of a stream that runs per token. */
async function tokens(Stream: typeof TokenStream): Promise<void> {
  const stream = new Stream((sink) => {
    for (let i = 0; i < TOKENS; i++) sink.token("word ");
    sink.close();
    return () => {};
  });
  let count = 0;
  for await (const _token of stream) count++;
  if (count !== TOKENS) throw new Error(`expected ${TOKENS} tokens, got ${count}`);
}
const local = [
  {
    group: "a call without I/O (health() before connect(): NOT_CONNECTED)",
    what: "health()",
    before: idleBefore && (() => idleBefore.health().catch(() => {})),
    after: () => idleAfter.health().catch(() => {}),
  },
  {
    group: "10,000 tokens through a TokenStream, without I/O",
    what: "for await",
    before: Before && (() => tokens(Before.TokenStream)),
    after: () => tokens(TokenStream),
  },
];
for (const { group, what, before, after } of local) {
  if (before) {
    Deno.bench({
      name: `before tracing: ${what}`,
      group,
      baseline: true,
      fn: async () => void await before(),
    });
  }
  Deno.bench({
    name: `now, no subscriber: ${what}`,
    group,
    baseline: !before,
    fn: async () => void await after(),
  });
  Deno.bench({
    name: `now, a realm:call subscriber: ${what}`,
    group,
    fn: async () => await subscribed(async () => void await after()),
  });
}
