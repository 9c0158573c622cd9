/**
 * The stub server as its own process, for the benchmarks: the same script runs on Deno (through
 * deno.json's import map) and on Node and Bun (from the installed npm package), so that the
 * server's work never shares the measured client's CPU time or event loop.
 *
 * ```sh
 * node bench/_stub_server.mjs [tokenDelayMs]
 * ```
 *
 * Prints its URL on one line, and exits when its standard input closes.
 *
 * @module
 */
import process from "node:process";
import { startStubServer } from "@realm-ai/ws-client/testing";

// Long streams (a test extra): the benchmarks ask for more than the real simulation's 13 tokens.
const server = await startStubServer({
  tokenDelayMs: Number(process.argv[2] ?? 0),
  longStreams: true,
});
process.stdout.write(`${server.url}\n`);
process.stdin.resume();
process.stdin.on("end", async () => {
  await server.close();
  process.exit(0);
});
