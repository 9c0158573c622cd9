/**
 * Failover, and how many calls one socket should carry.
 *
 * `deno task bench:failover`: three stub servers, each in its own process (`examples/serve.ts`,
 * 2 generations at once, 5 ms a token), and a client with the list of three (2 sockets a server)
 * under a closed loop of 48 callers, each making, in turn, a 20-token stream read whole, a
 * `generate` and a `health`. A run counts the calls completed in {@linkcode RUN_MS}; in a churn run
 * one server at a time is killed (SIGKILL), kept down {@linkcode DOWN_MS}, restarted on its port,
 * and once the client has it back the next one is killed. Runs with and without churn alternate;
 * the report gives each run, the median ratio, and what an ideal client would reach (the capacity
 * left while a server was down). Aim: at least 0.6 with one of three down.
 *
 * `deno task bench:failover --pipelining-study`: for `pipelining` 1, 2, 4, 8, 16 and Infinity,
 * with the servers behind a proxy that delays each chunk 0, 10 or 50 ms each way
 * (`bench/_delay_proxy.ts`, in its own process; 0: no proxy): the throughput of 1,000 concurrent
 * `health()` on one socket (the main benchmark's shape), the latency of short calls made while
 * long streams hold sockets (paced, and all at once), the calls a hung server holds (SIGSTOP),
 * streams of uneven length over three servers, and the churn run above (calls failed and
 * re-sent). `--depths 1,4,Infinity` and `--latencies 0,10` pick fewer.
 *
 * Flags: `--rounds N` (churn runs, default 3), `--pipelining N` and `--latency MS` (for the churn
 * runs), `--json`.
 *
 * @module
 */
import { RealmError, RealmWebSocketClient } from "../mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SERVE = new URL("../examples/serve.ts", import.meta.url).pathname;
const PROXY = new URL("./_delay_proxy.ts", import.meta.url).pathname;

/** A run's length: long enough for three kills, each down {@linkcode DOWN_MS}. */
const RUN_MS = 6000;
/** How long a killed server stays down before it is restarted. */
const DOWN_MS = 1000;
const SERVERS = 3;
const SOCKETS_PER_SERVER = 2;
const GENERATIONS_PER_SERVER = 2;
const TOKEN_DELAY_MS = 5;
const STREAM_TOKENS = 20;
/** Callers, each making one call after another: more than the servers serve at once. */
const CALLERS = 48;

function flag(name: string): string | undefined {
  const at = Deno.args.indexOf(name);
  return at >= 0 ? Deno.args[at + 1] : undefined;
}
const ROUNDS = Number(flag("--rounds") ?? 3);
const PIPELINING = flag("--pipelining") === undefined ? undefined : Number(flag("--pipelining"));
const LATENCY = Number(flag("--latency") ?? 0);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
};

/**
 * A loopback port free now and below the range the OS hands out to client sockets (32768–60999 on
 * Linux), so that a server restarts on it: no socket is given it while the server is down.
 */
function portToRestartOn(): number {
  for (let tries = 0; tries < 1000; tries++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch { /* taken: try another */ }
  }
  throw new Error("no free port in 20000–31999");
}

/** A process that prints its `ws://` address on its first line. */
class Child {
  port = 0;
  #child: Deno.ChildProcess | undefined;
  constructor(readonly args: (port: number) => string[], readonly stdin: "piped" | "null") {}

  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** Starts it (on its port once it has one) and waits at most 30 s for its address. */
  async start(): Promise<void> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net=127.0.0.1", ...this.args(this.port)],
      cwd: ROOT,
      stdin: this.stdin,
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#child = child;
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const deadline = performance.now() + 30_000;
    try {
      while (!/ws:\/\/127\.0\.0\.1:\d+/.test(text)) {
        if (performance.now() > deadline) throw new Error(`${this.args(0)} printed no address`);
        const { value, done } = await reader.read();
        if (done) throw new Error(`${this.args(this.port)} exited before listening: ${text}`);
        text += value;
      }
    } finally {
      await reader.cancel();
    }
    this.port = Number(/ws:\/\/127\.0\.0\.1:(\d+)/.exec(text)![1]);
  }

  /** Sends `signal` to the running process. */
  signal(signal: Deno.Signal): void {
    this.#child?.kill(signal);
  }

  /** Sends `signal` and waits for the process to end (SIGKILL after 5 s). */
  async stop(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    if (this.stdin === "piped") await child.stdin.close().catch(() => {});
    try {
      child.kill(signal);
    } catch { /* gone */ }
    const killer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
    await child.status;
    clearTimeout(killer);
  }
}

const stub = (tokenDelay: number, generations?: number) => {
  const child = new Child((port) => [
    SERVE,
    "--port",
    String(port),
    "--token-delay",
    String(tokenDelay),
    // Streams of exactly max_tokens (the real simulation stops at 13).
    "--long-streams",
    ...(generations ? ["--max-generations", String(generations)] : []),
  ], "null");
  child.port = portToRestartOn();
  return child;
};

/** Proxies with `latency` in front of `targets`; at 0, the targets themselves. */
async function proxied(
  targets: Child[],
  latency: number,
): Promise<{ urls: string[]; stop(): Promise<void> }> {
  if (latency === 0) return { urls: targets.map((t) => t.url), stop: () => Promise.resolve() };
  const proxies = targets.map((target) =>
    new Child(() => [PROXY, String(target.port), String(latency)], "piped")
  );
  await Promise.all(proxies.map((proxy) => proxy.start()));
  return {
    urls: proxies.map((proxy) => proxy.url),
    stop: async () => {
      await Promise.all(proxies.map((proxy) => proxy.stop("SIGTERM")));
    },
  };
}

interface ChurnResult {
  churn: boolean;
  completed: number;
  failed: number;
  /** Failures by code, and whether the call had delivered part of its answer. */
  failures: Record<string, number>;
  perSecond: number;
  resent: number;
  withheld: number;
  /** Time with a server down as the client sees it (killed until its socket is open again). */
  downMs: number;
}

function clientFor(urls: string[], pipelining: number | undefined): RealmWebSocketClient {
  return new RealmWebSocketClient({
    url: urls,
    model: "llama-2-7b",
    connections: urls.length * SOCKETS_PER_SERVER,
    ...(pipelining === undefined ? {} : { pipelining }),
    // A restarted server is back within a second, as a fleet's client would be tuned.
    reconnectInterval: 100,
    maxReconnectInterval: 1000,
    timeout: 30_000,
  });
}

/** A client of the fleet, connected, once every socket of its pool is open (within 2 s). */
async function connectedClient(
  urls: string[],
  pipelining: number | undefined,
): Promise<RealmWebSocketClient> {
  const client = clientFor(urls, pipelining);
  await client.connect();
  for (
    let i = 0;
    i < 200 && client.stats().openConnections < urls.length * SOCKETS_PER_SERVER;
    i++
  ) {
    await sleep(10);
  }
  return client;
}

/** One run: the callers for {@linkcode RUN_MS}, with or without a server down at a time. */
async function churnRun(
  servers: Child[],
  urls: string[],
  churn: boolean,
  pipelining: number | undefined,
): Promise<ChurnResult> {
  // Every socket open before the clock starts.
  const client = await connectedClient(urls, pipelining);
  const result: ChurnResult = {
    churn,
    completed: 0,
    failed: 0,
    failures: {},
    perSecond: 0,
    resent: 0,
    withheld: 0,
    downMs: 0,
  };
  const start = performance.now();
  const end = start + RUN_MS;
  const caller = async (index: number) => {
    for (let turn = index; performance.now() < end; turn++) {
      try {
        const kind = turn % 3;
        if (kind === 0) {
          let tokens = 0;
          for await (
            const _ of client.generateStream({ prompt: `c${index}`, max_tokens: STREAM_TOKENS })
          ) tokens++;
          if (tokens !== STREAM_TOKENS) throw new Error(`a stream of ${tokens} tokens`);
        } else if (kind === 1) {
          await client.generate({ prompt: `c${index}`, max_tokens: 16 });
        } else {
          await client.health();
        }
        if (performance.now() <= end) result.completed++;
      } catch (error) {
        result.failed++;
        const key = error instanceof RealmError
          ? `${error.code}${error.delivered ? " (delivered)" : ""}`
          : String(error);
        result.failures[key] = (result.failures[key] ?? 0) + 1;
      }
    }
  };
  const chaos = async () => {
    if (!churn) return;
    await sleep(300);
    for (let k = 0; performance.now() < end - DOWN_MS; k++) {
      const index = k % servers.length;
      const killedAt = performance.now();
      await servers[index].stop("SIGKILL");
      await sleep(DOWN_MS);
      await servers[index].start();
      // The client has it back: a socket of it is open (at most 10 s).
      for (let i = 0; i < 1000 && client.stats().servers![index].openConnections === 0; i++) {
        await sleep(5);
      }
      result.downMs += Math.min(performance.now(), end) - killedAt;
    }
  };
  await Promise.all([...Array.from({ length: CALLERS }, (_, i) => caller(i)), chaos()]);
  const stats = client.stats();
  result.resent = stats.resentCalls;
  result.withheld = stats.retriesWithheld;
  result.perSecond = result.completed / (RUN_MS / 1000);
  await client.disconnect();
  return result;
}

async function withFleet<T>(
  latency: number,
  body: (servers: Child[], urls: string[]) => Promise<T>,
): Promise<T> {
  const servers = Array.from(
    { length: SERVERS },
    () => stub(TOKEN_DELAY_MS, GENERATIONS_PER_SERVER),
  );
  let stopProxies = () => Promise.resolve();
  try {
    await Promise.all(servers.map((server) => server.start()));
    const fleet = await proxied(servers, latency);
    stopProxies = fleet.stop;
    return await body(servers, fleet.urls);
  } finally {
    await stopProxies();
    await Promise.all(servers.map((server) => server.stop("SIGKILL")));
  }
}

/** Runs with and without churn, alternating; returns every run. */
function churnRounds(rounds: number, latency: number, pipelining: number | undefined) {
  return withFleet(latency, async (servers, urls) => {
    const runs: ChurnResult[] = [];
    for (let round = 0; round < rounds; round++) {
      for (const churn of round % 2 ? [true, false] : [false, true]) {
        runs.push(await churnRun(servers, urls, churn, pipelining));
        console.error(`  ${churn ? "churn" : "steady"}: ${JSON.stringify(runs.at(-1))}`);
      }
    }
    return runs;
  });
}

function churnSummary(runs: ChurnResult[]) {
  const steady = runs.filter((run) => !run.churn);
  const churned = runs.filter((run) => run.churn);
  const ratios = churned.map((run, i) => run.perSecond / steady[i].perSecond);
  const downFraction = median(churned.map((run) => run.downMs / RUN_MS));
  return {
    steady: median(steady.map((run) => run.perSecond)),
    churn: median(churned.map((run) => run.perSecond)),
    ratio: median(ratios),
    ratios,
    ideal: 1 - downFraction / SERVERS,
    downFraction,
  };
}

// --- The pipelining study ----------------------------------------------------------------------

const list = (name: string, fallback: number[]) => flag(name)?.split(",").map(Number) ?? fallback;
const DEPTHS = list("--depths", [1, 2, 4, 8, 16, Infinity]);
const LATENCIES = list("--latencies", [0, 10, 50]);
const CONCURRENT = 1000;
/** A batch of 1,000 calls is stopped after this long (at 50 ms and depth 1 it would take 100 s). */
const BATCH_LIMIT_MS = 2000;

/**
 * Calls per second of 1,000 concurrent `health()` on one socket: one warm-up batch, then the
 * median of 5. A batch stopped at {@linkcode BATCH_LIMIT_MS} counts what completed by then; the
 * rest fail with the client's `disconnect()`.
 */
async function concurrentThroughput(url: string, pipelining: number): Promise<number> {
  const rates: number[] = [];
  for (let batch = -1; batch < 5; batch++) {
    const client = new RealmWebSocketClient({ url, model: "llama-2-7b", pipelining });
    await client.connect();
    let done = 0;
    const start = performance.now();
    const calls = Array.from({ length: CONCURRENT }, () => client.health().then(() => done++));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const limit = new Promise((resolve) => (timer = setTimeout(resolve, BATCH_LIMIT_MS)));
    await Promise.race([Promise.all(calls), limit]);
    clearTimeout(timer);
    if (batch >= 0) rates.push(done / ((performance.now() - start) / 1000));
    await client.disconnect();
    await Promise.allSettled(calls);
  }
  return median(rates);
}

const LONG_STREAMS = 3;
const LONG_TOKENS = 100;
const SHORT_CALLS = 60;
const SHORT_EVERY_MS = 10;

/**
 * Short calls while long streams hold sockets: one server (10 ms a token), 4 sockets, 3 streams of
 * 100 tokens (about 1 s), then 60 `health()`, one every 10 ms (`paced`) or all at once. Their
 * latencies, in ms.
 */
async function shortCallLatency(
  url: string,
  pipelining: number,
  paced: boolean,
): Promise<number[]> {
  const client = new RealmWebSocketClient({
    url,
    model: "llama-2-7b",
    connections: 4,
    pipelining,
    timeout: 60_000,
  });
  await client.connect();
  try {
    for (let i = 0; i < 200 && client.stats().openConnections < 4; i++) await sleep(10);
    const streams = Array.from(
      { length: LONG_STREAMS },
      () => client.generate({ prompt: "long", max_tokens: LONG_TOKENS, stream: true }),
    );
    // The streams are on their sockets, and under way.
    await sleep(100);
    const latencies: number[] = [];
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < SHORT_CALLS; i++) {
      const start = performance.now();
      calls.push(client.health().then(() => latencies.push(performance.now() - start)));
      if (paced) await sleep(SHORT_EVERY_MS);
    }
    await Promise.allSettled([...calls, ...streams]);
    return latencies;
  } finally {
    await client.disconnect();
  }
}

const HANG_MS = 2000;

/**
 * A server that hangs: the churn run's fleet and callers for 4 s, one server stopped (SIGSTOP:
 * its sockets stay open, nothing answers) for {@linkcode HANG_MS} from the first second. The most
 * calls its sockets held meanwhile (they wait for it; without a heartbeat, until it answers or
 * their timeout), and the calls per second.
 */
function hungServer(latency: number, pipelining: number) {
  return withFleet(latency, async (servers, urls) => {
    const client = await connectedClient(urls, pipelining);
    try {
      let completed = 0;
      let held = 0;
      const end = performance.now() + 4000;
      const caller = async (index: number) => {
        for (let turn = index; performance.now() < end; turn++) {
          try {
            if (turn % 3 === 0) {
              for await (
                const _ of client.generateStream({ prompt: "h", max_tokens: STREAM_TOKENS })
              ) {
                // read whole
              }
            } else if (turn % 3 === 1) await client.generate({ prompt: "h", max_tokens: 16 });
            else await client.health();
            completed++;
          } catch { /* counted as not completed */ }
        }
      };
      const hang = async () => {
        await sleep(1000);
        servers[0].signal("SIGSTOP");
        for (let waited = 0; waited < HANG_MS; waited += 50) {
          await sleep(50);
          held = Math.max(held, client.stats().servers![0].callsOnTheWire);
        }
        servers[0].signal("SIGCONT");
      };
      await Promise.all([...Array.from({ length: CALLERS }, (_, i) => caller(i)), hang()]);
      return { held, perSecond: completed / 4 };
    } finally {
      await client.disconnect();
    }
  });
}

const UNEVEN_STREAMS = 60;

/**
 * Streams of uneven length over the three servers: 60 at once, 5 to 200 tokens (the same lengths
 * for every depth), 6 sockets. With a small depth the calls wait in the client and go to whichever
 * socket frees first; with a large one each socket gets its share up front, long or short. The time
 * until every stream has ended, and the mean time to a stream's end, in ms.
 */
function unevenStreams(latency: number, pipelining: number) {
  return withFleet(latency, async (_servers, urls) => {
    const client = await connectedClient(urls, pipelining);
    try {
      // A fixed sequence (a linear congruential generator), the same for every depth.
      let seed = 7;
      const lengths = Array.from({ length: UNEVEN_STREAMS }, () => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return 5 + (seed % 196);
      });
      const start = performance.now();
      const ends = await Promise.all(lengths.map(async (tokens) => {
        await client.generate({ prompt: "u", max_tokens: tokens, stream: true });
        return performance.now() - start;
      }));
      return { makespan: Math.max(...ends), mean: ends.reduce((a, b) => a + b, 0) / ends.length };
    } finally {
      await client.disconnect();
    }
  });
}

interface StudyRow {
  latency: number;
  pipelining: number;
  concurrentPerSecond: number;
  paced: number[];
  burst: number[];
  hung: { held: number; perSecond: number };
  uneven: { makespan: number; mean: number };
  churn: ReturnType<typeof churnSummary> & { failed: number; resent: number; withheld: number };
}

async function pipeliningStudy(): Promise<StudyRow[]> {
  const rows: StudyRow[] = [];
  const fast = stub(0);
  const slow = stub(10);
  await Promise.all([fast.start(), slow.start()]);
  try {
    for (const latency of LATENCIES) {
      const front = await proxied([fast, slow], latency);
      try {
        for (const pipelining of DEPTHS) {
          console.error(`latency ${latency} ms, pipelining ${pipelining}`);
          const concurrentPerSecond = await concurrentThroughput(front.urls[0], pipelining);
          const paced = await shortCallLatency(front.urls[1], pipelining, true);
          const burst = await shortCallLatency(front.urls[1], pipelining, false);
          const hung = await hungServer(latency, pipelining);
          const uneven = await unevenStreams(latency, pipelining);
          const runs = await churnRounds(1, latency, pipelining);
          const churned = runs.find((run) => run.churn)!;
          rows.push({
            latency,
            pipelining,
            concurrentPerSecond,
            paced,
            burst,
            hung,
            uneven,
            churn: {
              ...churnSummary(runs),
              failed: churned.failed,
              resent: churned.resent,
              withheld: churned.withheld,
            },
          });
          const last = rows.at(-1)!;
          console.error(`  ${row(last)}`);
        }
      } finally {
        await front.stop();
      }
    }
  } finally {
    await Promise.all([fast.stop(), slow.stop()]);
  }
  return rows;
}

const ms = (values: number[]) =>
  `${quantile(values, 0.5).toFixed(0)} / ${quantile(values, 0.9).toFixed(0)} / ${
    Math.max(...values).toFixed(0)
  }`;

function row(r: StudyRow): string {
  return `| ${r.latency} ms | ${r.pipelining} | ${r.concurrentPerSecond.toFixed(0)} | ` +
    `${ms(r.paced)} | ${ms(r.burst)} | ${r.hung.held} (${r.hung.perSecond.toFixed(0)}/s) | ` +
    `${r.uneven.makespan.toFixed(0)} / ${r.uneven.mean.toFixed(0)} | ` +
    `${r.churn.steady.toFixed(0)} → ${r.churn.churn.toFixed(0)} (${r.churn.ratio.toFixed(2)}) | ` +
    `${r.churn.failed} / ${r.churn.resent} |`;
}

// --- Report -------------------------------------------------------------------------------------

if (Deno.args.includes("--pipelining-study")) {
  const rows = await pipeliningStudy();
  if (Deno.args.includes("--json")) console.log(JSON.stringify(rows));
  else {
    console.log(
      `Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores. Latency is each way, ` +
        "through a proxy in its own process (0: no proxy).\n",
    );
    console.log(
      "| latency | pipelining | 1,000 concurrent health() on 1 socket, calls/s | short calls beside 3 streams, paced: p50 / p90 / max ms | the same, all at once | calls held by a hung server (calls/s) | 60 uneven streams: all ended / mean end (ms) | churn calls/s: steady → one down (ratio) | churn: failed / re-sent |",
    );
    console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (const r of rows) console.log(row(r));
  }
} else {
  console.error(
    `${ROUNDS} rounds of ${RUN_MS / 1000} s steady and ${RUN_MS / 1000} s with one server of ` +
      `${SERVERS} down at a time (each down ${DOWN_MS} ms)` +
      (PIPELINING === undefined ? "" : `, pipelining ${PIPELINING}`) +
      (LATENCY ? `, ${LATENCY} ms each way` : ""),
  );
  const runs = await churnRounds(ROUNDS, LATENCY, PIPELINING);
  const summary = churnSummary(runs);
  if (Deno.args.includes("--json")) console.log(JSON.stringify({ runs, summary }));
  else {
    console.log(
      `Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores: ${SERVERS} servers ` +
        `(${GENERATIONS_PER_SERVER} generations at once, ${TOKEN_DELAY_MS} ms a token), ` +
        `${SOCKETS_PER_SERVER} sockets a server, ${CALLERS} callers ` +
        `(a ${STREAM_TOKENS}-token stream, a generate, a health), ${RUN_MS / 1000} s a run\n`,
    );
    console.log(
      "| run | steady calls/s | one down calls/s | ratio | failed (why) | re-sent | withheld | a server down |",
    );
    console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
    const steady = runs.filter((run) => !run.churn);
    const churned = runs.filter((run) => run.churn);
    for (const [i, run] of churned.entries()) {
      const why = Object.entries(run.failures).map(([code, n]) => `${n} ${code}`).join(", ");
      console.log(
        `| ${i + 1} | ${steady[i].perSecond.toFixed(0)} | ${run.perSecond.toFixed(0)} | ` +
          `${(run.perSecond / steady[i].perSecond).toFixed(2)} | ${run.failed}${
            why ? ` (${why})` : ""
          } | ` +
          `${run.resent} | ${run.withheld} | ${((100 * run.downMs) / RUN_MS).toFixed(0)} % |`,
      );
    }
    const met = summary.ratio >= 0.6;
    console.log(
      `\nMedian ratio ${summary.ratio.toFixed(2)} (aim ≥ 0.60: ${met ? "met" : "MISSED"}); ` +
        `an ideal client loses only the capacity that is gone: ${summary.ideal.toFixed(2)}.`,
    );
    if (!met) Deno.exitCode = 1;
  }
}
