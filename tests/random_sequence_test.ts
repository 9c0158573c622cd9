/**
 * Orders of events nobody thought of: hundreds of seeded random sequences of
 * connect / disconnect / reconnect, calls, streams, aborts, `break`s, one
 * server or a list of two,
 * listeners that call back into the client, and server drops, stalls,
 * restarts and rate limits, against the stub server. After each sequence:
 * every call settled exactly once with a result or a RealmError, every
 * stream that succeeded has all its tokens in order, the state moved only
 * along allowed edges, and after `disconnect()` nothing is left.
 *
 * The seed is in the test's name; replay one with
 * `REALM_SEED=<seed> deno task test tests/random_sequence_test.ts`; set
 * `REALM_SEQUENCES` for more or fewer sequences, and `REALM_TRACE=1` to see
 * the client's log lines among a failing sequence's steps.
 */
import assert from "node:assert/strict";
import {
  type ConnectionState,
  RealmError,
  RealmWebSocketClient,
  STATE_EDGES,
  type StateChange,
} from "../mod.ts";
import { startStubServer, type StubServer } from "../testing.ts";
import { idleStats, sanitize, until, within } from "./_helpers.ts";

const seed = Number(Deno.env.get("REALM_SEED") ?? Math.floor(Math.random() * 2 ** 31));
const SEQUENCES = Number(Deno.env.get("REALM_SEQUENCES") ?? 300);
const STEPS = 12;
const API_KEY = "sk_random";
const TENANT = "tenant-random";

/** A small seeded generator (mulberry32): the same seed gives the same sequence. */
function random(seedValue: number) {
  let state = seedValue >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    chance: (p: number) => next() < p,
  };
}

/** The stub's stream for a prompt: its words, cycled, each with a trailing space. */
function expectedTokens(prompt: string, count: number): string[] {
  const first = prompt.split(/\s+/).filter(Boolean)[0] ?? "unknown";
  const words = `The capital of France is Paris. This is a simulated response to: ${first}`
    .split(/\s+/);
  return Array.from({ length: count }, (_, i) => `${words[i % words.length]} `);
}

/** One call made by a sequence, and what became of it. */
interface Tracked {
  what: string;
  settled: number;
  outcome?: { value: unknown } | { error: unknown };
  /** Tokens handed over after the call had settled: must stay 0. */
  lateTokens: number;
  check?: () => void;
}

/** The stub server of a sequence; restarted on the same port now and then. */
class Servers {
  server!: StubServer;
  port = 0;
  authenticated: boolean;
  constructor(authenticated: boolean) {
    this.authenticated = authenticated;
  }
  async start(): Promise<void> {
    this.server = await startStubServer({
      port: this.port,
      tokenDelayMs: 1,
      longStreams: true,
      ...(this.authenticated
        ? { apiKeys: { [API_KEY]: TENANT }, rateLimit: { perMinute: 6000, burst: 5 } }
        : {}),
    });
    this.port = this.server.port;
  }
  async restart(): Promise<void> {
    await this.server.close();
    await this.start();
  }
}

/** Runs one sequence; a failure names the sequence's steps, to read beside its replay. */
async function runSequence(
  index: number,
  rng: ReturnType<typeof random>,
  servers: Servers,
  spare: Servers | undefined,
) {
  const steps: string[] = [];
  try {
    await sequence(index, rng, servers, spare, steps);
  } catch (error) {
    (error as Error).message += `\n  steps: ${steps.join(", ")}`;
    throw error;
  }
}

async function sequence(
  index: number,
  rng: ReturnType<typeof random>,
  servers: Servers,
  spare: Servers | undefined,
  steps: string[],
) {
  const changes: StateChange[] = [];
  const calls: Tracked[] = [];
  // Now and then a list of two servers, the faults hitting only the first.
  const both = spare !== undefined && rng.chance(0.3);
  const connections = (both ? 2 : 1) + rng.int(3);
  const client = new RealmWebSocketClient({
    url: both ? [servers.server.url, spare.server.url] : servers.server.url,
    model: "llama-2-7b",
    apiKey: servers.authenticated ? API_KEY : undefined,
    connections,
    reconnectInterval: 1 + rng.int(10),
    maxReconnectInterval: 20,
    maxReconnectAttempts: rng.chance(0.3) ? 2 : Infinity,
    reconnect: !rng.chance(0.15),
    timeout: 200 + rng.int(800),
    streamIdleTimeout: 100 + rng.int(300),
    connectTimeout: 300,
    maxRetries: rng.int(2),
    maxQueuedCalls: 1 + rng.int(20),
    logger: Deno.env.get("REALM_TRACE")
      ? (message, data) => steps.push(`[${message} ${JSON.stringify(data ?? {})}]`)
      : undefined,
  });
  client.on("statechange", (change) => changes.push(change));
  steps.push(`client(${both ? "two servers, " : ""}connections ${connections})`);
  let reentries = 0;
  let removeReentrant = () => {};
  if (rng.chance(0.4)) {
    // A listener that calls back into the client, a few times at most.
    const action = rng.int(3);
    const type = (["statechange", "connected", "disconnected", "error"] as const)[rng.int(4)];
    steps.push(`on ${type}: ${["connect", "disconnect", "reconnect"][action]}`);
    const reenter = () => {
      if (reentries++ >= 3) return;
      if (action === 0) client.connect().catch(() => {});
      else if (action === 1) void client.disconnect();
      else client.reconnect().catch(() => {});
    };
    client.on(type, reenter);
    removeReentrant = () => client.off(type, reenter);
  }

  const track = (what: string, promise: Promise<unknown>, check?: (t: Tracked) => void) => {
    steps.push(what);
    const entry: Tracked = { what, settled: 0, lateTokens: 0 };
    calls.push(entry);
    promise.then(
      (value) => {
        entry.settled++;
        entry.outcome = { value };
      },
      (error) => {
        entry.settled++;
        entry.outcome = { error };
      },
    );
    if (check) entry.check = () => check(entry);
    return entry;
  };
  const prompt = () => ["Tell me", "Why so", "Hello there", "Paris"][rng.int(4)];
  /** The sequence's own timers (aborts, stalls), cleared at its end. */
  const timers: ReturnType<typeof setTimeout>[] = [];

  for (let step = 0; step < STEPS; step++) {
    const roll = rng.int(100);
    if (roll < 12) track("connect", client.connect());
    else if (roll < 16) {
      steps.push("disconnect");
      void client.disconnect();
    } else if (roll < 19) track("reconnect", client.reconnect());
    else if (roll < 30) track("health", client.health());
    else if (roll < 34) track("metadata", client.metadata());
    else if (roll < 42) {
      const p = prompt();
      track("generate", client.generate({ prompt: p }));
    } else if (roll < 52) {
      // A joined stream: every token once, in order, none after the end.
      const p = prompt();
      const n = 1 + rng.int(15);
      const tokens: string[] = [];
      let entry: Tracked | undefined = undefined;
      entry = track(
        "generate stream",
        client.generate({
          prompt: p,
          max_tokens: n,
          stream: true,
          onToken: (token) => {
            if (entry!.settled > 0) entry!.lateTokens++;
            tokens.push(token);
          },
        }),
        (t) => {
          if ("value" in t.outcome!) {
            assert.deepEqual(tokens, expectedTokens(p, n), "a joined stream's tokens");
            assert.equal((t.outcome.value as { text: string }).text, tokens.join(""));
          }
        },
      );
    } else if (roll < 64) {
      // A token stream, read whole or left early with `break`.
      const p = prompt();
      const n = 1 + rng.int(15);
      const stop = rng.chance(0.4) ? 1 + rng.int(n) : Infinity;
      const tokens: string[] = [];
      track(
        "generateStream",
        (async () => {
          for await (const token of client.generateStream({ prompt: p, max_tokens: n })) {
            tokens.push(token);
            if (tokens.length >= stop) break;
          }
          return tokens.length;
        })(),
        (t) => {
          if ("value" in t.outcome!) {
            const want = expectedTokens(p, n).slice(0, Math.min(n, stop));
            assert.deepEqual(tokens, want, "a stream's tokens");
          }
        },
      );
    } else if (roll < 70) {
      const controller = new AbortController();
      track("aborted health", client.health({ signal: controller.signal }));
      timers.push(setTimeout(() => controller.abort(), rng.int(10)));
    } else if (roll < 74) {
      track("short timeout", client.health({ timeout: 1 + rng.int(20) }));
    } else if (roll < 78) {
      const frames = rng.int(4);
      steps.push(`drop after ${frames}`);
      servers.server.faults.dropAfterFrames(frames);
    } else if (roll < 81) {
      const ms = rng.int(40);
      steps.push(`stall ${ms}`);
      servers.server.faults.stall(true);
      timers.push(setTimeout(() => servers.server.faults.stall(false), ms));
    } else if (roll < 82) {
      steps.push("restart");
      servers.server.faults.clear();
      await servers.restart();
    } else {
      const ms = rng.int(25);
      steps.push(`wait ${ms}`);
      await new Promise((resolve) => setTimeout(resolve, ms));
    }
  }

  const label = `sequence ${index} (seed ${seed})`;
  // The end: a listener that connects again would (rightly) undo the final disconnect().
  removeReentrant();
  await within(5000, client.disconnect(), `${label}: disconnect()`);
  for (const timer of timers) clearTimeout(timer);
  servers.server.faults.clear();
  await until(() => calls.every((c) => c.settled > 0), 5000, `${label}: every call settled`);
  for (const call of calls) {
    assert.equal(call.settled, 1, `${label}: ${call.what} settled once`);
    assert.equal(call.lateTokens, 0, `${label}: ${call.what} got tokens after it ended`);
    const outcome = call.outcome!;
    if ("error" in outcome) {
      assert.ok(
        outcome.error instanceof RealmError,
        `${label}: ${call.what} failed with ${outcome.error} instead of a RealmError`,
      );
    }
    call.check?.();
  }
  let state: ConnectionState = "idle";
  for (const { from, to } of changes) {
    assert.equal(from, state, `${label}: a move from ${from} while in ${state}`);
    assert.ok(STATE_EDGES[from].includes(to), `${label}: ${from} → ${to} is not allowed`);
    state = to;
  }
  assert.equal(client.state, "idle", `${label}: idle after disconnect()`);
  // Re-sends and withheld retries are counted since the client was made: history, not held.
  const { servers: perServer, resentCalls, retriesWithheld, ...counts } = client.stats();
  assert.deepEqual(
    { ...counts, resentCalls: 0, retriesWithheld: 0 },
    idleStats(0, counts.listeners),
    `${label}: nothing held (${resentCalls} re-sent, ${retriesWithheld} withheld)`,
  );
  for (const server of perServer ?? []) {
    assert.equal(server.openConnections + server.callsOnTheWire, 0, `${label}: ${server.url} idle`);
  }
  await until(() => servers.server.connectionCount === 0, 3000, `${label}: no socket left`);
  if (both) {
    await until(() => spare.server.connectionCount === 0, 3000, `${label}: none on the spare`);
  }
}

Deno.test({
  name: `random sequences hold every promise (seed ${seed}, ${SEQUENCES} sequences)`,
  ...sanitize,
  fn: async () => {
    const rng = random(seed);
    const open = new Servers(false);
    const spare = new Servers(false);
    const authenticated = new Servers(true);
    await open.start();
    await spare.start();
    await authenticated.start();
    try {
      for (let index = 0; index < SEQUENCES; index++) {
        if (rng.chance(0.3)) await runSequence(index, rng, authenticated, undefined);
        else await runSequence(index, rng, open, spare);
      }
    } finally {
      await open.server.close();
      await spare.server.close();
      await authenticated.server.close();
    }
  },
});
