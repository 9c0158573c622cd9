/**
 * Error handling: branch on `error.code`, honour `retryAfter`, bound calls
 * with `timeout` and `signal`.
 *
 *     REALM_URL=ws://localhost:8080 deno run --allow-net --allow-env examples/error-handling.ts
 *
 * @module
 */
import { RealmError, RealmWebSocketClient } from "@realm-ai/ws-client";

function explain(error: unknown): string {
  if (!(error instanceof RealmError)) return `unexpected: ${error}`;
  switch (error.code) {
    case "RATE_LIMIT_EXCEEDED":
      return `rate limited; retry after ${error.retryAfter} s`;
    case "UNAUTHORIZED":
      return `authentication failed: ${error.message}`;
    case "INVALID_PARAMS":
      return `bad input, nothing was sent: ${error.message}`;
    case "TIMEOUT":
    case "ABORTED":
      return `${error.code} (the server ${error.sent ? "may have" : "never"} received it)`;
    default:
      return `${error.code}: ${error.message}`;
  }
}

/** Runs the example against the server at `url`. */
export async function main(url: string, apiKey?: string): Promise<void> {
  const client = new RealmWebSocketClient({
    url,
    model: "llama-2-7b",
    apiKey,
    maxRetries: 2, // retry rate-limited calls after the server's retryAfter
  });
  client.on("error", (error) => console.log("error event:", explain(error)));
  await client.connect();

  const attempts: [string, () => Promise<unknown>][] = [
    ["max_tokens: 0", () => client.generate({ prompt: "Hi", max_tokens: 0 })],
    ["unknown pipeline", () => client.executePipeline("no-such-pipeline", {})],
    ["aborted", () => client.generate({ prompt: "Hi" }, { signal: AbortSignal.abort() })],
    ["health", () => client.health({ timeout: 5_000 })],
  ];
  for (const [label, attempt] of attempts) {
    try {
      const result = await attempt();
      console.log(`${label}: ok`, JSON.stringify(result));
    } catch (error) {
      console.log(`${label}: ${explain(error)}`);
    }
  }
  await client.disconnect();
}

if (import.meta.main) {
  await main(Deno.env.get("REALM_URL") ?? "ws://localhost:8080", Deno.env.get("REALM_API_KEY"));
}
