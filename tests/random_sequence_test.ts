/**
 * Orders of events nobody thought of: hundreds of seeded random sequences
 * against lists of servers that die, refuse, stall and come back, with
 * listeners on every event that call back into the client.
 *
 * A sequence makes one client over a list of one to three servers, from: two
 * open stub servers ("A", "B"), an authenticating stub ("auth", alone or with
 * A: then the list has two tenants), a server that accepts TCP and never
 * answers the upgrade ("silent"), and an address where nothing listens
 * ("dead"). Its options are random too (`connections`, `reconnect`, backoff up
 * to 5 s, `maxReconnectAttempts`, a heartbeat now and then). It adds up to
 * five listeners, on `connecting`, `connected`, `disconnected`,
 * `reconnecting`, `error` or `statechange` into one state, each calling
 * `connect()`, `disconnect()`, `reconnect()`, `disconnect()` then
 * `connect()`, `health()`, `generate()` or a stream a few times, some twice
 * in a row; now and then the `logger` calls back too. Then it takes ten random steps: the same calls from the test
 * (two or three of connect/disconnect/reconnect at once, now and then),
 * streams read whole or left with `break`, aborted and timed-out calls, a
 * stub server dying (`close()`) or restarting on its port, refusing
 * upgrades, stalling, dropping its sockets, refusing the key, healing, or a
 * short wait. It ends with the listeners quiet, every promise settled, and a
 * last `disconnect()`.
 *
 * Invariants, checked after every step of a sequence (the synchronous ones
 * also at every event, where the client must be settled):
 * - The state moves along `STATE_EDGES` only, from the state it was in.
 *   `"open"` has a socket open (`stats().openConnections > 0`);
 *   `"reconnecting"`, `"closed"` and `"idle"` have none; in `"closed"` and
 *   `"idle"` no reconnect wait of the pool (a timer armed by `src/pool.ts`)
 *   is armed. A move to `"reconnecting"` never gives "`reconnect` is off" as
 *   its reason.
 * - Each socket's `connected` and `disconnected` events alternate, and
 *   between steps the sockets they leave open are `stats().openConnections`.
 * - The servers' view (a stub server counts its own WebSocket connections,
 *   `connectionCount`), once the closes under way have reached the servers
 *   (a wait of at most {@linkcode SERVER_WAIT} ms): the servers of the list
 *   hold no more sockets than `connections` in all; each holds at least the
 *   sockets the client counts open on it; in `"closed"` and `"idle"` they
 *   hold none.
 * - Idle: once the state is `"idle"` and every `disconnect()` asked for has
 *   resolved, the client holds nothing (`stats()`), no timer of the client is
 *   armed (created by `src/` but not `src/stub/`, neither fired nor cleared:
 *   see {@linkcode ClientTimers}), and the silent server's TCP connections
 *   close within {@linkcode SERVER_WAIT} ms.
 * - Every promise the client returned, to the test or to a listener, settles
 *   exactly once and within its bound: `connect()`/`reconnect()` within two
 *   handshakes (`connectTimeout`) and {@linkcode CONNECT_MARGIN} (so never
 *   after a backoff), `disconnect()` within {@linkcode DISCONNECT_BOUND}, a
 *   call within its `timeout` and {@linkcode CALL_MARGIN}. A stream's tokens
 *   come in order, none after its end.
 * - What each promise became. `disconnect()` resolves. Any rejection is a
 *   `RealmError` whose code fits: for `connect()`/`reconnect()`,
 *   `CONNECTION_CLOSED` or `TIMEOUT`, `ABORTED` only when a `disconnect()`
 *   was asked for after it and before it settled, `UNAUTHORIZED` only once a
 *   key was refused, `TENANT_MISMATCH` only with two tenants; for a call,
 *   `NOT_CONNECTED`, `CONNECTION_CLOSED`, `TIMEOUT`, `QUEUE_FULL`,
 *   `RATE_LIMIT_EXCEEDED` (auth), `ABORTED` (its own signal), or the reason
 *   the client gave up with.
 * - "Must resolve": a `connect()` that runs while the state is `"open"`
 *   (asked for outside a step: not from the `logger`) resolves, whatever
 *   follows. A `connect()` or `reconnect()` resolves when, from the moment it
 *   was asked for until it settled, (a) no `disconnect()` was asked for, (b)
 *   the client did not give up (no move to `"closed"`), and (c) a stub server
 *   of the list was up all along: listening, not refusing upgrades or the
 *   key, not stalled, not dropping sockets.
 *
 * CI runs fixed seeds, plus random ones whose first is in the test's name. A
 * failing sequence names its seed and its steps, and the run goes on (with
 * fresh servers) to report up to {@linkcode MAX_FAILURES} of them.
 * `REALM_SEED=<seed> deno task test tests/random_sequence_test.ts` replays
 * that sequence alone (the same steps; the network's timing may differ),
 * `REALM_SEQUENCES=<n>` runs n sequences (from that seed, or in each test),
 * `REALM_TRACE=1` adds the client's log lines to the steps.
 */
import assert from "node:assert/strict";
import {
  type ConnectionState,
  RealmError,
  type RealmEventMap,
  RealmWebSocketClient,
  STATE_EDGES,
} from "../mod.ts";
import { startStubServer, type StubServer } from "../testing.ts";
import { deadUrl, sanitize, stablePort, within } from "./_helpers.ts";

/** Seeds of CI's fixed sequences: `FIXED_SEED`, `FIXED_SEED + 1`, … */
const FIXED_SEED = 1;
const FIXED_SEQUENCES = 180;
const RANDOM_SEQUENCES = 120;
const REPLAY = Deno.env.get("REALM_SEED");
const COUNT = Deno.env.get("REALM_SEQUENCES");
const TRACE = Deno.env.get("REALM_TRACE") !== undefined;
const STEPS = 10;
/** A run goes on after a failing sequence, up to this many failures. */
const MAX_FAILURES = 5;
/** The silent server hangs up after this long (ms), as servers do on a request that never ends. */
const SILENT_HANG_UP = 500;
const API_KEY = "sk_random";
const TENANT = "tenant-random";
/** How long a close may take to reach a server (ms). */
const SERVER_WAIT = 1500;
/**
 * `connect()` and `reconnect()` settle within two handshakes' `connectTimeout` (an attempt
 * under way, then the one asked for) and this margin (ms): never after a reconnect backoff,
 * which is up to 5 s here.
 */
const CONNECT_MARGIN = 700;
/** The bound of `disconnect()`: the close grace of a socket (2 s), and a margin. */
const DISCONNECT_BOUND = 2000 + 1500;
/** A call settles within its `timeout` and this. */
const CALL_MARGIN = 1500;

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
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)],
  };
}
type Random = ReturnType<typeof random>;

function prompt(rng: Random): string {
  return rng.pick(["Tell me", "Why so", "Hello there", "Paris"]);
}

/** The stub's stream for a prompt: its words, cycled, each with a trailing space. */
function expectedTokens(prompt: string, count: number): string[] {
  const first = prompt.split(/\s+/).filter(Boolean)[0] ?? "unknown";
  const words = `The capital of France is Paris. This is a simulated response to: ${first}`
    .split(/\s+/);
  return Array.from({ length: count }, (_, i) => `${words[i % words.length]} `);
}

/** Polls `check` every 5 ms until it holds, failing after `ms` with what `describe` says then. */
async function waitFor(check: () => boolean, ms: number, describe: () => string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) assert.fail(describe());
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

// -- the client's timers -------------------------------------------------------------------------

/**
 * Counts the timers the client arms: `setTimeout` is wrapped for the test's
 * duration, and a timer whose caller is a file in `src/` but not in
 * `src/stub/` (the stub servers run in this process too) is remembered with
 * its creation stack until it fires or is cleared.
 */
class ClientTimers {
  readonly #armed = new Map<unknown, string>();
  readonly #set = globalThis.setTimeout;
  readonly #clear = globalThis.clearTimeout;

  install(): void {
    const armed = this.#armed, set = this.#set, clear = this.#clear;
    globalThis.setTimeout =
      ((fire: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
        const stack = new Error().stack ?? "";
        const caller = stack.split("\n")[2] ?? "";
        if (!caller.includes("/src/") || caller.includes("/src/stub/")) {
          return set(fire, ms, ...args);
        }
        const id = set(
          (...a: unknown[]) => {
            armed.delete(id);
            fire(...a);
          },
          ms,
          ...args,
        );
        armed.set(id, stack.split("\n").slice(2, 5).map((line) => line.trim()).join(" < "));
        return id;
      }) as typeof setTimeout;
    globalThis.clearTimeout = ((id?: number) => {
      armed.delete(id);
      clear(id);
    }) as typeof clearTimeout;
  }

  restore(): void {
    globalThis.setTimeout = this.#set;
    globalThis.clearTimeout = this.#clear;
  }

  /** Where each timer still armed was created; `file` keeps those armed by that file only. */
  armed(file?: string): string[] {
    return [...this.#armed.values()].filter((stack) =>
      file === undefined || stack.split(" < ")[0].includes(file)
    );
  }
}

// -- the servers ---------------------------------------------------------------------------------

/** A stub server of the fixture, and the faults it is under. */
class Stub {
  server!: StubServer;
  // Outside the range the OS hands out: nothing else takes it while the server is down.
  port = stablePort();
  dead = false;
  refusing = false;
  stalled = false;
  dropping = false;
  revoked = false;
  /** Times it stopped being up: unchanged since a promise was made, it was up all along. */
  downs = 0;
  constructor(readonly name: string, readonly authenticated: boolean) {}

  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }
  /** Listening, and every socket to it opens and stays. */
  get up(): boolean {
    return !this.dead && !this.refusing && !this.stalled && !this.dropping && !this.revoked;
  }
  get connectionCount(): number {
    return this.dead ? 0 : this.server.connectionCount;
  }

  async start(): Promise<void> {
    this.server = await startStubServer({
      port: this.port,
      tokenDelayMs: 1,
      ...(this.authenticated
        ? { apiKeys: { [API_KEY]: TENANT }, rateLimit: { perMinute: 6000, burst: 5 } }
        : {}),
    });
    this.port = this.server.port;
    this.dead = false;
  }
  #faultsOff(): void {
    this.refusing =
      this.stalled =
      this.dropping =
      this.revoked =
        false;
  }
  #down(): void {
    if (this.up) this.downs++;
  }
  async die(): Promise<void> {
    this.#down();
    this.dead = true;
    this.#faultsOff();
    await this.server.close();
  }
  /** Back on its port, with no fault. */
  async revive(): Promise<void> {
    if (!this.dead) await this.die();
    await this.start();
  }
  /** Refuses the client's key from now on (its open sockets stay), or accepts it again. */
  revoke(on: boolean): void {
    if (this.dead) return;
    if (on) this.#down();
    this.revoked = on;
    if (on) this.server.revokeApiKey(API_KEY);
    else this.server.setApiKey(API_KEY, TENANT);
  }
  refuse(on: boolean): void {
    if (this.dead) return;
    if (on) this.#down();
    this.refusing = on;
    this.server.faults.rejectConnections(on);
  }
  stall(on: boolean): void {
    if (this.dead) return;
    if (on) this.#down();
    this.stalled = on;
    this.server.faults.stall(on);
  }
  drop(frames: number): void {
    if (this.dead) return;
    this.#down();
    this.dropping = true;
    this.server.faults.dropAfterFrames(frames);
  }
  heal(): void {
    if (this.dead) return;
    if (this.revoked) this.server.setApiKey(API_KEY, TENANT);
    this.#faultsOff();
    this.server.faults.clear();
  }
}

/**
 * A server that accepts TCP connections and never answers the upgrade (a
 * handshake to it ends with `connectTimeout`), and hangs up after
 * {@linkcode SILENT_HANG_UP} ms; counts the connections still open.
 */
class Silent {
  readonly #listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #conns = new Set<Deno.Conn>();
  readonly #reads: Promise<void>[] = [];
  readonly #hangUps: ReturnType<typeof setTimeout>[] = [];
  readonly #accepting: Promise<void>;
  readonly url = `ws://127.0.0.1:${(this.#listener.addr as Deno.NetAddr).port}`;

  constructor() {
    this.#accepting = (async () => {
      for await (const conn of this.#listener) {
        this.#conns.add(conn);
        this.#reads.push(this.#drain(conn));
        this.#hangUps.push(setTimeout(() => this.#hangUp(conn), SILENT_HANG_UP));
      }
    })();
  }
  /** TCP connections the client has not closed yet. */
  get open(): number {
    return this.#conns.size;
  }
  #hangUp(conn: Deno.Conn): void {
    if (this.#conns.delete(conn)) conn.close();
  }
  async #drain(conn: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(4096);
    try {
      while ((await conn.read(buffer)) !== null) { /* the upgrade request, never answered */ }
    } catch { /* closed under the read */ }
    if (this.#conns.delete(conn)) conn.close();
  }
  async close(): Promise<void> {
    this.#listener.close();
    for (const timer of this.#hangUps) clearTimeout(timer);
    for (const conn of this.#conns) conn.close();
    this.#conns.clear();
    await this.#accepting;
    await Promise.all(this.#reads);
  }
}

/** Every server a sequence may list. */
interface Fixture {
  open: [Stub, Stub];
  authenticated: Stub;
  silent: Silent;
  dead: string;
}

type Member = { kind: "stub"; stub: Stub } | { kind: "silent" } | { kind: "dead" };

// -- one sequence --------------------------------------------------------------------------------

type Action =
  | "connect"
  | "disconnect"
  | "reconnect"
  | "restart"
  | "health"
  | "generate"
  | "stream";
const ACTIONS: readonly Action[] = [
  "connect",
  "connect",
  "connect",
  "reconnect",
  "reconnect",
  "disconnect",
  "disconnect",
  "restart",
  "health",
  "generate",
  "stream",
];
const TRIGGERS = [
  "connecting",
  "connected",
  "disconnected",
  "reconnecting",
  "error",
  "statechange:idle",
  "statechange:connecting",
  "statechange:open",
  "statechange:reconnecting",
  "statechange:closed",
] as const;

/** A promise the client returned, and what became of it. */
interface Promised {
  what: string;
  kind: "run" | "disconnect" | "call";
  /** Its place among the client's commands, disconnects and give-ups. */
  order: number;
  at: number;
  bound: number;
  settled: number;
  settledOrder?: number;
  outcome?: { value: unknown } | { error: unknown };
  /** For a `connect()`/`reconnect()`: each stub up when it was asked for, with its `downs`. */
  upAtCall?: Map<Stub, number>;
  /** A `connect()` that ran while the state was `"open"`: it resolves, whatever follows. */
  whileOpen?: boolean;
  /** For a call: the codes its rejection may carry. */
  codes?: ReadonlySet<string>;
  /** Tokens after the end, for streams: must stay 0. */
  lateTokens: number;
  check?: () => void;
  judged?: boolean;
}

const CALL_CODES = ["NOT_CONNECTED", "CONNECTION_CLOSED", "TIMEOUT", "QUEUE_FULL"];

class Sequence {
  readonly steps: string[] = [];
  readonly promised: Promised[] = [];
  readonly violations: string[] = [];
  readonly disconnects: number[] = [];
  readonly giveUps: number[] = [];
  /** Sockets whose last event was `connected`. */
  readonly opened = new Set<number>();
  order = 0;
  ending = false;
  client!: RealmWebSocketClient;
  state: ConnectionState = "idle";
  readonly members: Member[];
  readonly stubs: Stub[];
  readonly connections: number;
  readonly usesSilent: boolean;
  /** The authenticating stub is listed: the client sends a key. */
  readonly authenticated: boolean;
  /** Servers of two tenants are listed. */
  readonly tenants: boolean;
  /** A key was refused at some point: `UNAUTHORIZED` fits a rejection. */
  revoked = false;
  readonly timeout: number;
  readonly connectTimeout: number;
  readonly timers: ReturnType<typeof setTimeout>[] = [];
  readonly label: string;
  /** Draws for what listeners and the `logger` do (see `#act`). */
  readonly reactions: Random;

  constructor(
    readonly seed: number,
    readonly rng: Random,
    readonly fixture: Fixture,
    readonly clientTimers: ClientTimers,
  ) {
    this.label = `sequence seed ${seed}`;
    this.reactions = random(seed ^ 0x5bd1e995);
    const { open, authenticated } = fixture;
    const members: Member[] = [];
    const mode = rng.int(100);
    if (mode < 20) {
      members.push({ kind: "stub", stub: authenticated });
      if (rng.chance(0.3)) members.push(rng.chance(0.3) ? { kind: "silent" } : { kind: "dead" });
    } else if (mode < 28) {
      // Two tenants: the open server's sockets carry the client's own, the other assigns one.
      members.push({ kind: "stub", stub: authenticated }, { kind: "stub", stub: open[0] });
    } else {
      members.push({ kind: "stub", stub: open[0] });
      if (rng.chance(0.5)) members.push({ kind: "stub", stub: open[1] });
      if (rng.chance(0.3)) members.push(rng.chance(0.3) ? { kind: "silent" } : { kind: "dead" });
    }
    // Shuffled: a server that cannot be reached may come first.
    for (let i = members.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [members[i], members[j]] = [members[j], members[i]];
    }
    this.members = members;
    // Every server has a socket at least (the client's rule), some two.
    this.connections = members.length + rng.int(3);
    this.stubs = members.flatMap((m) => m.kind === "stub" ? [m.stub] : []);
    this.usesSilent = members.some((m) => m.kind === "silent");
    this.authenticated = this.stubs.some((stub) => stub.authenticated);
    this.tenants = this.authenticated && this.stubs.length > 1;
    this.timeout = 150 + rng.int(350);
    this.connectTimeout = 200 + rng.int(200);
  }

  url(member: Member): string {
    return member.kind === "stub"
      ? member.stub.url
      : member.kind === "silent"
      ? this.fixture.silent.url
      : this.fixture.dead;
  }

  async run(): Promise<void> {
    try {
      await this.#run();
    } catch (error) {
      (error as Error).message += `\n  replay: REALM_SEED=${this.seed}\n  steps: ${
        this.steps.join(", ")
      }`;
      throw error;
    } finally {
      for (const timer of this.timers) clearTimeout(timer);
      // A failed sequence's client must not live on into the next one.
      this.ending = true;
      await within(DISCONNECT_BOUND, this.client?.disconnect() ?? Promise.resolve(), "cleanup")
        .catch(() => {});
    }
  }

  async #run(): Promise<void> {
    const rng = this.rng;
    const urls = this.members.map((m) => this.url(m));
    const maxReconnectInterval = rng.pick([20, 200, 5000]);
    const options = {
      url: urls.length === 1 && rng.chance(0.5) ? urls[0] : urls,
      model: "llama-2-7b",
      apiKey: this.authenticated ? API_KEY : undefined,
      connections: this.connections,
      reconnectInterval: rng.int(20),
      maxReconnectInterval,
      maxReconnectAttempts: rng.chance(0.3) ? 1 + rng.int(2) : Infinity,
      reconnect: !rng.chance(0.15),
      timeout: this.timeout,
      streamIdleTimeout: 100 + rng.int(200),
      connectTimeout: this.connectTimeout,
      maxRetries: rng.int(2),
      maxQueuedCalls: 1 + rng.int(20),
      // Now and then a heartbeat, which a stalled server fails.
      heartbeatInterval: rng.chance(0.2) ? 30 + rng.int(50) : 0,
      heartbeatTimeout: 30 + rng.int(50),
    };
    const names = this.members.map((m) => m.kind === "stub" ? m.stub.name : m.kind);
    this.steps.push(
      `client([${names}], connections ${options.connections}, reconnect ${options.reconnect}, ` +
        `reconnectInterval ${options.reconnectInterval}, heartbeatInterval ` +
        `${options.heartbeatInterval}/${options.heartbeatTimeout}, ` +
        `maxReconnectAttempts ${options.maxReconnectAttempts}, maxReconnectInterval ` +
        `${maxReconnectInterval}, connectTimeout ${options.connectTimeout})`,
    );
    const logged = this.#logger();
    this.client = new RealmWebSocketClient({ ...options, logger: logged });
    this.#watch();
    this.#listeners();

    for (let step = 0; step < STEPS; step++) {
      // Most sequences start with connect(), as most programs do.
      if (step === 0 && rng.chance(0.7)) this.#act("connect", "test");
      else await this.#step();
      await this.#check(`after step ${step + 1} (${this.steps.at(-1)})`);
    }
    await this.#end();
  }

  // -- what the client is asked ----------------------------------------------------------------

  /** The `logger`: the trace, and now and then a call back into the client. */
  #logger(): ((message: string, data?: Record<string, unknown>) => void) | undefined {
    const rng = this.rng;
    const reenters = rng.chance(0.2);
    if (!reenters && !TRACE) return undefined;
    const message = rng.pick([
      "connected",
      "disconnected",
      "reconnecting",
      "reconnect failed",
      "server ejected",
      "heartbeat unanswered",
    ]);
    const action = rng.pick(ACTIONS);
    let budget = 1 + rng.int(2);
    if (reenters) this.steps.push(`logger "${message}": ${action}`);
    return (line, data) => {
      if (TRACE) this.steps.push(`[${line} ${JSON.stringify(data ?? {})}]`);
      if (!reenters || line !== message || this.ending || budget <= 0) return;
      budget--;
      this.#act(action, `logger "${line}"`);
    };
  }

  /** Listeners that call back into the client: a few, on any event, some acting twice. */
  #listeners(): void {
    const rng = this.rng;
    const count = rng.int(6);
    for (let i = 0; i < count; i++) {
      const trigger = rng.pick(TRIGGERS);
      const action = rng.pick(ACTIONS);
      const twice = rng.chance(0.25);
      let budget = 1 + rng.int(3);
      const [type, into] = trigger.split(":") as [keyof RealmEventMap, ConnectionState?];
      this.steps.push(`on ${trigger}: ${action}${twice ? " twice" : ""} (up to ${budget})`);
      this.client.on(type, (payload: unknown) => {
        if (into !== undefined && (payload as { to: string }).to !== into) return;
        if (this.ending || budget <= 0) return;
        budget--;
        this.#act(action, `on ${trigger}`);
        if (twice) this.#act(action, `on ${trigger} again`);
      });
    }
  }

  /**
   * Does `action` and records the promise it returned. What listeners and the
   * `logger` do draws on its own generator, so that the test's own steps stay
   * the same on a replay, however the timing decides which listener runs.
   */
  #act(action: Action, origin: string): void {
    const client = this.client;
    const rng = origin.startsWith("test") ? this.rng : this.reactions;
    const what = `${action} (${origin}, ${this.client.state})`;
    switch (action) {
      case "connect": {
        // Outside a step (not from the logger) it runs at once: while open it resolves.
        const whileOpen = !origin.startsWith("logger") && client.state === "open";
        return this.#runCommand(what, () => client.connect(), whileOpen);
      }
      case "reconnect":
        return this.#runCommand(what, () => client.reconnect(), false);
      case "disconnect":
        return this.#disconnect(what);
      case "restart":
        // disconnect() then connect() at once: a fresh start.
        this.#disconnect(what);
        return this.#runCommand(`connect (${origin}, restart)`, () => client.connect(), false);
      case "health":
        return void this.#call(what, () => client.health());
      case "generate":
        return void this.#call(
          what,
          () => client.generate({ prompt: prompt(rng), max_tokens: 3 }),
        );
      case "stream":
        return this.#joinedStream(what, rng);
    }
  }

  /**
   * Records a promise of the client: its place in the order is taken before
   * `start` runs, since what it starts may fire events whose listeners call
   * back (a `disconnect()` from there comes after it).
   */
  #track(
    what: string,
    kind: Promised["kind"],
    start: () => Promise<unknown>,
    bound: number,
    prepare?: (entry: Promised) => void,
  ) {
    const entry: Promised = {
      what,
      kind,
      order: ++this.order,
      at: performance.now(),
      bound,
      settled: 0,
      lateTokens: 0,
    };
    this.promised.push(entry);
    this.steps.push(what);
    prepare?.(entry);
    const promise = start();
    const settle = (outcome: Promised["outcome"]) => {
      entry.settled++;
      entry.settledOrder = ++this.order;
      entry.outcome = outcome;
    };
    promise.then((value) => settle({ value }), (error) => settle({ error }));
    return entry;
  }

  #runCommand(what: string, start: () => Promise<void>, whileOpen: boolean): void {
    const bound = 2 * this.connectTimeout + CONNECT_MARGIN;
    this.#track(what, "run", start, bound, (entry) => {
      entry.upAtCall = new Map(this.stubs.filter((s) => s.up).map((s) => [s, s.downs]));
      entry.whileOpen = whileOpen;
    });
  }

  #disconnect(what: string): void {
    this.#track(what, "disconnect", () => this.client.disconnect(), DISCONNECT_BOUND, (entry) => {
      this.disconnects.push(entry.order);
    });
  }

  #call(what: string, start: () => Promise<unknown>, codes: string[] = []): Promised {
    const allowed = [...CALL_CODES, ...codes];
    if (this.stubs.some((s) => s.authenticated)) allowed.push("RATE_LIMIT_EXCEEDED");
    return this.#track(what, "call", start, this.timeout + CALL_MARGIN, (entry) => {
      entry.codes = new Set(allowed);
    });
  }

  /** A joined stream: every token once, in order, none after the end. */
  #joinedStream(what: string, rng: Random): void {
    const asked = prompt(rng);
    const n = 1 + rng.int(12);
    const tokens: string[] = [];
    let entry: Promised | undefined = undefined;
    entry = this.#call(`${what} stream of ${n}`, () =>
      this.client.generate({
        prompt: asked,
        max_tokens: n,
        stream: true,
        onToken: (token) => {
          if (entry!.settled > 0) entry!.lateTokens++;
          tokens.push(token);
        },
      }));
    entry.check = () => {
      if (!("value" in entry!.outcome!)) return;
      assert.deepEqual(tokens, expectedTokens(asked, n), "a joined stream's tokens");
      assert.equal((entry!.outcome.value as { text: string }).text, tokens.join(""));
    };
  }

  /** A token stream, read whole or left early with `break`. */
  #tokenStream(): void {
    const asked = prompt(this.rng);
    const n = 1 + this.rng.int(12);
    const stop = this.rng.chance(0.4) ? 1 + this.rng.int(n) : Infinity;
    const tokens: string[] = [];
    const entry = this.#call(
      `generateStream of ${n}${stop < n ? `, break after ${stop}` : ""}`,
      async () => {
        for await (const token of this.client.generateStream({ prompt: asked, max_tokens: n })) {
          tokens.push(token);
          if (tokens.length >= stop) break;
        }
        return tokens.length;
      },
    );
    entry.check = () => {
      if (!("value" in entry.outcome!)) return;
      assert.deepEqual(tokens, expectedTokens(asked, n).slice(0, Math.min(n, stop)));
    };
  }

  /** One step of the test itself. */
  async #step(): Promise<void> {
    const rng = this.rng;
    const stubs = this.stubs;
    const stub = stubs.length > 0 ? rng.pick(stubs) : undefined;
    const roll = rng.int(100);
    if (roll < 10) this.#act("connect", "test");
    else if (roll < 14) this.#act("disconnect", "test");
    else if (roll < 19) this.#act("reconnect", "test");
    else if (roll < 23) {
      // Two or three at once, as two parts of a program may ask.
      const burst = Array.from(
        { length: 2 + rng.int(2) },
        () => rng.pick(["connect", "disconnect", "reconnect"] as const),
      );
      for (const action of burst) this.#act(action, "test, at once");
    } else if (roll < 30) this.#act("health", "test");
    else if (roll < 33) this.#act("generate", "test");
    else if (roll < 38) this.#act("stream", "test");
    else if (roll < 43) this.#tokenStream();
    else if (roll < 46) {
      const controller = new AbortController();
      this.#call(
        "aborted health",
        () => this.client.health({ signal: controller.signal }),
        ["ABORTED"],
      );
      this.timers.push(setTimeout(() => controller.abort(), rng.int(10)));
    } else if (roll < 49) {
      this.#call("short timeout", () => this.client.health({ timeout: 1 + rng.int(20) }));
    } else if (!stub || roll >= 87) {
      const ms = rng.int(30);
      this.steps.push(`wait ${ms}`);
      await new Promise((resolve) => setTimeout(resolve, ms));
    } else if (roll < 55) {
      this.steps.push(`${stub.name} dies`);
      await stub.die();
    } else if (roll < 62) {
      this.steps.push(`${stub.name} ${stub.dead ? "comes back" : "restarts"}`);
      await stub.revive();
    } else if (roll < 67) {
      this.steps.push(`${stub.name} refuses`);
      stub.refuse(true);
    } else if (roll < 70) {
      this.steps.push(`${stub.name} accepts`);
      stub.refuse(false);
    } else if (roll < 75) {
      const ms = rng.int(60);
      this.steps.push(`${stub.name} stalls ${ms} ms`);
      stub.stall(true);
      this.timers.push(setTimeout(() => stub.stall(false), ms));
    } else if (roll < 79) {
      const frames = rng.int(4);
      this.steps.push(`${stub.name} drops after ${frames} frames`);
      stub.drop(frames);
    } else if (roll < 82 && stub.authenticated) {
      this.steps.push(`${stub.name} refuses the key`);
      this.revoked = true;
      stub.revoke(true);
    } else {
      this.steps.push(`${stub.name} heals`);
      stub.heal();
    }
  }

  /** The end: listeners stop calling back, every promise settles, a disconnect() leaves nothing. */
  async #end(): Promise<void> {
    this.ending = true;
    const label = this.label;
    const runs = this.promised.filter((p) => p.kind !== "call");
    await this.#settled(runs, "before the final disconnect()");
    this.#judge();
    this.#act("disconnect", "end");
    await this.#settled(this.promised, "after the final disconnect()");
    this.#judge();
    await this.#check("at the end");
    assert.equal(this.client.state, "idle", `${label}: idle after disconnect()`);
    for (const stub of this.stubs) {
      if (stub.dead) await stub.revive();
      else stub.heal();
    }
    for (const p of this.promised) {
      assert.equal(p.settled, 1, `${label}: ${p.what} settled ${p.settled} times`);
    }
  }

  /** Waits for `promised` to settle, each within its bound. */
  async #settled(promised: Promised[], when: string): Promise<void> {
    for (const p of promised) {
      if (p.settled > 0) continue;
      const left = p.at + p.bound - performance.now();
      await waitFor(
        () => p.settled > 0,
        Math.max(left, 0),
        () => `${this.label}: ${p.what} still pending after ${p.bound} ms (${when})`,
      );
    }
  }

  // -- invariants ------------------------------------------------------------------------------

  /** Records the state moves, and checks the synchronous invariants at every event. */
  #watch(): void {
    const client = this.client;
    client.on("statechange", ({ from, to, reason }) => {
      if (from !== this.state) this.violations.push(`a move from ${from} while in ${this.state}`);
      if (!STATE_EDGES[from].includes(to)) this.violations.push(`${from} → ${to} is no edge`);
      this.state = to;
      if (to === "closed") this.giveUps.push(++this.order);
      if (to === "reconnecting" && reason?.message.includes("`reconnect` is off")) {
        this.violations.push(`a move to "reconnecting" because "${reason.message}"`);
      }
    });
    // Each socket's events alternate: `connected`, then `disconnected`, then `connected`, …
    client.on("connected", ({ socket }) => {
      if (this.opened.has(socket)) this.violations.push(`socket ${socket} connected twice`);
      this.opened.add(socket);
    });
    client.on("disconnected", ({ socket }) => {
      if (!this.opened.delete(socket)) {
        this.violations.push(`socket ${socket} disconnected, but it had not connected`);
      }
    });
    for (const type of ["connecting", "connected", "disconnected", "reconnecting", "error"]) {
      client.on(type as keyof RealmEventMap, () => this.#sync(`at a ${type} event`));
    }
    client.on("statechange", ({ to }) => this.#sync(`at a statechange to ${to}`));
  }

  /** The invariants that hold whenever no step of the client runs. */
  #sync(when: string): void {
    const state = this.client.state;
    const open = this.client.stats().openConnections;
    if (state === "open" && open === 0) this.violations.push(`${when}: "open" with no socket open`);
    if (state !== "open" && state !== "connecting" && open > 0) {
      this.violations.push(`${when}: "${state}" with ${open} sockets open`);
    }
    if (state === "idle" || state === "closed") {
      const waits = this.clientTimers.armed("/src/pool.ts");
      if (waits.length > 0) {
        this.violations.push(`${when}: "${state}" with a reconnect wait armed: ${waits[0]}`);
      }
    }
  }

  /** Every invariant, after a step of the test. */
  async #check(when: string): Promise<void> {
    const label = `${this.label}, ${when}`;
    this.#sync(when);
    assert.deepEqual(this.violations, [], label);
    const now = performance.now();
    for (const p of this.promised) {
      if (p.settled === 0 && now - p.at > p.bound) {
        assert.fail(`${label}: ${p.what} still pending after ${Math.round(now - p.at)} ms`);
      }
    }
    this.#judge();
    // Between steps every event has gone out: they tell of the sockets open now.
    assert.equal(
      this.opened.size,
      this.client.stats().openConnections,
      `${label}: sockets open by the events (${[...this.opened]}) and by stats()`,
    );
    // The servers' view, once closes under way have reached them.
    const onServers = () => this.stubs.reduce((sum, stub) => sum + stub.connectionCount, 0);
    await waitFor(
      () => onServers() <= this.connections,
      SERVER_WAIT,
      () => `${label}: ${onServers()} sockets on the servers, more than ${this.connections}`,
    );
    await waitFor(
      () => this.#clientCounts().every(([stub, open]) => open <= stub.connectionCount),
      SERVER_WAIT,
      () =>
        `${label}: the client counts sockets open that the servers do not have ([server, ` +
        `client's count, server's count]: ${
          JSON.stringify(this.#clientCounts().map(([s, open]) => [s.name, open, s.connectionCount]))
        })`,
    );
    const state = this.client.state;
    if (state === "idle" || state === "closed") {
      // Stopped or given up: every socket closed, none opens again.
      await waitFor(
        () => onServers() === 0,
        SERVER_WAIT,
        () => `${label}: "${state}", yet ${onServers()} sockets on the servers`,
      );
    }
    if (state === "idle" && this.#disconnected()) {
      // Re-sends and withheld retries count since the client was made: history, not held.
      const { servers: _, resentCalls: __, retriesWithheld: ___, ...counts } = this.client.stats();
      assert.deepEqual(
        { ...counts, listeners: 0 },
        { pendingCalls: 0, queuedCalls: 0, openConnections: 0, callsOnTheWire: 0, listeners: 0 },
        `${label}: idle holds nothing`,
      );
      // A settled call's deadline timer is released a few microtasks later: one turn of the loop.
      await new Promise((resolve) => setTimeout(resolve, 0));
      assert.deepEqual(this.clientTimers.armed(), [], `${label}: idle with client timers armed`);
      if (this.usesSilent) {
        await waitFor(
          () => this.fixture.silent.open === 0,
          SERVER_WAIT,
          () => `${label}: idle, yet ${this.fixture.silent.open} connections on the silent server`,
        );
      }
    }
  }

  /** Every `disconnect()` asked for has resolved. */
  #disconnected(): boolean {
    return this.promised.every((p) => p.kind !== "disconnect" || p.settled > 0);
  }

  /** For each listed stub, the sockets the client counts open on it. */
  #clientCounts(): [Stub, number][] {
    const stats = this.client.stats();
    if (!stats.servers) return this.stubs.map((stub) => [stub, stats.openConnections]);
    return this.members.flatMap((m, i) =>
      m.kind === "stub" ? [[m.stub, stats.servers![i].openConnections] as [Stub, number]] : []
    );
  }

  /** Checks what each settled promise became (once each). */
  #judge(): void {
    for (const p of this.promised) {
      if (p.settled === 0 || p.judged) continue;
      p.judged = true;
      const label = `${this.label}: ${p.what}`;
      assert.equal(p.lateTokens, 0, `${label} got tokens after it ended`);
      const outcome = p.outcome!;
      if ("value" in outcome) {
        p.check?.();
        continue;
      }
      const error = outcome.error;
      assert.ok(error instanceof RealmError, `${label} failed with ${error}, not a RealmError`);
      const after = (orders: number[]) =>
        orders.some((order) => order > p.order && order < p.settledOrder!);
      if (p.kind === "disconnect") assert.fail(`${label} rejected: ${error.code} ${error.message}`);
      if (p.kind === "call") {
        // A call waiting when the client gives up fails with the reason.
        const fits = p.codes!.has(error.code) ||
          (error.code === "UNAUTHORIZED" && this.revoked) ||
          (error.code === "TENANT_MISMATCH" && this.tenants);
        assert.ok(fits, `${label} failed with ${error.code}: ${error.message}`);
        continue;
      }
      if (p.whileOpen) {
        assert.fail(`${label} rejected (${error.code}: ${error.message}) while open`);
      }
      const disconnected = after(this.disconnects);
      if (error.code === "ABORTED") {
        assert.ok(disconnected, `${label} rejected with ABORTED, yet no disconnect() followed`);
        continue;
      }
      const fits = error.code === "CONNECTION_CLOSED" || error.code === "TIMEOUT" ||
        (error.code === "UNAUTHORIZED" && this.revoked) ||
        (error.code === "TENANT_MISMATCH" && this.tenants);
      assert.ok(fits, `${label} rejected with ${error.code}: ${error.message}`);
      const upAllAlong = [...p.upAtCall!].filter(([stub, downs]) =>
        stub.up && stub.downs === downs
      );
      if (!disconnected && !after(this.giveUps) && upAllAlong.length > 0) {
        assert.fail(
          `${label} rejected (${error.code}: ${error.message}) though ${
            upAllAlong.map(([s]) => s.name)
          } was up all along and nothing cancelled it`,
        );
      }
    }
  }
}

// -- the runs ------------------------------------------------------------------------------------

/** The servers of a run of sequences. */
async function startFixture(): Promise<Fixture> {
  const fixture: Fixture = {
    open: [new Stub("A", false), new Stub("B", false)],
    authenticated: new Stub("auth", true),
    silent: new Silent(),
    dead: deadUrl(),
  };
  for (const stub of [...fixture.open, fixture.authenticated]) await stub.start();
  return fixture;
}

async function stopFixture(fixture: Fixture): Promise<void> {
  for (const stub of [...fixture.open, fixture.authenticated]) {
    if (!stub.dead) await within(5000, stub.server.close(), `closing ${stub.name}`);
  }
  await fixture.silent.close();
}

/**
 * Runs `count` sequences, seeded `first`, `first + 1`, … A failing sequence
 * does not stop the run: the servers are replaced (so that what it left
 * behind cannot fail the next one) and the run goes on, up to
 * {@linkcode MAX_FAILURES} failures, all reported at the end.
 */
async function runSequences(first: number, count: number): Promise<void> {
  const timers = new ClientTimers();
  timers.install();
  const failures: string[] = [];
  let fixture = await startFixture();
  try {
    for (let i = 0; i < count && failures.length < MAX_FAILURES; i++) {
      const seed = (first + i) >>> 0;
      try {
        await new Sequence(seed, random(seed), fixture, timers).run();
      } catch (error) {
        failures.push((error as Error).message);
        await stopFixture(fixture);
        fixture = await startFixture();
      }
    }
  } finally {
    await stopFixture(fixture);
    timers.restore();
  }
  if (failures.length > 0) {
    assert.fail(`${failures.length} sequence(s) failed:\n\n${failures.join("\n\n")}`);
  }
}

if (REPLAY !== undefined) {
  const seed = Number(REPLAY);
  const count = Number(COUNT ?? 1);
  Deno.test({
    name: `random sequences from seed ${seed} (${count})`,
    ...sanitize,
    fn: () => runSequences(seed, count),
  });
} else {
  const fixed = Number(COUNT ?? FIXED_SEQUENCES);
  Deno.test({
    name: `random sequences hold every invariant (fixed seeds ${FIXED_SEED}..${
      FIXED_SEED + fixed - 1
    })`,
    ...sanitize,
    fn: () => runSequences(FIXED_SEED, fixed),
  });
  const seed = Math.floor(Math.random() * 2 ** 31);
  const count = Number(COUNT ?? RANDOM_SEQUENCES);
  Deno.test({
    name: `random sequences hold every invariant (random seeds ${seed}..${seed + count - 1})`,
    ...sanitize,
    fn: () => runSequences(seed, count),
  });
}
