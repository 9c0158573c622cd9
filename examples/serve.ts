/**
 * Runs the stub Realm server standalone until Ctrl-C, for trying a client by hand:
 *
 * ```sh
 * deno task serve --port 8080 --api-key KEY=TENANT --rate-limit 60/100 --token-delay 50
 * ```
 *
 * It answers as the real server in simulation mode; `--long-streams` and `--orchestrator` turn
 * on the stub's extras for tests.
 *
 * | flag | meaning |
 * | --- | --- |
 * | `--port N` | port on 127.0.0.1 (default 8080; 0 picks a free one) |
 * | `--api-key KEY=TENANT` | accept KEY for TENANT; repeatable; any turns on authenticated mode |
 * | `--rate-limit PER_MINUTE[/BURST]` | per-tenant token bucket (burst defaults to 100, as on the real server) |
 * | `--token-delay MS` | delay between streamed tokens (default 50) |
 * | `--max-generations N` | generations run at once over all connections, the others wait (default: no limit) |
 * | `--long-streams` | streams carry exactly `max_tokens` tokens (the real simulation stops at 13) |
 * | `--orchestrator` | run pipelines: the built-in `rag-pipeline` (the real simulation has no orchestrator) |
 *
 * It prints one line, the address, and nothing else.
 *
 * @module
 */
import { startStubServer, type StubServerOptions } from "@realm-ai/ws-client/testing";

const USAGE = "usage: deno task serve [--port N] [--api-key KEY=TENANT]... " +
  "[--rate-limit PER_MINUTE[/BURST]] [--token-delay MS] [--max-generations N] " +
  "[--long-streams] [--orchestrator]";

/**
 * Reads the command line flags into server options; throws an `Error` naming the bad flag.
 *
 * @example
 * ```ts
 * import { parseServeFlags } from "./serve.ts";
 *
 * const options = parseServeFlags(["--api-key", "k1=acme", "--rate-limit", "60/10"]);
 * // { port: 8080, apiKeys: { k1: "acme" }, rateLimit: { perMinute: 60, burst: 10 } }
 * ```
 */
export function parseServeFlags(args: readonly string[]): StubServerOptions {
  const options: StubServerOptions = { port: 8080 };
  const apiKeys: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    // Both `--flag value` and `--flag=value`.
    const [flag, inline] = args[i].startsWith("--") && args[i].includes("=")
      ? [args[i].slice(0, args[i].indexOf("=")), args[i].slice(args[i].indexOf("=") + 1)]
      : [args[i], undefined];
    const value = (): string => {
      const found = inline ?? args[++i];
      if (found === undefined) throw new Error(`${flag} needs a value`);
      return found;
    };
    switch (flag) {
      case "--port":
        options.port = wholeNumber(flag, value());
        break;
      case "--api-key": {
        const pair = value();
        const split = pair.indexOf("=");
        if (split <= 0) throw new Error(`--api-key expects KEY=TENANT, got "${pair}"`);
        apiKeys[pair.slice(0, split)] = pair.slice(split + 1);
        break;
      }
      case "--rate-limit": {
        const text = value();
        const [perMinute, burst = "100", extra] = text.split("/");
        if (extra !== undefined) {
          throw new Error(`--rate-limit expects PER_MINUTE[/BURST], got "${text}"`);
        }
        options.rateLimit = {
          perMinute: wholeNumber(flag, perMinute),
          burst: wholeNumber(flag, burst),
        };
        break;
      }
      case "--token-delay":
        options.tokenDelayMs = wholeNumber(flag, value());
        break;
      case "--max-generations":
        options.maxConcurrentGenerations = wholeNumber(flag, value());
        break;
      case "--long-streams":
      case "--orchestrator":
        if (inline !== undefined) throw new Error(`${flag} takes no value`);
        options[flag === "--long-streams" ? "longStreams" : "orchestrator"] = true;
        break;
      default:
        throw new Error(`unknown flag: ${args[i]}`);
    }
  }
  if (Object.keys(apiKeys).length > 0) options.apiKeys = apiKeys;
  return options;
}

/**
 * The one line printed when the server cannot start: a busy port names the port and the flag
 * that picks another, as the bare `Address already in use` does not.
 *
 * @example
 * ```ts
 * import { startFailure } from "./serve.ts";
 *
 * const line = startFailure(new Deno.errors.AddrInUse("Address already in use"), 8080);
 * // "Port 8080 on 127.0.0.1 is already in use. Pick another with --port N (--port 0: any free port)."
 * ```
 */
export function startFailure(error: unknown, port: number): string {
  if (error instanceof Deno.errors.AddrInUse) {
    return `Port ${port} on 127.0.0.1 is already in use. ` +
      "Pick another with --port N (--port 0: any free port).";
  }
  return error instanceof Error ? error.message : String(error);
}

function wholeNumber(flag: string, text: string): number {
  if (!/^\d+$/.test(text)) throw new Error(`${flag} expects a whole number, got "${text}"`);
  return Number(text);
}

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(USAGE);
    Deno.exit(0);
  }
  let options: StubServerOptions;
  try {
    options = parseServeFlags(Deno.args);
  } catch (error) {
    console.error(`${error instanceof Error ? error.message : error}\n${USAGE}`);
    Deno.exit(2);
  }
  const server = await startStubServer(options).catch((error) => {
    // A bad value (`--rate-limit 0`) or a busy port: one line, not a stack trace.
    console.error(startFailure(error, options.port ?? 8080));
    Deno.exit(1);
  });
  const mode = options.apiKeys ? "authenticated" : "open";
  console.log(`Stub Realm server (${mode} mode) listening on ${server.url}`);
  Deno.addSignalListener("SIGINT", async () => {
    await server.close();
    Deno.exit(0);
  });
}
