/**
 * The conformance command's command line: its flags, its help, and what it prints (a table with
 * a progress line on a terminal, plain lines in a log, or one JSON report).
 *
 * @module
 */

import type { CheckResult } from "./checks.ts";

/** What the command line asks for. */
export interface CommandLine {
  url: string;
  apiKey?: string;
  allowInsecureAuth: boolean;
  rateLimit: boolean;
  json: boolean;
  failOnSkip: boolean;
  model: string;
  timeoutMs: number;
  connections: number;
}

/** A bad command line; its message says what to fix. The command exits with 2. */
export class UsageError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The help text, printed by `--help`. */
export const USAGE = `usage: deno task conformance <url> [options]
       npx -p @realm-ai/ws-client realm-conformance <url> [options]

Checks a running Realm server against what @realm-ai/ws-client expects of it: the handshake,
tenants, health, metadata, generate (whole and streamed), error frames, authentication and
several sockets at once. Its calls change nothing on the server, except --rate-limit, which
drains the key's rate-limit bucket.

<url>                    the server's address, ws:// or wss://
options:
  --api-key KEY          API key of an auth-enabled server (the auth checks need one)
  --allow-insecure-auth  allow sending the key over ws:// to a host that is not loopback
  --rate-limit           also probe the rate limit (leaves the key rate-limited for a while)
  --connections N        sockets of the "several sockets" check (default 4)
  --model NAME           the model each generate names (default "default")
  --timeout MS           time limit of each check, in milliseconds (default 10000)
  --fail-on-skip         count a skipped check as a failure
  --json                 print one JSON report instead of the table
  -h, --help             print this help

exit status: 0 every check that ran passed, 1 a check failed (or was skipped, with
--fail-on-skip), 2 a bad command line`;

/** Parses the arguments; throws a {@linkcode UsageError}. `undefined` means: print the help. */
export function parseCommandLine(args: readonly string[]): CommandLine | undefined {
  const line: Partial<CommandLine> & { url?: string } = {
    allowInsecureAuth: false,
    rateLimit: false,
    json: false,
    failOnSkip: false,
    model: "default",
    timeoutMs: 10_000,
    connections: 4,
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "-h" || arg === "--help") return undefined;
    const split = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const flag = split > 0 ? arg.slice(0, split) : arg;
    const inline = split > 0 ? arg.slice(split + 1) : undefined;
    const value = (): string => {
      const found = inline ?? args[++i];
      if (found === undefined || (inline === undefined && found.startsWith("--"))) {
        throw new UsageError(`${flag} needs a value`);
      }
      return found;
    };
    const noValue = () => {
      if (inline !== undefined) throw new UsageError(`${flag} takes no value`);
      return true;
    };
    switch (flag) {
      case "--api-key": {
        const key = value();
        if (key === "") throw new UsageError("--api-key needs a non-empty key");
        line.apiKey = key;
        break;
      }
      case "--allow-insecure-auth":
        line.allowInsecureAuth = noValue();
        break;
      case "--rate-limit":
        line.rateLimit = noValue();
        break;
      case "--json":
        line.json = noValue();
        break;
      case "--fail-on-skip":
        line.failOnSkip = noValue();
        break;
      case "--model": {
        const model = value();
        if (model.trim() === "") throw new UsageError("--model needs a non-empty name");
        line.model = model;
        break;
      }
      case "--timeout":
        line.timeoutMs = whole(flag, value(), 1, 600_000);
        break;
      case "--connections":
        line.connections = whole(flag, value(), 1, 64);
        break;
      default:
        if (arg.startsWith("-")) throw new UsageError(`unknown option: ${arg}`);
        if (line.url !== undefined) {
          throw new UsageError(`one server at a time: got ${line.url} and ${arg}`);
        }
        line.url = checkUrl(arg);
    }
  }
  if (line.url === undefined) throw new UsageError("the server's URL is missing");
  return line as CommandLine;
}

function whole(flag: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || value > max) {
    throw new UsageError(`${flag} expects a whole number from ${min} to ${max}, got "${text}"`);
  }
  return value;
}

function checkUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`not a URL: "${text}" (expected ws://host:port or wss://host)`);
  }
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new UsageError(`expected a ws:// or wss:// URL, got "${text}"`);
  }
  return text;
}

/** Where the command writes, and whether that is a terminal (for the progress line). */
export interface Output {
  write(text: string): void;
  readonly isTerminal: boolean;
}

const NAME_WIDTH = 24;
const RESULT_WIDTH = 6;
const TIME_WIDTH = 8;

function formatMs(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${ms} ms`;
}

/** One table row: check, result, time, detail. */
export function formatRow(result: CheckResult): string {
  const time = result.status === "skip" ? "" : formatMs(result.ms);
  return `${result.name.padEnd(NAME_WIDTH)} ${result.status.padEnd(RESULT_WIDTH)} ` +
    `${time.padEnd(TIME_WIDTH)} ${result.detail}`;
}

/** The table's header line. */
export const TABLE_HEADER = `${"check".padEnd(NAME_WIDTH)} ${"result".padEnd(RESULT_WIDTH)} ` +
  `${"time".padEnd(TIME_WIDTH)} detail`;

/**
 * Prints the table as the checks finish: each row once its check is done, and on a terminal a
 * progress line under it that the next row replaces. A log gets the rows only.
 */
export class TablePrinter {
  readonly #out: Output;
  #progress = false;

  constructor(out: Output) {
    this.#out = out;
  }

  /** A check starts. */
  started(name: string, index: number, total: number): void {
    if (!this.#out.isTerminal) return;
    this.#clear();
    this.#out.write(`  running ${index + 1}/${total}: ${name} …`);
    this.#progress = true;
  }

  /** Any line: printed above the progress line. */
  line(text: string): void {
    this.#clear();
    this.#out.write(`${text}\n`);
  }

  /** Removes the progress line, if any. */
  done(): void {
    this.#clear();
  }

  #clear(): void {
    if (!this.#progress) return;
    this.#out.write("\r\x1b[2K");
    this.#progress = false;
  }
}

/** The closing line: the counts and the total time. */
export function summaryLine(
  counts: { passed: number; failed: number; skipped: number },
  ms: number,
): string {
  const total = counts.passed + counts.failed + counts.skipped;
  return `${total} checks: ${counts.passed} passed, ${counts.failed} failed, ` +
    `${counts.skipped} skipped (${formatMs(ms)})`;
}
