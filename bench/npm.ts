/**
 * The benchmarks on Node 20, Node 22 and Bun, through the npm build: builds and packs `npm/`,
 * installs it (and Node 22 and Bun from npm) under `.tmp/bench-npm/` (kept between runs), bundles
 * `bench/_npm_main.ts` against the installed package, and runs it on each runtime. The stub
 * servers run on Node from the installed package, the unpaced server on Deno, each in its own
 * process. Prints two tables per runtime: the harness's groups, and the client's own cost on a fake
 * socket (`bench/_client_only.ts`).
 *
 * ```sh
 * deno task bench:npm        # REALM_BENCH_ROUNDS=5 for fewer rounds (default 7)
 * ```
 *
 * @module
 */
// Inline, not in deno.json's imports: every `deno task` would fetch what is listed there.
// deno-lint-ignore no-import-prefix
import * as esbuild from "npm:esbuild@0.28.2";
import { join } from "node:path";
import { type Report, table } from "./_harness.ts";
import { type ClientOnlyReport, clientOnlyTable } from "./_client_only.ts";
import { type ServerProcess, startServerProcess } from "./_process.ts";

const root = new URL("..", import.meta.url).pathname;
const work = join(root, ".tmp", "bench-npm");
const project = join(work, "project");
const tools = join(work, "tools");
/** The versions `scripts/test_npm.ts` tests. */
const NODE22 = "22.23.3";
const NODE20 = "20.20.2";
const BUN = "1.4.5";
const rounds = Deno.env.get("REALM_BENCH_ROUNDS") ?? "7";

/** Runs a command to its end (at most `timeoutMs`); returns its stdout, throws on failure. */
async function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<string> {
  const output = await new Deno.Command(command, {
    args,
    cwd: options.cwd ?? root,
    env: { npm_config_audit: "false", npm_config_fund: "false", ...options.env },
    stdout: "piped",
    stderr: "inherit",
    signal: AbortSignal.timeout(options.timeoutMs ?? 300_000),
  }).output();
  if (!output.success) throw new Error(`${command} ${args.join(" ")} failed (${output.code})`);
  return new TextDecoder().decode(output.stdout);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

console.error("building and installing the npm package…");
await run(Deno.execPath(), [
  "run",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "scripts/build_npm.ts",
]);
await Deno.mkdir(project, { recursive: true });
await Deno.mkdir(tools, { recursive: true });
const packed = JSON.parse(
  await run("npm", ["pack", "--json", "--pack-destination", work], { cwd: join(root, "npm") }),
) as { filename: string }[];
await Deno.writeTextFile(
  join(project, "package.json"),
  JSON.stringify({ private: true, type: "module", name: "realm-bench-npm" }),
);
// The version does not change between builds: remove the last one, so that npm installs this one.
await Deno.remove(join(project, "node_modules", "@realm-ai"), { recursive: true }).catch(() => {});
await run("npm", ["install", "--no-save", join(work, packed[0].filename)], { cwd: project });
const systemNode = (await run("node", ["--version"])).trim();
const node22 = join(tools, "node_modules", "node22", "bin", "node");
const node20 = systemNode.startsWith("v20.")
  ? "node"
  : join(tools, "node_modules", "node20", "bin", "node");
const bun = join(tools, "node_modules", ".bin", "bun");
if (
  !(await exists(node22)) || !(await exists(bun)) || !(await exists(node20) || node20 === "node")
) {
  await Deno.writeTextFile(join(tools, "package.json"), JSON.stringify({ private: true }));
  const runtimes = [`node22@npm:node@${NODE22}`, `bun@${BUN}`];
  if (node20 !== "node") runtimes.push(`node20@npm:node@${NODE20}`);
  await run("npm", ["install", ...runtimes], { cwd: tools, timeoutMs: 600_000 });
}

await esbuild.build({
  entryPoints: [join(root, "bench", "_npm_main.ts")],
  outfile: join(project, "bench.mjs"),
  bundle: true,
  format: "esm",
  platform: "node",
  target: "es2022",
  external: ["@realm-ai/ws-client", "ws", "node:*"],
  logLevel: "error",
});
await esbuild.stop();
await Deno.copyFile(join(root, "bench", "_stub_server.mjs"), join(project, "stub_server.mjs"));

const servers: ServerProcess[] = [];
const reports: (Report & { runtime: string; clientOnly: ClientOnlyReport })[] = [];
try {
  const [stub0, stub10, unpaced] = await Promise.all([
    startServerProcess(node20, ["stub_server.mjs", "0"], project),
    startServerProcess(node20, ["stub_server.mjs", "10"], project),
    startServerProcess(
      Deno.execPath(),
      ["run", "--allow-net=127.0.0.1,localhost", "bench/_unpaced_server.ts"],
      root,
    ),
  ]);
  servers.push(stub0, stub10, unpaced);
  const env = {
    REALM_STUB_URL: stub0.url,
    REALM_SLOW_STUB_URL: stub10.url,
    REALM_UNPACED_URL: unpaced.url,
    REALM_BENCH_ROUNDS: rounds,
  };
  for (const [name, command] of [["Node 20", node20], ["Node 22", node22], ["Bun", bun]]) {
    console.error(`\n${name}:`);
    const output = await run(command, ["bench.mjs"], { cwd: project, env });
    reports.push(JSON.parse(output.trim().split("\n").at(-1)!));
  }
} finally {
  await Promise.all(servers.map((server) => server.stop()));
}

for (const report of reports) {
  console.log(
    `\n${report.runtime} (npm build), ${navigator.hardwareConcurrency} cores, ${rounds} rounds:\n`,
  );
  console.log(table(report));
  console.log(
    `\nThe client's own cost on a fake socket, ${report.clientOnly.sequential.client.length} rounds:\n`,
  );
  console.log(clientOnlyTable([report]));
}
