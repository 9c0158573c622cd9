/**
 * The benchmarks on Deno: the client (`mod.ts`) against a stub server and an unpaced server, each
 * in its own process, beside a raw-WebSocket loop in the same run. Prints one Markdown table (see
 * `bench/_harness.ts` for the groups), then a small one of the client's own cost per call against
 * an in-process fake socket (see `bench/_client_only.ts`).
 *
 * ```sh
 * deno task bench            # 7 rounds a group, 21 client-only; REALM_BENCH_ROUNDS=5 for fewer
 * deno task bench --json     # the raw samples, for a script
 * ```
 *
 * @module
 */
import process from "node:process";
import { RealmWebSocketClient } from "../mod.ts";
import { type Report, runBenchmarks, table } from "./_harness.ts";
import {
  CLIENT_ONLY_ROUNDS,
  type ClientOnlyReport,
  clientOnlyTable,
  runClientOnly,
  serverFrames,
} from "./_client_only.ts";
import { type ServerProcess, startServerProcess } from "./_process.ts";

const root = new URL("..", import.meta.url).pathname;
const rounds = Number(Deno.env.get("REALM_BENCH_ROUNDS") ?? 7);
const net = "--allow-net=127.0.0.1,localhost";

const servers: ServerProcess[] = [];
let report: Report;
let clientOnly: ClientOnlyReport;
try {
  const deno = Deno.execPath();
  const stub = (delay: number) =>
    startServerProcess(deno, [
      "run",
      net,
      "--allow-env",
      "--allow-read",
      "bench/_stub_server.mjs",
      String(delay),
    ], root);
  const [stub0, stub10, unpaced] = await Promise.all([
    stub(0),
    stub(10),
    startServerProcess(deno, ["run", net, "bench/_unpaced_server.ts"], root),
  ]);
  servers.push(stub0, stub10, unpaced);
  const cpu = process.cpuUsage;
  report = await runBenchmarks({
    createClient: (url, connections) =>
      new RealmWebSocketClient({ url, model: "llama-2-7b", connections }),
    WebSocket,
    cpuMicros: () => {
      const usage = cpu();
      return usage.user + usage.system;
    },
    stubUrl: stub0.url,
    slowStubUrl: stub10.url,
    unpacedUrl: unpaced.url,
    rounds,
    log: (line) => console.error(line),
  });
  console.error(`client only: health() on a fake socket, ${CLIENT_ONLY_ROUNDS} rounds`);
  clientOnly = await runClientOnly({
    Client: RealmWebSocketClient,
    cpuMicros: () => {
      const usage = cpu();
      return usage.user + usage.system;
    },
    frames: await serverFrames(WebSocket, stub0.url),
    rounds: CLIENT_ONLY_ROUNDS,
    log: (line) => console.error(line),
  });
} finally {
  await Promise.all(servers.map((server) => server.stop()));
}

if (Deno.args.includes("--json")) {
  console.log(JSON.stringify({ runtime: `Deno ${Deno.version.deno}`, ...report, clientOnly }));
} else {
  const runtime = `Deno ${Deno.version.deno}`;
  console.log(`\n${runtime}, ${navigator.hardwareConcurrency} cores, ${rounds} rounds:\n`);
  console.log(table(report));
  console.log(
    `\nThe client's own cost on a fake socket, ${clientOnly.sequential.client.length} rounds:\n`,
  );
  console.log(clientOnlyTable([{ runtime, clientOnly }]));
}
