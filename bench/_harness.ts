/**
 * The benchmarks, independent of the runtime: `bench/run.ts` runs them on Deno, and `bench/npm.ts`
 * bundles this file for Node and Bun against the npm build. The servers run in other processes;
 * each group measures the client beside a raw-WebSocket loop in the same run, in interleaved
 * rounds (raw first in even rounds, client first in odd ones), and keeps wall and CPU time per
 * operation for every round.
 *
 * @module
 */

/** What the benchmarks need of the client (the npm build's class and `mod.ts`'s both fit). */
export interface BenchClient {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  health(): Promise<unknown>;
  generateStream(params: { prompt: string; max_tokens: number }): AsyncIterable<string>;
  getTenantId(): string;
}

/** What a runtime provides. */
export interface BenchEnv {
  /** The client connected to nothing yet. */
  createClient(url: string, connections: number): BenchClient;
  /** The WebSocket the raw loop uses: the global one, or `ws` on Node 20 (as the client does). */
  WebSocket: new (url: string) => WebSocket;
  /** The process's CPU time (user + system) so far, in µs. */
  cpuMicros(): number;
  /** The stub server, token delay 0 and 10 ms, and the unpaced server. */
  stubUrl: string;
  slowStubUrl: string;
  unpacedUrl: string;
  /** Measured rounds per group ({@linkcode WARMUP_ROUNDS} warm-up rounds come first). */
  rounds: number;
  /** Progress lines (to stderr). */
  log(line: string): void;
}

/** One measurement: per operation. */
export interface Sample {
  wallUs: number;
  cpuUs: number;
}

/** A group's rounds, raw loop and client side by side. */
export interface GroupResult {
  name: string;
  /** What one operation is ("call", "token", "stream set"). */
  op: string;
  raw: Sample[];
  client: Sample[];
}

/** Everything measured, for the tables. */
export interface Report {
  groups: GroupResult[];
}

const TOKENS = 10_000;
const SEQUENTIAL_CALLS = 2_000;
const CONCURRENT_CALLS = 1_000;
/**
 * A batch of 1,000 takes about 15 ms: with 8 a round, one scavenge or a busy neighbour moved a
 * round's ratio by up to 0.3; 24 keep a round near the group's median.
 */
const CONCURRENT_BATCHES = 24;
const STREAMS_PER_ROUND = 4;
const POOL_STREAMS = 8;
const POOL_TOKENS = 10;

type FrameHandler = (frame: { id?: string; status?: string; data?: unknown }) => void;

/**
 * The baseline: a hand-written loop over a raw WebSocket that does the least a correct caller
 * must (JSON.stringify a call, send it, JSON.parse every frame, match it to its call by id) and
 * nothing else: no checks, no timers, no events. `bench/_client_only.ts` runs it on a fake socket.
 */
export class RawSocket {
  readonly #socket: WebSocket;
  readonly #handlers = new Map<string, FrameHandler>();
  #nextId = 0;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      this.#handlers.get(frame.id)?.(frame);
    };
  }

  /** Opens a socket and waits for the server's welcome frame. */
  static open(WebSocketClass: BenchEnv["WebSocket"], url: string): Promise<RawSocket> {
    const socket = new WebSocketClass(url);
    return new Promise((resolve, reject) => {
      socket.onerror = () => reject(new Error(`cannot open ${url}`));
      socket.onmessage = () => resolve(new RawSocket(socket));
    });
  }

  /** Sends one call and resolves with the `data` of its `complete` frame. */
  call(fn: string, params: Record<string, unknown>, tenantId: string): Promise<unknown> {
    const id = String(++this.#nextId);
    return new Promise((resolve) => {
      this.#handlers.set(id, (frame) => {
        this.#handlers.delete(id);
        resolve(frame.data);
      });
      this.#socket.send(JSON.stringify({ id, function: fn, params, tenant_id: tenantId }));
    });
  }

  /** Sends a streaming generate call and resolves with the number of `streaming` frames. */
  stream(params: Record<string, unknown>, tenantId: string): Promise<number> {
    const id = String(++this.#nextId);
    let tokens = 0;
    return new Promise((resolve) => {
      this.#handlers.set(id, (frame) => {
        if (frame.status === "streaming") tokens++;
        else {
          this.#handlers.delete(id);
          resolve(tokens);
        }
      });
      this.#socket.send(
        JSON.stringify({ id, function: "generate", params, tenant_id: tenantId }),
      );
    });
  }

  /** Closes the socket and waits (at most a second) for its close event. */
  close(): Promise<void> {
    return closeAndWait(this.#socket);
  }
}

/** Closes a socket and waits (at most a second) for its close event. */
export function closeAndWait(socket: WebSocket): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1000);
    socket.onclose = () => {
      clearTimeout(timer);
      resolve();
    };
    socket.close();
  });
}

function expect(what: string, actual: number, expected: number): void {
  if (actual !== expected) throw new Error(`${what}: expected ${expected}, got ${actual}`);
}

async function countClientTokens(client: BenchClient, tokens: number): Promise<void> {
  let count = 0;
  for await (const _token of client.generateStream({ prompt: "story", max_tokens: tokens })) {
    count++;
  }
  expect("client tokens", count, tokens);
}

/**
 * Unmeasured rounds before each group. The client is more code for the JIT to optimize than the
 * raw loop: on Node 22 its CPU time per sequential call settles after about 6,000 calls (the raw
 * loop's after about 4,000), and one round of 2,000 left the first measured rounds on the slope.
 */
const WARMUP_ROUNDS = 3;

/**
 * {@linkcode WARMUP_ROUNDS} warm-up rounds, then `env.rounds` rounds. A round is `blocks` blocks, and a block runs the raw
 * loop and the client once each, alternating which goes first: on a busy machine the two sides
 * then share its ups and downs, down to a few milliseconds. Each side's wall and CPU time is
 * summed over the round's blocks and divided by its operations.
 */
async function group(
  env: BenchEnv,
  name: string,
  op: string,
  blocks: number,
  opsPerBlock: number,
  raw: () => Promise<void>,
  client: () => Promise<void>,
): Promise<GroupResult> {
  const result: GroupResult = { name, op, raw: [], client: [] };
  for (let round = -WARMUP_ROUNDS; round < env.rounds; round++) {
    const total = { raw: { wallUs: 0, cpuUs: 0 }, client: { wallUs: 0, cpuUs: 0 } };
    for (let block = 0; block < blocks; block++) {
      const pair = (round + block) % 2 === 0
        ? [["raw", raw], ["client", client]] as const
        : [["client", client], ["raw", raw]] as const;
      for (const [side, body] of pair) {
        const cpu = env.cpuMicros();
        const start = performance.now();
        await body();
        total[side].wallUs += (performance.now() - start) * 1000;
        total[side].cpuUs += env.cpuMicros() - cpu;
      }
    }
    if (round < 0) continue;
    const ops = blocks * opsPerBlock;
    for (const side of ["raw", "client"] as const) {
      result[side].push({ wallUs: total[side].wallUs / ops, cpuUs: total[side].cpuUs / ops });
    }
  }
  const ratio = median(result.client.map((c, i) => c.wallUs / result.raw[i].wallUs));
  env.log(`  ${name}: client/raw wall ${ratio.toFixed(2)}×`);
  return result;
}

/** Runs every group; closes every socket it opened, also on failure. */
export async function runBenchmarks(env: BenchEnv): Promise<Report> {
  const opened: (() => Promise<unknown>)[] = [];
  const connected = async (url: string, connections = 1) => {
    const client = env.createClient(url, connections);
    await client.connect();
    opened.push(() => client.disconnect());
    return client;
  };
  const rawSocket = async (url: string) => {
    const raw = await RawSocket.open(env.WebSocket, url);
    opened.push(() => raw.close());
    return raw;
  };
  const groups: GroupResult[] = [];
  try {
    // 1. One call at a time, each answered before the next.
    const client = await connected(env.stubUrl);
    const raw = await rawSocket(env.stubUrl);
    const tenant = client.getTenantId();
    env.log(`sequential health(), ${SEQUENTIAL_CALLS} calls a round`);
    groups.push(
      await group(env, "sequential health()", "call", SEQUENTIAL_CALLS / 100, 100, async () => {
        for (let i = 0; i < 100; i++) await raw.call("health", {}, tenant);
      }, async () => {
        for (let i = 0; i < 100; i++) await client.health();
      }),
    );

    // 2. 1,000 calls in flight on one socket.
    env.log(`${CONCURRENT_CALLS} concurrent health() on one socket, ${CONCURRENT_BATCHES} a round`);
    groups.push(
      await group(
        env,
        `${CONCURRENT_CALLS} concurrent health()`,
        "call",
        CONCURRENT_BATCHES,
        CONCURRENT_CALLS,
        async () => {
          await Promise.all(
            Array.from({ length: CONCURRENT_CALLS }, () => raw.call("health", {}, tenant)),
          );
        },
        async () => {
          await Promise.all(Array.from({ length: CONCURRENT_CALLS }, () => client.health()));
        },
      ),
    );

    // 3. Unpaced 10,000-token streams: the reader is the bottleneck.
    const fastClient = await connected(env.unpacedUrl);
    const fastRaw = await rawSocket(env.unpacedUrl);
    const params = { prompt: "story", max_tokens: TOKENS, stream: true };
    env.log(`unpaced ${TOKENS}-token streams, ${STREAMS_PER_ROUND} a round`);
    groups.push(
      await group(
        env,
        `unpaced ${TOKENS}-token stream`,
        "token",
        STREAMS_PER_ROUND,
        TOKENS,
        async () => expect("raw tokens", await fastRaw.stream(params, tenant), TOKENS),
        () => countClientTokens(fastClient, TOKENS),
      ),
    );

    // 4. A pool: 8 streams at once, 10 ms a token, on 1 and on 4 sockets.
    for (const sockets of [1, 4]) {
      const pool = await connected(env.slowStubUrl, sockets);
      const raws = await Promise.all(
        Array.from({ length: sockets }, () => rawSocket(env.slowStubUrl)),
      );
      const poolParams = { prompt: "story", max_tokens: POOL_TOKENS, stream: true };
      env.log(`pool: ${POOL_STREAMS} streams of ${POOL_TOKENS} tokens on ${sockets} socket(s)`);
      groups.push(
        await group(
          env,
          `pool: ${POOL_STREAMS} streams on ${sockets} socket${sockets > 1 ? "s" : ""}`,
          `${POOL_STREAMS} streams`,
          1,
          1,
          async () => {
            await Promise.all(
              Array.from({ length: POOL_STREAMS }, async (_, i) => {
                const tokens = await raws[i % sockets].stream(poolParams, tenant);
                expect("raw pool tokens", tokens, POOL_TOKENS);
              }),
            );
          },
          async () => {
            await Promise.all(
              Array.from({ length: POOL_STREAMS }, () => countClientTokens(pool, POOL_TOKENS)),
            );
          },
        ),
      );
    }
    return { groups };
  } finally {
    await Promise.all(opened.map((close) => close().catch(() => {})));
  }
}

/** The median of some numbers. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function format(value: number, unit: string): string {
  if (unit === "ms" || value >= 10_000) return `${(value / 1000).toFixed(1)} ms`;
  if (value >= 10) return `${value.toFixed(1)} µs`;
  return `${(value * 1000).toFixed(0)} ns`;
}

/**
 * A report as a Markdown table: per group, the median time per operation of each side (wall and
 * CPU), and the client/raw ratio per round as its median and range.
 */
export function table(report: Report): string {
  const lines = [
    "| group | per | raw wall | client wall | client/raw wall, median (range) | raw CPU | client CPU | client/raw CPU |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const g of report.groups) {
    const wall = g.client.map((c, i) => c.wallUs / g.raw[i].wallUs);
    const cpu = g.client.map((c, i) => c.cpuUs / g.raw[i].cpuUs);
    const unit = g.op === "token" || g.op === "call" ? "" : "ms";
    const m = (samples: Sample[], key: keyof Sample) =>
      format(median(samples.map((s) => s[key])), unit);
    lines.push(
      `| ${g.name} | ${g.op} | ${m(g.raw, "wallUs")} | ${m(g.client, "wallUs")} | ` +
        `${median(wall).toFixed(2)}× (${Math.min(...wall).toFixed(2)}–${
          Math.max(...wall).toFixed(2)
        }) | ` +
        `${m(g.raw, "cpuUs")} | ${m(g.client, "cpuUs")} | ${median(cpu).toFixed(2)}× |`,
    );
  }
  return lines.join("\n");
}
