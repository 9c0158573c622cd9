/**
 * The client against a real Realm server you run (an open one, not the stub): a short soak, then
 * the client's round trip beside a raw-WebSocket loop on the same server, in one run. It builds
 * and starts nothing: point it at a server.
 *
 * ```sh
 * deno run --allow-net bench/real_server.ts ws://127.0.0.1:8080 [--rounds 7] [--soak 400]
 * ```
 *
 * 1. Soak: `--soak` mixed calls (health, metadata, generate whole, streams read to their end, an
 *    unknown pipeline) over 4 sockets, 16 in flight; every call must settle exactly once, with
 *    the answer the server's simulation gives, and no token may arrive after its call settled.
 * 2. Round trip: sequential `health()`, sequential `generate()` without streaming, and 100
 *    `health()` at once on one socket, each measured beside the raw loop of `bench/_harness.ts`
 *    in interleaved blocks (raw first in even blocks, client first in odd ones); wall and CPU time
 *    per call, median and range of the client/raw ratio per round. No streams: the real
 *    simulation sleeps 50 ms between tokens, so a stream would measure the sleep.
 *
 * Prints the soak's counts and one Markdown table; exits with 1 when the soak saw a problem.
 *
 * @module
 */
import process from "node:process";
import { RealmError, RealmWebSocketClient } from "../mod.ts";
import { type GroupResult, median, RawSocket, type Sample, table } from "./_harness.ts";

const USAGE = "usage: deno run --allow-net bench/real_server.ts <ws-url> [--rounds N] [--soak N]";

function flag(name: string, fallback: number): number {
  const at = Deno.args.indexOf(name);
  if (at < 0) return fallback;
  const value = Number(Deno.args[at + 1]);
  if (!Number.isInteger(value) || value < 1) {
    console.error(`${name} expects a whole number ≥ 1\n${USAGE}`);
    Deno.exit(2);
  }
  return value;
}

const url = Deno.args[0];
if (url === undefined || !/^wss?:\/\//.test(url)) {
  console.error(USAGE);
  Deno.exit(2);
}
const rounds = flag("--rounds", 7);
const soakCalls = flag("--soak", 400);
const cpuMicros = () => {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
};

/** The first frame: the raw loop and this script need an open server. */
async function firstFrame(): Promise<Record<string, unknown>> {
  const socket = new WebSocket(url);
  try {
    return await new Promise((resolve, reject) => {
      socket.onerror = () => reject(new Error(`cannot open ${url}`));
      socket.onmessage = (event) => resolve(JSON.parse(event.data));
    });
  } finally {
    socket.close();
  }
}

// --- 1. soak -------------------------------------------------------------------------------------

interface SoakCounts {
  calls: Record<string, number>;
  problems: string[];
  tokens: number;
  ms: number;
}

async function soak(calls: number): Promise<SoakCounts> {
  const client = new RealmWebSocketClient({
    url,
    model: "default",
    connections: 4,
    timeout: 30_000,
  });
  await client.connect();
  const counts: SoakCounts = { calls: {}, problems: [], tokens: 0, ms: 0 };
  const problem = (text: string) => counts.problems.push(text);
  const kinds = ["health", "metadata", "generate", "stream", "pipeline"] as const;
  const one = async (n: number) => {
    const kind = kinds[n % kinds.length];
    counts.calls[kind] = (counts.calls[kind] ?? 0) + 1;
    let settled = 0;
    let late = 0;
    const settle = () => settled++;
    try {
      switch (kind) {
        case "health": {
          const health = await client.health().finally(settle);
          if (health.status !== "healthy") problem(`health ${JSON.stringify(health)}`);
          break;
        }
        case "metadata": {
          const meta = await client.metadata().finally(settle);
          if (!meta.functions.some((fn) => fn.name === "generate")) {
            problem("metadata: no generate");
          }
          break;
        }
        case "generate": {
          const result = await client.generate({ prompt: `Tell me ${n}` }).finally(settle);
          if (result.text !== `Simulated response to: Tell me ${n}`) {
            problem(`generate ${n}: ${result.text}`);
          }
          break;
        }
        case "stream": {
          const maxTokens = 1 + n % 13;
          const tokens: string[] = [];
          const result = await client.generate({
            prompt: `Story ${n}`,
            max_tokens: maxTokens,
            stream: true,
            onToken: (token) => {
              if (settled > 0) late++;
              else tokens.push(token);
            },
          }).finally(settle);
          counts.tokens += tokens.length;
          if (tokens.length !== maxTokens || result.tokens_generated !== maxTokens) {
            problem(`stream ${n}: ${tokens.length} tokens, ${result.tokens_generated} counted`);
          }
          if (result.text !== tokens.join("")) problem(`stream ${n}: text is not the tokens`);
          break;
        }
        case "pipeline": {
          const outcome = await client.executePipeline("no-such-pipeline", {}).then(
            () => "resolved",
            (error) => error instanceof RealmError ? error.code : String(error),
          ).finally(settle);
          if (outcome !== "DISPATCH_ERROR") problem(`pipeline ${n}: ${outcome}`);
          break;
        }
      }
    } catch (error) {
      problem(`${kind} ${n}: ${error instanceof Error ? error.message : error}`);
    }
    // Anything that settles twice, or a token after the end, shows up here a moment later.
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (settled !== 1) problem(`${kind} ${n} settled ${settled} times`);
    if (late > 0) problem(`${kind} ${n}: ${late} tokens after it settled`);
  };
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < calls) await one(next++);
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  counts.ms = performance.now() - started;
  const stats = client.stats();
  if (stats.pendingCalls !== 0 || stats.queuedCalls !== 0) {
    problem(`after the soak: ${JSON.stringify(stats)}`);
  }
  await client.disconnect();
  return counts;
}

// --- 2. round trip beside the raw loop ------------------------------------------------------------

/** Rounds of `blocks` blocks; each block runs both sides once, the first side alternating. */
async function sideBySide(
  name: string,
  blocks: number,
  opsPerBlock: number,
  raw: () => Promise<void>,
  client: () => Promise<void>,
): Promise<GroupResult> {
  const result: GroupResult = { name, op: "call", raw: [], client: [] };
  for (let round = -2; round < rounds; round++) {
    const total = { raw: { wallUs: 0, cpuUs: 0 }, client: { wallUs: 0, cpuUs: 0 } };
    for (let block = 0; block < blocks; block++) {
      const order = (round + block) % 2 === 0
        ? [["raw", raw], ["client", client]] as const
        : [["client", client], ["raw", raw]] as const;
      for (const [side, body] of order) {
        const cpu = cpuMicros();
        const start = performance.now();
        await body();
        total[side].wallUs += (performance.now() - start) * 1000;
        total[side].cpuUs += cpuMicros() - cpu;
      }
    }
    if (round < 0) continue; // two warm-up rounds
    const ops = blocks * opsPerBlock;
    for (const side of ["raw", "client"] as const) {
      const sample: Sample = { wallUs: total[side].wallUs / ops, cpuUs: total[side].cpuUs / ops };
      result[side].push(sample);
    }
  }
  const ratio = median(result.client.map((c, i) => c.wallUs / result.raw[i].wallUs));
  console.error(`  ${name}: client/raw wall ${ratio.toFixed(2)}×`);
  return result;
}

async function roundTrips(): Promise<GroupResult[]> {
  const client = new RealmWebSocketClient({ url, model: "default" });
  await client.connect();
  const raw = await RawSocket.open(WebSocket, url);
  const tenant = client.getTenantId();
  const prompt = { prompt: "What is the capital of France?", model: "default", stream: false };
  try {
    const groups = [
      await sideBySide("sequential health()", 10, 100, async () => {
        for (let i = 0; i < 100; i++) await raw.call("health", {}, tenant);
      }, async () => {
        for (let i = 0; i < 100; i++) await client.health();
      }),
      await sideBySide("sequential generate(), no stream", 10, 100, async () => {
        for (let i = 0; i < 100; i++) await raw.call("generate", prompt, tenant);
      }, async () => {
        for (let i = 0; i < 100; i++) await client.generate({ prompt: prompt.prompt });
      }),
      await sideBySide("100 health() at once, one socket", 10, 100, async () => {
        await Promise.all(Array.from({ length: 100 }, () => raw.call("health", {}, tenant)));
      }, async () => {
        await Promise.all(Array.from({ length: 100 }, () => client.health()));
      }),
    ];
    return groups;
  } finally {
    await raw.close();
    await client.disconnect();
  }
}

const first = await firstFrame();
if (first.status !== "connected") {
  console.error(`${url} is not an open Realm server (first frame ${JSON.stringify(first)})`);
  Deno.exit(2);
}
console.error(`soak: ${soakCalls} mixed calls over 4 sockets, 16 in flight`);
const counts = await soak(soakCalls);
console.log(
  `soak against ${url} (version ${first.version}): ${soakCalls} calls in ` +
    `${(counts.ms / 1000).toFixed(1)} s (${JSON.stringify(counts.calls)}, ${counts.tokens} ` +
    `tokens), ${counts.problems.length} problems`,
);
for (const line of counts.problems.slice(0, 20)) console.log(`  - ${line}`);
console.error(`round trips: ${rounds} rounds of 1,000 calls a side`);
console.log(`\n${table({ groups: await roundTrips() })}`);
if (counts.problems.length > 0) Deno.exit(1);
