/**
 * What several servers buy: 16 concurrent 20-token streams at 10 ms a token, against 1, 2 and
 * 4 stub servers that each run 2 generations at once (a machine's limit), 2 sockets per server.
 * The servers run in their own processes (`examples/serve.ts`). Rounds are interleaved and the
 * median is reported, with the speed-up over one server; the target is N servers at least
 * 0.9·N times sooner than one.
 *
 * Usage: `deno task bench:servers [--rounds N]`.
 *
 * @module
 */
import { RealmWebSocketClient } from "../mod.ts";

const STREAMS = 16;
const TOKENS = 20;
const TOKEN_DELAY_MS = 10;
const GENERATIONS_PER_SERVER = 2;
const SOCKETS_PER_SERVER = 2;
const FLEETS = [1, 2, 4];
const roundsFlag = Deno.args.indexOf("--rounds");
const ROUNDS = roundsFlag >= 0 ? Number(Deno.args[roundsFlag + 1]) : 5;

interface Server {
  url: string;
  process: Deno.ChildProcess;
}

/** Starts one stub server in its own process and reads the address it prints. */
async function startServer(): Promise<Server> {
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      new URL("../examples/serve.ts", import.meta.url).pathname,
      "--port",
      "0",
      "--token-delay",
      String(TOKEN_DELAY_MS),
      "--max-generations",
      String(GENERATIONS_PER_SERVER),
      "--long-streams",
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/ws:\/\/\S+/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the stub server exited before listening: ${text}`);
    text += value;
  }
  // The server prints nothing more; drop the rest.
  void reader.cancel();
  return { url: /ws:\/\/\S+/.exec(text)![0], process };
}

async function stopServer(server: Server): Promise<void> {
  server.process.kill("SIGINT");
  await server.process.status;
}

/** One run: the wall time for every stream to finish, in ms. */
async function run(urls: string[]): Promise<number> {
  const client = new RealmWebSocketClient({
    url: urls,
    model: "llama-2-7b",
    connections: urls.length * SOCKETS_PER_SERVER,
    timeout: 60_000,
  });
  await client.connect();
  const started = performance.now();
  const results = await Promise.all(
    Array.from(
      { length: STREAMS },
      (_, i) => client.generate({ prompt: `story ${i}`, max_tokens: TOKENS, stream: true }),
    ),
  );
  const elapsed = performance.now() - started;
  await client.disconnect();
  if (results.some((result) => result.tokens_generated !== TOKENS)) {
    throw new Error("a stream came back short");
  }
  return elapsed;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1];

const servers = await Promise.all(Array.from({ length: Math.max(...FLEETS) }, startServer));
try {
  const times = new Map<number, number[]>(FLEETS.map((n) => [n, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const n of FLEETS) {
      times.get(n)!.push(await run(servers.slice(0, n).map((server) => server.url)));
    }
  }
  const one = median(times.get(1)!);
  console.log(
    `${STREAMS} streams × ${TOKENS} tokens at ${TOKEN_DELAY_MS} ms, ` +
      `${GENERATIONS_PER_SERVER} generations at once per server, ` +
      `${SOCKETS_PER_SERVER} sockets per server, median of ${ROUNDS} interleaved rounds`,
  );
  console.log("| servers | time (ms) | range (ms) | speed-up | target |");
  console.log("| --- | --- | --- | --- | --- |");
  let met = true;
  for (const n of FLEETS) {
    const all = times.get(n)!;
    const speedUp = one / median(all);
    const ok = speedUp >= 0.9 * n;
    met &&= ok;
    console.log(
      `| ${n} | ${median(all).toFixed(0)} | ${Math.min(...all).toFixed(0)}–${
        Math.max(...all).toFixed(0)
      } | ${speedUp.toFixed(2)}× | ≥ ${(0.9 * n).toFixed(1)}× ${ok ? "met" : "MISSED"} |`,
    );
  }
  if (!met) Deno.exitCode = 1;
} finally {
  await Promise.all(servers.map(stopServer));
}
