/**
 * Small helpers shared by the tests (no std: JSR is out of reach).
 * @module
 */
import assert from "node:assert/strict";
import {
  type ClientStats,
  type ConnectionState,
  type RealmClientOptions,
  RealmError,
  type RealmEventMap,
  RealmWebSocketClient,
  STATE_EDGES,
  type StateChange,
} from "../mod.ts";
import { startStubServer, type StubServer, type StubServerOptions } from "../testing.ts";

/**
 * Client options for a suite: a dropped socket is back within tens of milliseconds, and a call or
 * a handshake that never ends fails in seconds instead of at the defaults.
 */
export const FAST: Partial<RealmClientOptions> = {
  reconnectInterval: 10,
  maxReconnectInterval: 50,
  timeout: 5000,
  connectTimeout: 2000,
};

/** A loopback port that was free a moment ago, for a server to take or a dial to be refused on. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/**
 * A loopback port free now and outside the range the OS hands out to `port: 0` and to client
 * sockets (32768–60999 on Linux): with test files running in parallel, no other socket is given
 * it meanwhile, so a server that stops and starts again on it finds it free, and an address
 * where nothing listens stays dead.
 */
export function stablePort(): number {
  for (let tries = 0; tries < 1000; tries++) {
    // Not Math.random: tests pin it (withRandom), and a pinned port would be taken at once.
    const port = 20_000 + crypto.getRandomValues(new Uint16Array(1))[0] % 12_000;
    // Never the same port twice: a server that is down leaves its port free, but not for others.
    if (handedOut.has(port)) continue;
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      handedOut.add(port);
      return port;
    } catch {
      // Taken (by another test's server): try another.
    }
  }
  throw new Error("no free port between 20000 and 32000");
}

const handedOut = new Set<number>();

/** A loopback WebSocket address where nothing listens: a socket to it is refused at once. */
export function deadUrl(): string {
  return `ws://127.0.0.1:${stablePort()}`;
}

/** Drops every open connection of the stub now; connections made afterwards are not affected. */
export function dropNow(server: StubServer): void {
  server.faults.dropAfterFrames(0);
  server.faults.clear();
}

/**
 * Runs `fn` with `Math.random()` returning `value`, so that backoff delays are exact (0.5 makes a
 * reconnect delay its exponential step: `reconnectInterval` for the first attempt).
 */
export async function withRandom<T>(value: number, fn: () => Promise<T>): Promise<T> {
  const random = Math.random;
  Math.random = () => value;
  try {
    return await fn();
  } finally {
    Math.random = random;
  }
}

/**
 * Awaits a promise that must reject with a RealmError, and returns the error. The wait is
 * bounded (10 s by default): a rejection that depends on a timer or a close event the client
 * never handles fails the test instead of hanging the suite.
 */
export async function rejection(
  promise: Promise<unknown>,
  ms = 10_000,
  what = "the expected rejection",
): Promise<RealmError> {
  try {
    await within(ms, promise, what);
  } catch (error) {
    assert.ok(error instanceof RealmError, `expected a RealmError, got ${error}`);
    return error;
  }
  assert.fail("expected the promise to reject");
}

/** Waits `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` every 5 ms until it is true, failing after `ms`. */
export async function until(check: () => boolean, ms = 3000, what = "condition"): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await delay(5);
  }
}

/** Leak sanitizers on: a leaked timer, op or socket fails the test. */
export const sanitize = { sanitizeOps: true, sanitizeResources: true } as const;

/** The stats of a client that holds nothing but `openConnections` sockets and `listeners`. */
export function idleStats(openConnections = 0, listeners = 0): ClientStats {
  return {
    pendingCalls: 0,
    queuedCalls: 0,
    openConnections,
    callsOnTheWire: 0,
    listeners,
    resentCalls: 0,
    retriesWithheld: 0,
  };
}

/**
 * Awaits `promise`, failing after `ms` with a message naming `what`. Every wait on one of the
 * client's own timers (call timeout, stream idle timeout, retry wait, reconnect, heartbeat) goes
 * through this, so a timer that is never armed fails the test in seconds instead of hanging it.
 */
export async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: still pending after ${ms} ms (a timer never fired?)`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** A raw WebSocket server on 127.0.0.1 that answers as the test scripts it. */
export interface ScriptedServer {
  url: string;
  /** Every text frame clients sent, parsed, in order. */
  received: Record<string, unknown>[];
  /** Closes the client sockets and stops listening. */
  close(): Promise<void>;
}

/** What a scripted server does: greet a new socket, answer each frame it receives. */
export interface Script {
  /** The socket is open; send the first frame(s). Default: the open server's welcome frame. */
  open?(socket: WebSocket): void;
  /** A text frame arrived (parsed JSON). */
  frame(socket: WebSocket, frame: Record<string, unknown>): void;
  /**
   * How many sockets it accepts in all; later upgrade requests get 503 (the server is reached,
   * yet a socket to it fails). Default: no limit.
   */
  upgrades?: number;
}

/** The welcome frame of an open server, exactly as the real server sends it. */
export const WELCOME = JSON.stringify({ status: "connected", version: "0.1.0", tenant_id: null });

/**
 * Starts a scripted server: every frame it sends is written by the test, so a test can pin the
 * client against exact server answers, or against frame sequences the stub never sends.
 */
export function scriptedServer(script: Script): ScriptedServer {
  const controller = new AbortController();
  const sockets = new Set<WebSocket>();
  const received: Record<string, unknown>[] = [];
  let accepted = 0;
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: controller.signal,
    onListen: () => {},
  }, (request) => {
    if (accepted === script.upgrades) return new Response("busy", { status: 503 });
    accepted++;
    const { socket, response } = Deno.upgradeWebSocket(request);
    sockets.add(socket);
    socket.onopen = () => script.open ? script.open(socket) : socket.send(WELCOME);
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      received.push(frame);
      script.frame(socket, frame);
    };
    socket.onclose = () => sockets.delete(socket);
    return response;
  });
  return {
    url: `ws://127.0.0.1:${server.addr.port}`,
    received,
    async close() {
      const closed = [...sockets].map((socket) =>
        new Promise((resolve) => {
          socket.addEventListener("close", resolve);
          if (socket.readyState === WebSocket.CLOSED) resolve(undefined);
          else socket.close();
        })
      );
      await within(3000, Promise.all(closed), "scripted server's sockets closing");
      controller.abort();
      await server.finished;
    },
  };
}

/** A loopback server that accepts TCP connections and never answers the WebSocket upgrade. */
export interface SilentServer {
  url: string;
  /** How many connections it accepted. */
  accepted(): number;
  /** Stops listening and closes what it accepted. */
  close(): Promise<void>;
}

/** Starts a {@linkcode SilentServer}: a handshake with it ends only by `connectTimeout`. */
export function silentServer(): SilentServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) conns.push(conn);
  })();
  return {
    url: `ws://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    accepted: () => conns.length,
    async close() {
      listener.close();
      for (const conn of conns) conn.close();
      await accepting;
    },
  };
}

/**
 * A WebSocket class whose first `health` send throws, as a socket closing under it would, and
 * the count of `health` sends over all its sockets.
 */
export function muteOnFirstHealth(): { WebSocket: typeof WebSocket; sends(): number } {
  let sends = 0;
  class Mute extends WebSocket {
    override send(data: string) {
      if (JSON.parse(data).function === "health" && ++sends === 1) throw new Error("mute");
      super.send(data);
    }
  }
  return { WebSocket: Mute, sends: () => sends };
}

/** Sends a frame from a scripted server: an object as JSON, a string as it is. */
export function sendFrame(socket: WebSocket, frame: unknown): void {
  socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
}

/** The prompt the stub server answers with "Paris" (its simulated sentence on a stream). */
export const FRANCE = "What is the capital of France?";

/** The call frames the stub server received, parsed (handshake frames left out). */
export function sentCalls(server: StubServer): Record<string, unknown>[] {
  return server.receivedFrames().map((f) => JSON.parse(f)).filter((f) => "function" in f);
}

/** Answers a call frame with `complete` and `data`. */
export function complete(socket: WebSocket, id: unknown, data: unknown): void {
  socket.send(JSON.stringify({ id, status: "complete", data }));
}

/**
 * Makes one call with a bare WebSocket (no client) and returns the `data` of its `complete`
 * frame: the server's exact answer, to compare the client's result with.
 */
export async function rawCall(
  url: string,
  fn: string,
  params: Record<string, unknown>,
): Promise<unknown> {
  const socket = new WebSocket(url);
  try {
    return await within(
      5000,
      new Promise((resolve, reject) => {
        socket.onmessage = (event) => {
          const frame = JSON.parse(event.data);
          if (frame.status === "connected") {
            socket.send(JSON.stringify({ id: "raw-1", function: fn, params }));
          } else if (frame.id === "raw-1" && frame.status === "complete") resolve(frame.data);
          else if (frame.id === "raw-1" && frame.status !== "streaming") reject(frame);
        };
        socket.onerror = () => reject(new Error(`raw call ${fn} failed`));
      }),
      `raw ${fn} call`,
    );
  } finally {
    const closed = new Promise((resolve) => socket.addEventListener("close", resolve));
    socket.close();
    await within(3000, closed, "raw socket closing");
  }
}

/** The console methods a library could print with. */
const PRINTERS = ["log", "info", "warn", "error", "debug", "trace", "dir", "table"] as const;

/**
 * Runs `fn` with every console printing method replaced, and returns what was printed: a test
 * that says "nothing printed" asserts this is empty.
 */
export async function printedDuring(fn: () => unknown): Promise<unknown[][]> {
  const printed: unknown[][] = [];
  const originals = PRINTERS.map((name) => [name, console[name]] as const);
  for (const name of PRINTERS) {
    console[name] = (...args: unknown[]) => printed.push([name, ...args]);
  }
  try {
    await fn();
  } finally {
    for (const [name, original] of originals) {
      (console as unknown as Record<string, unknown>)[name] = original;
    }
  }
  return printed;
}

/**
 * The tokens the stub server streams for `prompt` with `max_tokens: n`, as testing.ts documents
 * them: the simulated sentence's words in turn, each with a trailing space.
 */
export function simulatedTokens(prompt: string, n: number): string[] {
  const first = prompt.split(/\s+/).find((word) => word !== "") ?? "unknown";
  const words = `The capital of France is Paris. This is a simulated response to: ${first}`
    .split(" ");
  return Array.from({ length: n }, (_, i) => `${words[i % words.length]} `);
}

/**
 * The server's part of a result, once what the client adds to it is checked: the call's
 * `requestId` (equal to `requestId` when given) and, on a generation, its timings.
 */
export function serverAnswer(result: unknown, requestId?: string): Record<string, unknown> {
  const { requestId: id, durationMs, timeToFirstTokenMs, ...answer } = result as Record<
    string,
    unknown
  >;
  assert.equal(typeof id, "string", "the result carries its requestId");
  if (requestId !== undefined) assert.equal(id, requestId);
  if (durationMs !== undefined) {
    assert.ok(typeof durationMs === "number" && durationMs >= 0, `durationMs ${durationMs}`);
  }
  if (timeToFirstTokenMs !== undefined) {
    assert.ok(
      typeof timeToFirstTokenMs === "number" && timeToFirstTokenMs >= 0 &&
        timeToFirstTokenMs <= (durationMs as number),
      `timeToFirstTokenMs ${timeToFirstTokenMs} of ${durationMs}`,
    );
  }
  return answer;
}

/** A stub server and a client of it; `await using` tears both down, whatever the test did. */
export async function stubAndClient(
  serverOptions: StubServerOptions = {},
  clientOptions: Partial<RealmClientOptions> = {},
): Promise<{ server: StubServer; client: RealmWebSocketClient } & AsyncDisposable> {
  // The stub's test extras on: streams of any length, and the built-in rag-pipeline.
  const server = await startStubServer({
    tokenDelayMs: 1,
    longStreams: true,
    orchestrator: true,
    ...serverOptions,
  });
  const client = new RealmWebSocketClient({
    url: server.url,
    model: "llama-2-7b",
    timeout: 5000,
    ...clientOptions,
  });
  return {
    server,
    client,
    async [Symbol.asyncDispose]() {
      await client.disconnect();
      await server.close();
    },
  };
}

/** Runs `body` with a stub server that streams without delay, and closes it. */
export async function withStub(body: (server: StubServer) => Promise<void>): Promise<void> {
  const server = await startStubServer({ tokenDelayMs: 0 });
  try {
    await body(server);
  } finally {
    await server.close();
  }
}

/** Runs `fn` with a scripted server and a client connected to it, and tears both down. */
export async function withScripted(
  script: Script,
  clientOptions: Partial<RealmClientOptions>,
  fn: (client: RealmWebSocketClient, received: Record<string, unknown>[]) => Promise<void>,
): Promise<void> {
  const server = scriptedServer(script);
  const client = new RealmWebSocketClient({
    url: server.url,
    model: "llama-2-7b",
    timeout: 5000,
    ...clientOptions,
  });
  try {
    await within(5000, client.connect(), "connect()");
    await fn(client, server.received);
  } finally {
    await client.disconnect();
    await server.close();
  }
}

/** The call frames among the frames a scripted server received (an auth frame left out). */
export function callFrames(received: Record<string, unknown>[]): Record<string, unknown>[] {
  return received.filter((frame) => "function" in frame);
}

/**
 * A stub server and a client of it with the {@linkcode FAST} options, whose state changes are
 * recorded: `changes` in order, and `path()` the states entered. `await using` tears both down.
 */
export async function stubAndClientWithStates(
  serverOptions: StubServerOptions = {},
  clientOptions: Partial<RealmClientOptions> = {},
) {
  const fixture = await stubAndClient(serverOptions, { ...FAST, ...clientOptions });
  const changes: StateChange[] = [];
  fixture.client.on("statechange", (change) => changes.push(change));
  /** The states entered, in order. */
  const path = () => changes.map((c) => c.to);
  return Object.assign(fixture, { changes, path });
}

/** Asserts that `changes`, from a new client on, move only along `STATE_EDGES`. */
export function assertEdgesAllowed(changes: StateChange[]): void {
  let state: ConnectionState = "idle";
  for (const { from, to } of changes) {
    assert.equal(from, state, `a move from ${from} while the state was ${state}`);
    assert.ok(STATE_EDGES[from].includes(to), `${from} → ${to} is not an allowed edge`);
    state = to;
  }
}

/** Runs `fn` with a stub server and a client of it, and tears both down. */
export async function withClient(
  serverOptions: StubServerOptions,
  clientOptions: Partial<RealmClientOptions>,
  fn: (client: RealmWebSocketClient, server: StubServer) => Promise<void>,
): Promise<void> {
  await using fixture = await stubAndClient(serverOptions, clientOptions);
  await fn(fixture.client, fixture.server);
}

/** Settles `promise` within `ms` and returns how: `{ value }` or `{ error }`. */
export async function outcome<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<{ value: T } | { error: unknown }> {
  return await within(ms, promise.then((value) => ({ value }), (error) => ({ error })), what);
}

/** Asserts that `result` is a failure with a RealmError of `code`, and returns the error. */
export function failedWith(
  result: { value: unknown } | { error: unknown },
  code: string,
): RealmError {
  assert.ok("error" in result, `expected a failure with ${code}, got a value`);
  const error = result.error as RealmError;
  assert.equal(error?.code, code, `expected ${code}, got ${error?.code}: ${error?.message}`);
  return error;
}

/** A clock that moves only when the test says: see {@linkcode withFakeClock}. */
export interface FakeClock {
  /** `performance.now()` as the code under test sees it. */
  readonly now: number;
  /** The delay of every timer armed so far, in order. */
  readonly delays: number[];
  /** Timers armed and not yet fired nor cleared. */
  readonly timers: number;
  /**
   * Runs the earliest timer, moving the clock to its due time, or `early` ms before it (timers
   * may wake up to 1 ms early); false when no timer is armed.
   */
  next(early?: number): boolean;
  /** Moves the clock `ms` ahead, running the timers due on the way. */
  advance(ms: number): void;
}

/**
 * Runs `body` with `performance.now()`, `setTimeout` and `clearTimeout` replaced by a fake clock
 * that starts at 1000 ms, so timer-driven code is stepped exactly instead of waited on. The real
 * ones come back afterwards, once 64 microtasks have run (work queued on microtasks may still
 * clear a fake timer).
 */
export async function withFakeClock(
  body: (clock: FakeClock) => void | Promise<void>,
): Promise<void> {
  const { setTimeout: realSet, clearTimeout: realClear } = globalThis;
  let now = 1000;
  let nextId = 1;
  const pending = new Map<number, { at: number; fire: () => void }>();
  const delays: number[] = [];
  const earliest = (): [number, { at: number; fire: () => void }] | undefined => {
    let found: [number, { at: number; fire: () => void }] | undefined;
    for (const entry of pending) if (!found || entry[1].at < found[1].at) found = entry;
    return found;
  };
  const clock: FakeClock = {
    get now() {
      return now;
    },
    delays,
    get timers() {
      return pending.size;
    },
    next(early = 0) {
      const found = earliest();
      if (!found) return false;
      pending.delete(found[0]);
      now = Math.max(now, found[1].at - early);
      found[1].fire();
      return true;
    },
    advance(ms) {
      const target = now + ms;
      for (let found = earliest(); found && found[1].at <= target; found = earliest()) {
        pending.delete(found[0]);
        now = Math.max(now, found[1].at);
        found[1].fire();
      }
      now = target;
    },
  };
  globalThis.setTimeout = ((fire: () => void, ms = 0) => {
    delays.push(ms);
    pending.set(nextId, { at: now + Math.max(0, ms), fire });
    return nextId++;
  }) as unknown as typeof realSet;
  globalThis.clearTimeout = ((id?: number) => {
    if (id !== undefined) pending.delete(id);
  }) as typeof realClear;
  Object.defineProperty(performance, "now", { value: () => now, configurable: true });
  try {
    await body(clock);
  } finally {
    for (let i = 0; i < 64; i++) await null;
    globalThis.setTimeout = realSet;
    globalThis.clearTimeout = realClear;
    delete (performance as { now?: unknown }).now;
  }
}

/** Every event's payloads, by type. */
export type SeenEvents = { [K in keyof RealmEventMap]: RealmEventMap[K][] };

/** Records the payload of every event the client fires, by type. */
export function recordEvents(client: RealmWebSocketClient): SeenEvents {
  const seen: SeenEvents = {
    connecting: [],
    connected: [],
    disconnected: [],
    reconnecting: [],
    error: [],
    statechange: [],
  };
  for (const type of Object.keys(seen) as (keyof RealmEventMap)[]) {
    client.on(type, (payload) => (seen[type] as unknown[]).push(payload));
  }
  return seen;
}

/**
 * The server side of a WebSocket that a test plays by hand: the handlers a client sets, and what
 * the server can do to it. Tests extend it with their own `send`/`close` and quirks.
 */
export class ScriptedSocketBase {
  readyState = 0;
  onopen: ((event: Event) => void) | null = null;
  onmessage: ((event: MessageEvent) => void) | null = null;
  onerror: ((event: Event) => void) | null = null;
  onclose: ((event: CloseEvent) => void) | null = null;
  /** The server accepts the socket. */
  open() {
    this.readyState = 1;
    this.onopen?.(new Event("open"));
  }
  /** The server sends a frame (an object is sent as JSON). */
  receive(frame: unknown) {
    const data = typeof frame === "string" ? frame : JSON.stringify(frame);
    this.onmessage?.(new MessageEvent("message", { data }));
  }
  /** The socket closes from the server's side (or the close handshake ends). */
  serverClose(code: number, reason: string) {
    this.readyState = 3;
    this.onclose?.(new CloseEvent("close", { code, reason }));
  }
}

/**
 * A `WebSocket` option whose new sockets go to `redirect` instead of the client's address while
 * it is set (`dead`, say: a server that went away and comes back when it is unset), and that
 * counts the sockets made.
 */
export interface RedirectableWebSocket {
  WebSocket: typeof WebSocket;
  /** Where new sockets go instead of the address the client asks for; unset: where it asks. */
  redirect: string | undefined;
  /** A loopback address where nothing listens. */
  readonly dead: string;
  /** Sockets made so far, whatever their address. */
  readonly made: number;
}

/** Makes a {@linkcode RedirectableWebSocket}. */
export function redirectableWebSocket(): RedirectableWebSocket {
  let made = 0;
  const control = {
    redirect: undefined as string | undefined,
    dead: deadUrl(),
    get made() {
      return made;
    },
  };
  class Redirected extends WebSocket {
    constructor(...[url, protocols]: ConstructorParameters<typeof WebSocket>) {
      made++;
      super(control.redirect ?? url, protocols);
    }
  }
  return Object.assign(control, { WebSocket: Redirected });
}

/** A client method a listener may call back. */
export type RunMethod = "connect" | "disconnect" | "reconnect";

/** What a call made from a listener became, and the client as it was when it settled. */
export interface CalledBack {
  error?: unknown;
  state: ConnectionState;
  openConnections: number;
}

/** An event a listener hears, and how a test makes the client fire it. */
export interface ListenerMoment {
  /** The event in words, for the test's name. */
  name: string;
  type: keyof RealmEventMap;
  /** Only payloads that match count (default: all). */
  matches?(payload: unknown): boolean;
  /** Which of the matching events the listener acts on, from 1, with `connections` sockets. */
  nth?(connections: number): number;
  /** The fewest sockets the moment needs (default 1). */
  sockets?: number;
  /** Readies the client before the listener is added. */
  ready?(run: ListenerRun): Promise<void>;
  /** Makes the event happen; returns the promise of the test's own call, if it made one. */
  produce(run: ListenerRun): Promise<void> | void;
  /** The server is unreachable when the event fires: the listener brings it back, then calls. */
  serverDown?: boolean;
}

/** A client of a stub server whose listener of one moment called one of its methods back. */
export interface ListenerRun extends AsyncDisposable {
  server: StubServer;
  client: RealmWebSocketClient;
  sockets: RedirectableWebSocket;
  connections: number;
  seen: SeenEvents;
  /** The client's state and open sockets at every event, as its listeners saw it. */
  heard: { type: string; state: ConnectionState; openConnections: number }[];
  /** What the listener's call became. */
  called: Promise<CalledBack>;
  /** What the test's own call that made the event became, when it made one. */
  produced: Promise<{ value: unknown } | { error: unknown }> | undefined;
  /** Leave the client as the listener left it when disposed (no disconnect()): the sanitizers judge. */
  leaveAsIs: boolean;
}

const connectFirst = async (run: ListenerRun) => {
  await within(5000, run.client.connect(), "connect() before the listener is added");
};
const dropSockets = (run: ListenerRun) => dropNow(run.server);
/** The server goes away for the client's sockets (each retry is refused) and drops them. */
const goAway = (run: ListenerRun) => {
  run.sockets.redirect = run.sockets.dead;
  dropNow(run.server);
};
const into = (state: ConnectionState) => (payload: unknown) =>
  (payload as StateChange).to === state;
const attempt = (first: boolean) => (payload: unknown) =>
  ((payload as RealmEventMap["connecting"]).attempt === 0) === first;

/**
 * Every moment a listener can call back into the client: each event type, `statechange` into
 * each state, during `connect()` and afterwards. The client of {@linkcode callFromListener} gives
 * up after two reconnect attempts.
 */
export const LISTENER_MOMENTS: readonly ListenerMoment[] = [
  {
    name: 'statechange to "connecting"',
    type: "statechange",
    matches: into("connecting"),
    produce: (run) => run.client.connect(),
  },
  {
    name: 'statechange to "open"',
    type: "statechange",
    matches: into("open"),
    produce: (run) => run.client.connect(),
  },
  {
    name: 'statechange to "reconnecting"',
    type: "statechange",
    matches: into("reconnecting"),
    ready: connectFirst,
    produce: dropSockets,
  },
  {
    name: 'statechange to "closed" (gave up reconnecting)',
    type: "statechange",
    matches: into("closed"),
    ready: connectFirst,
    produce: goAway,
    serverDown: true,
  },
  {
    name: 'statechange to "idle"',
    type: "statechange",
    matches: into("idle"),
    ready: connectFirst,
    produce: (run) => run.client.disconnect(),
  },
  {
    name: "connecting (the first attempts)",
    type: "connecting",
    matches: attempt(true),
    produce: (run) => run.client.connect(),
  },
  {
    name: "connecting (a reconnect attempt)",
    type: "connecting",
    matches: attempt(false),
    ready: connectFirst,
    produce: dropSockets,
  },
  {
    name: "connected (the first socket)",
    type: "connected",
    produce: (run) => run.client.connect(),
  },
  {
    name: "connected (a socket reopened)",
    type: "connected",
    ready: connectFirst,
    produce: dropSockets,
  },
  {
    name: "disconnected (a drop)",
    type: "disconnected",
    ready: connectFirst,
    produce: dropSockets,
  },
  {
    name: "disconnected (by disconnect())",
    type: "disconnected",
    ready: connectFirst,
    produce: (run) => run.client.disconnect(),
  },
  { name: "reconnecting", type: "reconnecting", ready: connectFirst, produce: dropSockets },
  {
    name: "error (a socket gave up, the other still retrying)",
    type: "error",
    sockets: 2,
    ready: connectFirst,
    produce: goAway,
    serverDown: true,
  },
  {
    name: "error (the last socket gave up)",
    type: "error",
    nth: (connections) => connections,
    ready: connectFirst,
    produce: goAway,
    serverDown: true,
  },
];

/**
 * Starts a stub server and a client of it (`connections` sockets, {@linkcode FAST}, two reconnect
 * attempts), readies it for `moment`, adds a listener that calls `method` back the first time the
 * moment comes, makes the moment happen, and returns once the listener has called. `await using`
 * tears down both (the client with `disconnect()`, unless `leaveAsIs`).
 */
export async function callFromListener(
  moment: ListenerMoment,
  method: RunMethod,
  connections: number,
): Promise<ListenerRun> {
  const server = await startStubServer({ tokenDelayMs: 0 });
  const sockets = redirectableWebSocket();
  const client = new RealmWebSocketClient({
    ...FAST,
    url: server.url,
    model: "llama-2-7b",
    connections,
    maxReconnectAttempts: 2,
    WebSocket: sockets.WebSocket,
  });
  const seen = recordEvents(client);
  const heard: ListenerRun["heard"] = [];
  for (const type of Object.keys(seen) as (keyof RealmEventMap)[]) {
    client.on(
      type,
      () =>
        heard.push({ type, state: client.state, openConnections: client.stats().openConnections }),
    );
  }
  let called: Promise<CalledBack> | undefined;
  const run: ListenerRun = {
    server,
    client,
    sockets,
    connections,
    seen,
    heard,
    get called() {
      return called!;
    },
    produced: undefined,
    leaveAsIs: false,
    async [Symbol.asyncDispose]() {
      if (!run.leaveAsIs) await within(5000, client.disconnect(), "disconnect() at the end");
      await run.produced?.catch(() => {});
      await server.close();
    },
  };
  try {
    await moment.ready?.(run);
    let matching = 0;
    client.on(moment.type, (payload: unknown) => {
      if (
        called || !(moment.matches?.(payload) ?? true) ||
        ++matching < (moment.nth?.(connections) ?? 1)
      ) {
        return;
      }
      if (moment.serverDown) sockets.redirect = undefined;
      const settled = () => ({
        state: client.state,
        openConnections: client.stats().openConnections,
      });
      called = client[method]().then(settled, (error) => ({ error, ...settled() }));
    });
    const produced = moment.produce(run);
    if (produced) run.produced = outcome(produced, 10_000, `the call that made ${moment.name}`);
    await until(() => called !== undefined, 5000, `a listener of ${moment.name} to be called`);
    return run;
  } catch (error) {
    await run[Symbol.asyncDispose]();
    throw error;
  }
}

/** Each moment with each pool size it applies to (one socket, then two), and a name for both. */
export function listenerCases(): { name: string; moment: ListenerMoment; connections: number }[] {
  return [1, 2].flatMap((connections) =>
    LISTENER_MOMENTS.filter((moment) => (moment.sockets ?? 1) <= connections).map((moment) => ({
      name: `${moment.name}, ${connections === 1 ? "one socket" : `${connections} sockets`}`,
      moment,
      connections,
    }))
  );
}

/** Asserts that no listener ever saw the state `"open"` with no open socket. */
export function assertNeverOpenWithoutSocket(heard: ListenerRun["heard"]): void {
  const wrong = heard.filter(({ state, openConnections }) =>
    state === "open" && openConnections === 0
  );
  assert.deepEqual(wrong, [], 'the state was "open" with no open socket');
}

/**
 * Waits until the client of `run` is open with all its sockets on the server, then checks a
 * little later that it stayed so, with no socket more: the server-side count is exact.
 */
export async function assertOpensFully(run: ListenerRun): Promise<void> {
  const full = () =>
    run.client.state === "open" && run.server.connectionCount === run.connections &&
    run.client.stats().openConnections === run.connections;
  await until(full, 5000, `open with ${run.connections} sockets on the server`);
  await delay(100);
  assert.equal(run.client.state, "open");
  assert.equal(run.server.connectionCount, run.connections, "sockets on the server");
  assert.equal(run.client.stats().openConnections, run.connections);
}

/**
 * Two stub servers, three sockets of a client on each, all dropped and refused since: the client
 * reconnects with a 60 s backoff, and an explicit `connect()` already made every socket try at
 * once and fail, so that both servers are ejected. Then the first server takes sockets again:
 * only a request that tries every server now, ejected ones included, reaches it within seconds.
 * Run it inside `withRandom(0.5, ...)`, so that the backoff is exactly 60 s.
 */
export async function ejectedServers(): Promise<
  { a: StubServer; b: StubServer; client: RealmWebSocketClient } & AsyncDisposable
> {
  const a = await startStubServer({ tokenDelayMs: 0 });
  const b = await startStubServer({ tokenDelayMs: 0 });
  const client = new RealmWebSocketClient({
    ...FAST,
    url: [a.url, b.url],
    model: "llama-2-7b",
    connections: 6,
    reconnectInterval: 60_000,
    maxReconnectInterval: 60_000,
  });
  const fixture = {
    a,
    b,
    client,
    async [Symbol.asyncDispose]() {
      await within(5000, client.disconnect(), "disconnect()");
      await a.close();
      await b.close();
    },
  };
  try {
    await within(5000, client.connect(), "connect()");
    for (const server of [a, b]) {
      dropNow(server);
      server.faults.rejectConnections(true);
    }
    await until(() => client.state === "reconnecting", 3000, "reconnecting");
    const tried = await outcome(client.connect(), 5000, "connect() while both servers refuse");
    assert.ok("error" in tried, "connect() failed: every socket was refused");
    assert.deepEqual(client.stats().servers!.map((server) => server.state), ["ejected", "ejected"]);
    a.faults.rejectConnections(false);
    return fixture;
  } catch (error) {
    await fixture[Symbol.asyncDispose]();
    throw error;
  }
}

/**
 * A client whose one server went away: its socket reconnects with a 60 s backoff, and an attempt
 * that a `connect()` asked for is under way, its handshake hanging on a silent server standing in
 * for the real one. `serverBack()` puts the real server back for the next attempts;
 * `failAttempt()` ends the attempt under way with a failure. Run it inside
 * `withRandom(0.5, ...)`, so that the backoff is exactly 60 s.
 */
export async function attemptUnderWay(): Promise<
  {
    server: StubServer;
    client: RealmWebSocketClient;
    /** What the `connect()` that started the attempt became. */
    first: Promise<{ value: unknown } | { error: unknown }>;
    serverBack(): void;
    failAttempt(): Promise<void>;
  } & AsyncDisposable
> {
  const server = await startStubServer({ tokenDelayMs: 0 });
  const sockets = redirectableWebSocket();
  const client = new RealmWebSocketClient({
    ...FAST,
    url: server.url,
    model: "llama-2-7b",
    connectTimeout: 5000,
    reconnectInterval: 60_000,
    maxReconnectInterval: 60_000,
    WebSocket: sockets.WebSocket,
  });
  const silent = silentServer();
  let silentClosed: Promise<void> | undefined;
  const failAttempt = () => silentClosed ??= silent.close();
  const dispose = async () => {
    await within(5000, client.disconnect(), "disconnect()");
    await failAttempt();
    await server.close();
  };
  try {
    await within(5000, client.connect(), "connect()");
    sockets.redirect = silent.url;
    dropNow(server);
    await until(() => client.state === "reconnecting", 3000, "reconnecting");
    const first = outcome(client.connect(), 10_000, "the connect() that tries now");
    await until(() => silent.accepted() === 1, 3000, "the attempt under way");
    return {
      server,
      client,
      first,
      serverBack: () => sockets.redirect = undefined,
      failAttempt,
      async [Symbol.asyncDispose]() {
        await dispose();
        await first;
      },
    };
  } catch (error) {
    await dispose();
    throw error;
  }
}

/** A server that rate-limits every call with this wait in its message, as the real one words it. */
export function rateLimited(seconds: number): Script {
  return {
    frame: (socket, frame) =>
      socket.send(JSON.stringify({
        id: frame.id,
        status: "error",
        error: {
          code: "RATE_LIMIT_EXCEEDED",
          message: `Rate limit exceeded. Try again in ${seconds} seconds.`,
        },
      })),
  };
}
