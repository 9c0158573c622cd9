/**
 * The client's own cost per call on Deno, alone (a few seconds): the client-only group of
 * `deno task bench` (see `bench/_client_only.ts`), with its frames taken from an in-process stub
 * server that is closed before the rounds start.
 *
 * ```sh
 * deno task bench:client          # 21 rounds
 * deno task bench:client --json   # the per-round samples, for a script
 * ```
 *
 * @module
 */
import process from "node:process";
import { RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import {
  CLIENT_ONLY_ROUNDS,
  clientOnlyTable,
  runClientOnly,
  serverFrames,
} from "./_client_only.ts";

const server = await startStubServer();
let frames;
try {
  frames = await serverFrames(WebSocket, server.url);
} finally {
  await server.close();
}
const clientOnly = await runClientOnly({
  Client: RealmWebSocketClient,
  cpuMicros: () => {
    const usage = process.cpuUsage();
    return usage.user + usage.system;
  },
  frames,
  rounds: CLIENT_ONLY_ROUNDS,
  log: (line) => console.error(line),
});
const runtime = `Deno ${Deno.version.deno}`;
if (Deno.args.includes("--json")) {
  console.log(JSON.stringify({ runtime, clientOnly }));
} else {
  console.log(
    `\n${runtime}, the client's own cost on a fake socket, ` +
      `${clientOnly.sequential.client.length} rounds:\n`,
  );
  console.log(clientOnlyTable([{ runtime, clientOnly }]));
}
