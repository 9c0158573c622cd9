/**
 * A conformance check of a running Realm server: does this client work with the server you run,
 * with its authentication and its rate limit? It runs a fixed list of checks with calls that
 * change nothing on the server: the handshake and the welcome frame, tenant handling, `health`,
 * `metadata`, `generate` whole and streamed (tokens in order, the terminal frame,
 * `max_tokens: 0`), the error frames for bad parameters, unknown functions and unparseable frames,
 * authentication (a key accepted, a wrong key and no key refused) when the server asks for a key,
 * several sockets at once, and, when asked, a short rate-limit probe (which leaves the key
 * rate-limited for a while). It uses the public client wherever it can, and a bare WebSocket for
 * what the client rightly refuses to send.
 *
 * As a command (see `docs/conformance.md`):
 *
 * ```sh
 * deno run --allow-net jsr:@realm-ai/ws-client/conformance ws://127.0.0.1:8080
 * npx -p @realm-ai/ws-client realm-conformance wss://realm.example.com --api-key "$KEY"
 * ```
 *
 * It prints a table (check, result, time, detail), exits with 1 when a check fails and with 2 on
 * a bad command line; `--json` prints one JSON report instead, `--help` lists the options.
 *
 * @example Check a server from code (here the stub server)
 * ```ts
 * import { runConformance } from "@realm-ai/ws-client/conformance";
 * import { startStubServer } from "@realm-ai/ws-client/testing";
 *
 * const server = await startStubServer({ tokenDelayMs: 0 });
 * try {
 *   const { mode, failed, checks } = await runConformance({ url: server.url });
 *   // mode: "open", failed: 0, checks: [{ name, status, detail, ms }, ...], one per check
 * } finally {
 *   await server.close();
 * }
 * ```
 *
 * @module
 */

import { RealmError } from "./src/errors.ts";
import { RealmWebSocketClient } from "./src/client.ts";
import {
  type CheckResult,
  CHECKS,
  Run,
  runCheck,
  type RunSettings,
} from "./src/conformance/checks.ts";
import {
  formatRow,
  parseCommandLine,
  summaryLine,
  TABLE_HEADER,
  TablePrinter,
  USAGE,
  UsageError,
} from "./src/conformance/cli.ts";

export type { CheckResult, CheckStatus } from "./src/conformance/checks.ts";

/**
 * What {@linkcode runConformance} checks and how.
 *
 * @example
 * ```ts
 * import type { ConformanceOptions } from "@realm-ai/ws-client/conformance";
 *
 * const options: ConformanceOptions = {
 *   url: "wss://realm.example.com",
 *   apiKey: "sk_live_...",
 *   rateLimit: false,
 * };
 * ```
 */
export interface ConformanceOptions {
  /** The server's address, `ws://` or `wss://`. */
  url: string;
  /** API key of an auth-enabled server; the auth checks need it. */
  apiKey?: string;
  /** Allow sending the key over `ws://` to a host that is not loopback. Default `false`. */
  allowInsecureAuth?: boolean;
  /**
   * Also probe the rate limit: calls until one is refused, which leaves the key's bucket empty
   * for a while. Default `false` (the check is skipped).
   */
  rateLimit?: boolean;
  /** The model each `generate` names. Default `"default"`. */
  model?: string;
  /** Time limit of each check in milliseconds (the rate-limit probe gets six). Default `10000`. */
  timeout?: number;
  /** Sockets of the "several sockets" check. Default `4`. */
  connections?: number;
  /** Called as each check starts and ends, for a progress display. */
  onProgress?: (event: ConformanceProgress) => void;
}

/**
 * A check starting or done, as {@linkcode ConformanceOptions.onProgress} receives it.
 *
 * @example
 * ```ts
 * import type { ConformanceProgress } from "@realm-ai/ws-client/conformance";
 *
 * const log = (event: ConformanceProgress) =>
 *   event.type === "done" ? `${event.result.name}: ${event.result.status}` : event.name;
 * ```
 */
export type ConformanceProgress =
  | { type: "start"; name: string; index: number; total: number }
  | { type: "done"; result: CheckResult; index: number; total: number };

/**
 * What {@linkcode runConformance} found.
 *
 * @example
 * ```ts
 * import type { ConformanceReport } from "@realm-ai/ws-client/conformance";
 *
 * const failures = (report: ConformanceReport) =>
 *   report.checks.filter((check) => check.status === "fail").map((check) => check.name);
 * ```
 */
export interface ConformanceReport {
  /** The server's address. */
  url: string;
  /** `"open"` or `"authenticated"` as its first frame said; `null` when no Realm server answered. */
  mode: "open" | "authenticated" | null;
  /** The version its welcome frame named, when one was seen. */
  version: string | null;
  /** How many checks passed. */
  passed: number;
  /** How many checks failed: the command exits with 1 when there is one. */
  failed: number;
  /** How many checks were not run here, each with its reason. */
  skipped: number;
  /** How long the run took, in milliseconds. */
  ms: number;
  /** Every check, in the order they ran. */
  checks: CheckResult[];
}

/**
 * The names of the checks, in the order they run.
 *
 * @example
 * ```ts
 * import { CONFORMANCE_CHECKS } from "@realm-ai/ws-client/conformance";
 *
 * const first = CONFORMANCE_CHECKS[0]; // "welcome frame"
 * ```
 */
export const CONFORMANCE_CHECKS: readonly string[] = CHECKS.map((check) => check.name);

/**
 * Runs every check against the server at `options.url` and resolves with the report; a failing
 * check is in the report, never a rejection.
 *
 * @throws {RealmError} `INVALID_OPTIONS` for options the client refuses (a bad URL, a key over
 * `ws://` to a host that is not loopback without `allowInsecureAuth`), before anything is sent.
 * @throws {RangeError} for a `timeout` or `connections` that is not a whole number ≥ 1.
 *
 * @example
 * ```ts
 * import { runConformance } from "@realm-ai/ws-client/conformance";
 * import { startStubServer } from "@realm-ai/ws-client/testing";
 *
 * const server = await startStubServer({ apiKeys: { "sk_test": "tenant-a" }, tokenDelayMs: 0 });
 * try {
 *   const report = await runConformance({ url: server.url, apiKey: "sk_test" });
 *   const ok = report.failed === 0; // true
 * } finally {
 *   await server.close();
 * }
 * ```
 */
export async function runConformance(options: ConformanceOptions): Promise<ConformanceReport> {
  const run = new Run(checkedSettings(options));
  const started = performance.now();
  const checks: CheckResult[] = [];
  const total = CHECKS.length;
  for (const [index, check] of CHECKS.entries()) {
    options.onProgress?.({ type: "start", name: check.name, index, total });
    const result = await runCheck(check, run);
    checks.push(result);
    options.onProgress?.({ type: "done", result, index, total });
  }
  const count = (status: CheckResult["status"]) =>
    checks.filter((check) => check.status === status).length;
  return {
    url: run.settings.url,
    mode: run.mode ?? null,
    version: run.version ?? null,
    passed: count("pass"),
    failed: count("fail"),
    skipped: count("skip"),
    ms: Math.round(performance.now() - started),
    checks,
  };
}

/** The run's settings, checked as the client checks its options; throws before anything is sent. */
function checkedSettings(options: ConformanceOptions): RunSettings {
  const settings = {
    url: options?.url,
    apiKey: options.apiKey === "" ? undefined : options.apiKey,
    allowInsecureAuth: options.allowInsecureAuth ?? false,
    rateLimit: options.rateLimit ?? false,
    model: options.model ?? "default",
    timeoutMs: wholeNumber("timeout", options.timeout ?? 10_000),
    connections: wholeNumber("connections", options.connections ?? 4),
  };
  // The client checks the URL, the key's transport and the model as it would for any user.
  new RealmWebSocketClient({
    url: settings.url,
    model: settings.model,
    apiKey: settings.apiKey,
    allowInsecureAuth: settings.allowInsecureAuth,
  });
  return settings;
}

function wholeNumber(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a whole number ≥ 1, got ${value}`);
  }
  return value;
}

/**
 * Where {@linkcode conformanceMain} prints: the report on `write`, a bad command line on
 * `writeError`; `isTerminal` turns the progress line on.
 *
 * @example Collect the output in memory
 * ```ts
 * import type { ConformanceOutput } from "@realm-ai/ws-client/conformance";
 *
 * let text = "";
 * const output: ConformanceOutput = {
 *   write: (chunk) => (text += chunk),
 *   writeError: (chunk) => (text += chunk),
 *   isTerminal: false,
 * };
 * ```
 */
export interface ConformanceOutput {
  /** Writes a chunk of the report (lines end with `\n`). */
  write(text: string): void;
  /** Writes a chunk of an error message. */
  writeError(text: string): void;
  /** Whether `write` goes to a terminal: then a progress line shows the running check. */
  readonly isTerminal: boolean;
}

/**
 * The command: parses `args` (the command line without the program), runs the checks, prints
 * the table or the JSON report, and resolves with the exit status (0 passed, 1 a check failed,
 * 2 a bad command line). It never exits the process itself.
 *
 * @example Run the command against the stub server, collecting its output
 * ```ts
 * import { conformanceMain } from "@realm-ai/ws-client/conformance";
 * import { startStubServer } from "@realm-ai/ws-client/testing";
 *
 * const server = await startStubServer({ tokenDelayMs: 0 });
 * let printed = "";
 * const output = {
 *   write: (text: string) => (printed += text),
 *   writeError: (text: string) => (printed += text),
 *   isTerminal: false,
 * };
 * try {
 *   const status = await conformanceMain([server.url, "--json"], output);
 *   const report = JSON.parse(printed); // status 0, report.failed 0
 * } finally {
 *   await server.close();
 * }
 * ```
 */
export async function conformanceMain(
  args: readonly string[],
  output: ConformanceOutput = defaultOutput(),
): Promise<number> {
  let line;
  try {
    line = parseCommandLine(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    output.writeError(`${error.message}\n(--help lists the options)\n`);
    return 2;
  }
  if (line === undefined) {
    output.write(`${USAGE}\n`);
    return 0;
  }
  const options: ConformanceOptions = {
    url: line.url,
    apiKey: line.apiKey,
    allowInsecureAuth: line.allowInsecureAuth,
    rateLimit: line.rateLimit,
    model: line.model,
    timeout: line.timeoutMs,
    connections: line.connections,
  };
  try {
    checkedSettings(options);
  } catch (error) {
    if (!(error instanceof RealmError && error.code === "INVALID_OPTIONS")) throw error;
    // The client names its option; on the command line it is a flag.
    const message = error.message.replace(
      "`allowInsecureAuth: true`",
      "pass --allow-insecure-auth",
    );
    output.writeError(`${message}\n`);
    return 2;
  }
  const printer = line.json ? undefined : new TablePrinter(output);
  printer?.line(`Checking ${line.url}\n`);
  printer?.line(TABLE_HEADER);
  const report = await runConformance({
    ...options,
    onProgress: printer &&
      ((event) => {
        if (event.type === "start") printer.started(event.name, event.index, event.total);
        else printer.line(formatRow(event.result));
      }),
  });
  if (printer) {
    printer.done();
    output.write(`\n${summaryLine(report, report.ms)}\n`);
  } else {
    output.write(`${JSON.stringify(report, null, 2)}\n`);
  }
  return report.failed > 0 || (line.failOnSkip && report.skipped > 0) ? 1 : 0;
}

interface DenoLike {
  args: string[];
  exit(code: number): never;
  stdout: WritableLike;
  stderr: WritableLike;
}
interface WritableLike {
  writeSync(bytes: Uint8Array): number;
  isTerminal(): boolean;
}
interface ProcessLike {
  stdout: { write(text: string): unknown; isTTY?: boolean };
  stderr: { write(text: string): unknown };
}

/** Standard output and error of Deno, or of Node and Bun. */
function defaultOutput(): ConformanceOutput {
  const deno = (globalThis as { Deno?: DenoLike }).Deno;
  if (deno !== undefined) {
    const encoder = new TextEncoder();
    const writeAll = (to: WritableLike) => (text: string) => {
      const bytes = encoder.encode(text);
      for (let done = 0; done < bytes.length;) done += to.writeSync(bytes.subarray(done));
    };
    return {
      write: writeAll(deno.stdout),
      writeError: writeAll(deno.stderr),
      isTerminal: deno.stdout.isTerminal(),
    };
  }
  const process = (globalThis as { process?: ProcessLike }).process;
  if (process !== undefined) {
    return {
      write: (text) => process.stdout.write(text),
      writeError: (text) => process.stderr.write(text),
      isTerminal: process.stdout.isTTY === true,
    };
  }
  return {
    write: (text) => console.log(text.replace(/\n$/, "")),
    writeError: (text) => console.error(text.replace(/\n$/, "")),
    isTerminal: false,
  };
}

// `deno run jsr:@realm-ai/ws-client/conformance <url>` and `deno task conformance <url>`; the npm
// package's `realm-conformance` bin does the same on Node and Bun.
if ((import.meta as ImportMeta & { main?: boolean }).main) {
  const deno = (globalThis as { Deno?: DenoLike }).Deno;
  if (deno !== undefined) conformanceMain(deno.args).then((status) => deno.exit(status));
}
