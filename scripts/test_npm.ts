/**
 * Tests the npm package as users install it, on every runtime it supports.
 *
 * 1. builds `npm/` (`scripts/build_npm.ts`) and packs it with `npm pack`;
 * 2. lints the tarball with `publint` and `@arethetypeswrong/cli`;
 * 3. installs the tarball into a fresh temporary project (with the test tools), and Node 22 and
 *    Bun from npm into another;
 * 4. runs the one behaviour suite (`tests/npm/behaviour.mjs`) against the installed package on
 *    Node 20 (the `ws` fallback), Node 22 and Bun (the global `WebSocket`), and in a headless
 *    Chromium served from loopback; runs the CommonJS round trip on both Nodes; checks the
 *    stub server's frames, close codes and fault switches on Node and Bun (`tests/npm/stub.mjs`);
 *    the diagnostics channels on Node 20, Node 22 and Bun (`tests/npm/telemetry.mjs`), and the
 *    OpenTelemetry recipe the package ships, copied out of it and run on Node 22 with the real
 *    OpenTelemetry SDK (`tests/npm/opentelemetry.mjs`);
 *    bundles the package for the browser (no `ws` inside) and type-checks a strict consumer, with
 *    the DOM library and as a Node project without it (`node16` and `bundler` resolution);
 * 5. drives the `./ai-sdk` entry with the real AI SDK on Node 22 (`tests/npm/ai_sdk.mjs`), with
 *    `ai` 7 and with `ai` 6 (installed as `ai6`), which both take its `LanguageModelV3` models;
 *    runs the README's AI SDK snippet as written on Node 22 (a stub on 127.0.0.1:8080 for its
 *    default provider), which must end by itself.
 * 6. checks the tarball's file list (builds, shipped sources, README, CHANGELOG, both licenses,
 *    the OpenTelemetry recipe), and that the runs on Node 20, Node 22 and Bun leave stderr
 *    empty, pools of 16 to 64 sockets included (`tests/npm/quiet.mjs`).
 * 7. runs the package's `realm-conformance` command, as installed from the tarball, against a
 *    stub server (open; authenticated with a rate limit) on Node 20 (ws), Node 22 and Bun.
 *
 * Needs `node` and `npm` on PATH, the npm registry, port 8080 free on 127.0.0.1 (the README's
 * AI SDK snippet talks to ws://localhost:8080), and Chromium at `/usr/bin/chromium` (or
 * `CHROMIUM=/path`). On Debian or Ubuntu: `apt-get update && apt-get install -y chromium`.
 * Node 22 and Bun are fetched from npm (`REALM_NODE22` and `REALM_BUN` override the versions);
 * when the machine's Node is not 20, Node 20 is fetched too (`REALM_NODE20`).
 *
 * Usage: `deno task test:npm [--keep]` (`--keep` leaves the temporary projects for a look).
 *
 * @module
 */

import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startStubServer } from "../testing.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Exact versions of everything the run installs, for a run that is the same on every machine. */
const PINS = {
  node22: Deno.env.get("REALM_NODE22") ?? "22.23.3",
  node20: Deno.env.get("REALM_NODE20") ?? "20.20.2",
  bun: Deno.env.get("REALM_BUN") ?? "1.4.5",
  playwright: "1.65.1",
  esbuild: "0.28.2",
  typescript: "5.9.3",
  // Node's own types, for the type check of a Node project without the DOM library.
  typesNode: "22.20.7",
  publint: "0.3.25",
  attw: "0.18.5",
  // The AI SDK for the ./ai-sdk entry: the current major, the previous one, and ai's zod peer.
  ai: "7.0.173",
  ai6: "6.0.326",
  zod: "4.6.7",
  // OpenTelemetry, for the recipe the package ships.
  otelApi: "1.9.1",
  otelSdk: "2.12.1",
};
const CHROMIUM_APT = "apt-get update && apt-get install -y chromium";

const keep = Deno.args.includes("--keep");
const chromium = Deno.env.get("CHROMIUM") ?? "/usr/bin/chromium";
const npmEnv = {
  npm_config_audit: "false",
  npm_config_fund: "false",
  npm_config_update_notifier: "false",
  npm_config_loglevel: "error",
};

interface StepResult {
  name: string;
  ok: boolean;
  passed: number;
  failed: number;
  seconds: number;
}

const results: StepResult[] = [];

/**
 * Runs a command, printing its output prefixed with the step's name, and returns its exit
 * status and output. Kills it after `timeoutMs`.
 */
async function exec(
  name: string,
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number; quiet?: boolean } = {},
): Promise<{ success: boolean; output: string; stderr: string[] }> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.timeoutMs ?? 180_000);
  const child = new Deno.Command(command, {
    args,
    cwd: options.cwd ?? root,
    env: { ...npmEnv, ...options.env },
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    signal: controller.signal,
  }).spawn();
  const lines: string[] = [];
  const stderr: string[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>, toStderr: boolean) => {
    let pending = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      pending += chunk;
      const parts = pending.split("\n");
      pending = parts.pop()!;
      for (const line of parts) record(line, toStderr);
    }
    if (pending) record(pending, toStderr);
  };
  const record = (line: string, toStderr: boolean) => {
    // npm repeats a warning about a config key of this machine on every call.
    if (/npm warn Unknown user config/.test(line)) return;
    lines.push(line);
    if (toStderr) stderr.push(line);
    if (!options.quiet) console.log(`  [${name}]${toStderr ? " (stderr)" : ""} ${line}`);
  };
  try {
    const [status] = await Promise.all([
      child.status,
      pump(child.stdout, false),
      pump(child.stderr, true),
    ]);
    if (controller.signal.aborted) lines.push(`(killed after ${options.timeoutMs ?? 180_000} ms)`);
    return {
      success: status.success && !controller.signal.aborted,
      output: lines.join("\n"),
      stderr,
    };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs one step and records it; a suite's counts come from its last `N passed, N failed`. With
 * `stderrEmpty`, anything on stderr (a runtime warning the package caused) fails the step too.
 */
async function step(
  name: string,
  command: string,
  args: string[],
  options: {
    cwd?: string;
    env?: Record<string, string>;
    timeoutMs?: number;
    stderrEmpty?: true;
  } = {},
): Promise<StepResult> {
  console.log(`\n=== ${name}`);
  const started = performance.now();
  const { success, output, stderr } = await exec(name, command, args, options);
  const counts = [...output.matchAll(/(\d+) passed, (\d+) failed/g)].at(-1);
  let passed = counts ? Number(counts[1]) : success ? 1 : 0;
  let failed = counts ? Number(counts[2]) : success ? 0 : 1;
  if (options.stderrEmpty) {
    if (stderr.length === 0) passed++;
    else {
      failed++;
      console.log(`  [${name}] not ok - stderr must be empty; it had ${stderr.length} line(s)`);
    }
  }
  // A crash after its report still fails the step.
  if (!success && failed === 0) failed = 1;
  const result: StepResult = {
    name,
    ok: success && failed === 0,
    passed,
    failed,
    seconds: (performance.now() - started) / 1000,
  };
  results.push(result);
  console.log(`=== ${name}: ${result.ok ? "ok" : "FAILED"} (${result.seconds.toFixed(1)} s)`);
  return result;
}

/** Runs a setup command; throws with its output when it fails. */
async function setup(
  name: string,
  command: string,
  args: string[],
  cwd?: string,
  timeoutMs?: number,
) {
  console.log(`--- ${name}`);
  const { success, output } = await exec(name, command, args, { cwd, timeoutMs, quiet: true });
  if (!success) throw new Error(`${name} failed:\n${output}`);
  return output;
}

/** What `npm pack --json` reports of one tarball (the fields used here). */
interface PackResult {
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: { path: string }[];
}

/**
 * Files the tarball must hold besides the builds: npm adds only a README by itself. The
 * OpenTelemetry recipe is there for a user to copy.
 */
const PACKED_DOCUMENTS = [
  "README.md",
  "CHANGELOG.md",
  "LICENSE-MIT",
  "LICENSE-APACHE",
  "examples/opentelemetry.ts",
];
/** Each entry's code and declarations, in both builds. */
const PACKED_ENTRIES = ["mod", "node", "testing", "testing_node"].flatMap((name) =>
  ["esm", "cjs"].flatMap((build) => [`${build}/${name}.js`, `${build}/${name}.d.ts`])
);

/** The ES-module-only `./conformance` entry and the package's `realm-conformance` command. */
const PACKED_ESM_ONLY = ["conformance", "conformance_node", "conformance_bin"].flatMap((name) => [
  `esm/${name}.js`,
  `esm/${name}.d.ts`,
]);

/**
 * Records a step checking the tarball's file list: the documents, package.json and every entry
 * are there, and nothing outside the builds, the shipped sources and the documents is.
 */
function checkPackedFiles(paths: string[]): void {
  console.log("\n=== packed files");
  const have = new Set(paths);
  const problems: string[] = [];
  for (
    const path of [
      "package.json",
      "cjs/package.json",
      ...PACKED_DOCUMENTS,
      ...PACKED_ENTRIES,
      ...PACKED_ESM_ONLY,
    ]
  ) {
    if (!have.has(path)) problems.push(`missing: ${path}`);
  }
  for (const path of paths) {
    const allowed = /^(esm|cjs|ts)\//.test(path) || path === "package.json" ||
      PACKED_DOCUMENTS.includes(path);
    if (!allowed) problems.push(`unexpected: ${path}`);
  }
  for (const problem of problems) console.log(`  [packed files] not ok - ${problem}`);
  const ok = problems.length === 0;
  console.log(`=== packed files: ${ok ? "ok" : "FAILED"} (${paths.length} files)`);
  results.push({
    name: "packed files",
    ok,
    passed: ok ? 1 : 0,
    failed: problems.length,
    seconds: 0,
  });
}

/** The first code block of the README section headed `heading`. */
async function readmeSnippet(heading: string): Promise<string> {
  const readme = await Deno.readTextFile(join(root, "README.md"));
  const section = readme.slice(readme.indexOf(`\n## ${heading}\n`));
  const block = /```ts[^\n]*\n([\s\S]*?)```/.exec(section);
  if (!block) throw new Error(`README.md: no code block under "## ${heading}"`);
  return block[1];
}

/**
 * Runs the README's AI SDK snippet as written, from the installed package on Node 22, and checks
 * that it ends by itself (an open socket would keep it running until the step's time limit). Its
 * default provider talks to ws://localhost:8080: a stub listens there; its `createRealm` server
 * and key become a second stub's.
 */
async function readmeAiSdkSnippet(project: string, node22: string, node22Version: string) {
  const name = `README's AI SDK snippet ends by itself, Node ${node22Version}`;
  const snippet = await readmeSnippet("Use with the AI SDK");
  const key = /apiKey: "([^"]+)"/.exec(snippet)?.[1];
  const local = await startStubServer({ port: 8080, tokenDelayMs: 5 }).catch((error) => {
    console.log(`\n=== ${name}\n  [${name}] not ok - cannot listen on 127.0.0.1:8080: ${error}`);
    results.push({ name, ok: false, passed: 0, failed: 1, seconds: 0 });
  });
  if (!local || !key) return;
  const remote = await startStubServer({ tokenDelayMs: 5, apiKeys: { [key]: "tenant-readme" } });
  try {
    await Deno.writeTextFile(
      join(project, "readme_ai_sdk.mjs"),
      snippet.replace(/"wss:\/\/realm\.example\.com"/, JSON.stringify(remote.url)),
    );
    const result = await step(name, node22, ["readme_ai_sdk.mjs"], {
      cwd: project,
      timeoutMs: 20_000,
      stderrEmpty: true,
    });
    if (result.ok && (local.callCount !== 1 || remote.callCount !== 1)) {
      console.log(
        `  [${name}] not ok - calls: ${local.callCount} local, ${remote.callCount} remote`,
      );
      Object.assign(result, { ok: false, failed: result.failed + 1 });
    }
  } finally {
    await local.close();
    await remote.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function version(command: string): Promise<string> {
  const { success, output } = await exec("version", command, ["--version"], { quiet: true });
  if (!success) throw new Error(`${command} --version failed:\n${output}`);
  return output.trim().split("\n").at(-1)!.trim();
}

async function main(): Promise<number> {
  const started = performance.now();
  if (!await exists(chromium)) {
    console.error(
      `Chromium not found at ${chromium}. Install it first (Debian/Ubuntu: ${CHROMIUM_APT}), ` +
        "or point CHROMIUM at a Chrome/Chromium binary.",
    );
    return 1;
  }
  const systemNode = await version("node");
  console.log(`machine: Node ${systemNode}, npm ${await version("npm")}, ${chromium}`);

  const temp = await Deno.makeTempDir({ prefix: "realm-npm-test-" });
  try {
    // --- build, pack, install ----------------------------------------------------------------
    await setup(
      "build",
      Deno.execPath(),
      [
        "run",
        "--lock=scripts/deno.lock",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        "scripts/build_npm.ts",
      ],
    );
    const packed = JSON.parse(
      await setup(
        "npm pack",
        "npm",
        ["pack", "--json", "--pack-destination", temp],
        join(root, "npm"),
      ),
    ) as PackResult[];
    const tarball = join(temp, packed[0].filename);
    console.log(
      `    ${packed[0].filename}: ${packed[0].entryCount} files, ${packed[0].size} B packed, ` +
        `${packed[0].unpackedSize} B unpacked`,
    );
    checkPackedFiles(packed[0].files.map((file) => file.path));

    const project = join(temp, "project");
    const tools = join(temp, "tools");
    await Deno.mkdir(project);
    await Deno.mkdir(tools);
    const manifest = { private: true, type: "module", name: "realm-npm-test" };
    await Deno.writeTextFile(join(project, "package.json"), JSON.stringify(manifest, null, 2));
    await Deno.writeTextFile(
      join(tools, "package.json"),
      JSON.stringify({ private: true, name: "realm-npm-test-tools" }, null, 2),
    );
    for await (const entry of Deno.readDir(join(root, "tests", "npm"))) {
      if (entry.isFile) {
        await Deno.copyFile(join(root, "tests", "npm", entry.name), join(project, entry.name));
      }
    }
    const needNode20 = !systemNode.startsWith("v20.");
    const runtimes = [`node22@npm:node@${PINS.node22}`, `bun@${PINS.bun}`];
    if (needNode20) runtimes.push(`node20@npm:node@${PINS.node20}`);
    await Promise.all([
      setup(
        "npm install (package and test tools)",
        "npm",
        [
          "install",
          tarball,
          `playwright-core@${PINS.playwright}`,
          `esbuild@${PINS.esbuild}`,
          `typescript@${PINS.typescript}`,
          `@types/node@${PINS.typesNode}`,
          `publint@${PINS.publint}`,
          `@arethetypeswrong/cli@${PINS.attw}`,
          `ai@${PINS.ai}`,
          `ai6@npm:ai@${PINS.ai6}`,
          `zod@${PINS.zod}`,
          `@opentelemetry/api@${PINS.otelApi}`,
          `@opentelemetry/sdk-trace-base@${PINS.otelSdk}`,
          `@opentelemetry/sdk-metrics@${PINS.otelSdk}`,
        ],
        project,
        600_000,
      ),
      setup("npm install (Node 22, Bun)", "npm", ["install", ...runtimes], tools, 600_000),
    ]);
    const bin = (name: string) => join(project, "node_modules", ".bin", name);
    const node22 = join(tools, "node_modules", "node22", "bin", "node");
    const node20 = needNode20 ? join(tools, "node_modules", "node20", "bin", "node") : "node";
    const bun = join(tools, "node_modules", ".bin", "bun");
    const node22Version = await version(node22);
    const node20Version = await version(node20);
    const bunVersion = await version(bun);
    if (!node20Version.startsWith("v20.") || !node22Version.startsWith("v22.")) {
      throw new Error(`expected Node 20 and 22, got ${node20Version} and ${node22Version}`);
    }

    // --- lint the tarball ---------------------------------------------------------------------
    await step("publint", bin("publint"), ["run", tarball, "--strict"], { cwd: project });
    await step("attw", bin("attw"), [
      tarball,
      "--no-emoji",
      "--exclude-entrypoints",
      "./conformance",
    ], { cwd: project });
    // ES modules only: `require` of it is meant to fail.
    await step("attw (./conformance, ES modules only)", bin("attw"), [
      tarball,
      "--no-emoji",
      "--profile",
      "esm-only",
      "--entrypoints",
      "./conformance",
    ], { cwd: project });
    await step("types (tsc, nodenext, strict)", bin("tsc"), [
      "--noEmit",
      "--strict",
      "--skipLibCheck",
      "false",
      "--module",
      "nodenext",
      "--target",
      "es2022",
      "--lib",
      "es2022,dom,dom.iterable",
      "types_check.mts",
    ], { cwd: project });
    // A Node project without the DOM library: the declarations must name no DOM-only type.
    for (const [module, resolution] of [["node16", "node16"], ["esnext", "bundler"]]) {
      await step(`types (tsc, Node without DOM, ${resolution})`, bin("tsc"), [
        "--noEmit",
        "--strict",
        "--skipLibCheck",
        "false",
        "--module",
        module,
        "--moduleResolution",
        resolution,
        "--target",
        "es2022",
        "--lib",
        "es2023",
        "--types",
        "node",
        "types_check.mts",
      ], { cwd: project });
    }
    await step("browser bundle (esbuild)", node20, ["bundle_check.mjs"], { cwd: project });

    // --- the behaviour suite on every runtime -------------------------------------------------
    // stderrEmpty: the package prints nothing unasked, warnings included.
    const quiet = { cwd: project, stderrEmpty: true } as const;
    await step(`Node ${node20Version} ESM (ws)`, node20, ["run.mjs", "fallback"], quiet);
    await step(`Node ${node20Version} CJS (ws)`, node20, ["roundtrip.cjs", "fallback"], quiet);
    await step(`Node ${node22Version} ESM`, node22, ["run.mjs", "global"], quiet);
    await step(`Node ${node22Version} CJS`, node22, ["roundtrip.cjs", "global"], quiet);
    await step(`Bun ${bunVersion}`, bun, ["run.mjs", "global"], quiet);
    await step(`quiet pools, Node ${node20Version}`, node20, ["quiet.mjs"], quiet);
    await step(`quiet pools, Node ${node22Version}`, node22, ["quiet.mjs"], quiet);
    await step(`quiet pools, Bun ${bunVersion}`, bun, ["quiet.mjs"], quiet);
    await step(`lifecycle, Node ${node20Version} (ws)`, node20, ["lifecycle.mjs"], quiet);
    await step(`lifecycle, Node ${node22Version}`, node22, ["lifecycle.mjs"], quiet);
    await step(`lifecycle, Bun ${bunVersion}`, bun, ["lifecycle.mjs"], quiet);
    await step(`stub server, Node ${node20Version}`, node20, ["stub.mjs"], { cwd: project });
    await step(`stub server, Node ${node22Version}`, node22, ["stub.mjs"], { cwd: project });
    await step(`stub server, Bun ${bunVersion}`, bun, ["stub.mjs"], { cwd: project });
    await step(`AI SDK ${PINS.ai}, Node ${node22Version}`, node22, ["ai_sdk.mjs", "ai"], {
      cwd: project,
    });
    await step(`AI SDK ${PINS.ai6}, Node ${node22Version}`, node22, ["ai_sdk.mjs", "ai6"], {
      cwd: project,
    });
    await readmeAiSdkSnippet(project, node22, node22Version);
    // The recipe as a user takes it: copied out of the installed package, run as it is.
    await Deno.copyFile(
      join(project, "node_modules", "@realm-ai", "ws-client", "examples", "opentelemetry.ts"),
      join(project, "opentelemetry.ts"),
    );
    await step(
      `OpenTelemetry recipe, Node ${node22Version}`,
      node22,
      ["opentelemetry.mjs"],
      quiet,
    );
    await step(`telemetry, Node ${node20Version}`, node20, ["telemetry.mjs"], quiet);
    await step(`telemetry, Node ${node22Version}`, node22, ["telemetry.mjs"], quiet);
    await step(`telemetry, Bun ${bunVersion}`, bun, ["telemetry.mjs"], quiet);
    await step("Chromium", node20, ["browser.mjs"], {
      cwd: project,
      env: { CHROMIUM: chromium },
      timeoutMs: 240_000,
    });

    // --- the realm-conformance command, from the tarball, against the stub ----------------------
    const command = bin("realm-conformance");
    const open = await startStubServer({ tokenDelayMs: 5 });
    // A key per run: the rate-limit probe leaves its tenant's bucket empty.
    const guarded = await startStubServer({
      tokenDelayMs: 5,
      apiKeys: { "sk-node": "tenant-node", "sk-bun": "tenant-bun" },
      rateLimit: { perMinute: 600, burst: 60 },
    });
    try {
      const all = (
        key: string,
      ) => [guarded.url, "--api-key", key, "--rate-limit", "--fail-on-skip"];
      // As npx runs it: the bin's own `#!/usr/bin/env node`.
      await step(`realm-conformance (bin), Node ${systemNode}`, command, [open.url], quiet);
      await step(
        `realm-conformance --api-key, Node ${node20Version} (ws)`,
        node20,
        [command, ...all("sk-node")],
        quiet,
      );
      await step(`realm-conformance, Node ${node22Version}`, node22, [command, open.url], quiet);
      await step(`realm-conformance --api-key, Bun ${bunVersion}`, bun, [
        command,
        ...all("sk-bun"),
      ], quiet);
    } finally {
      await open.close();
      await guarded.close();
    }
  } catch (error) {
    console.error(`\n${error instanceof Error ? error.message : error}`);
    results.push({ name: "setup", ok: false, passed: 0, failed: 1, seconds: 0 });
  } finally {
    if (keep) console.log(`\nkept ${temp}`);
    else await Deno.remove(temp, { recursive: true }).catch(() => {});
  }

  console.log("\n=== summary");
  for (const r of results) {
    const counts = `${r.passed} passed, ${r.failed} failed`;
    console.log(
      `${r.ok ? "ok    " : "FAILED"} ${r.name.padEnd(34)} ${counts.padEnd(22)} ${
        r.seconds.toFixed(1)
      } s`,
    );
  }
  const passed = results.reduce((sum, r) => sum + r.passed, 0);
  const failed = results.reduce((sum, r) => sum + r.failed, 0);
  const minutes = ((performance.now() - started) / 60_000).toFixed(1);
  console.log(`npm package, all runtimes (${minutes} min): ${passed} passed, ${failed} failed`);
  return results.every((r) => r.ok) ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
