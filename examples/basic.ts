/**
 * Basic usage: connect, generate, run a pipeline, check health, disconnect.
 *
 *     REALM_URL=ws://localhost:8080 deno run --allow-net --allow-env examples/basic.ts
 *
 * @module
 */
import { RealmWebSocketClient } from "@realm-ai/ws-client";

/** Runs the example against the server at `url`. */
export async function main(url: string, apiKey?: string): Promise<void> {
  const client = new RealmWebSocketClient({ url, model: "llama-2-7b", apiKey });
  await client.connect();
  console.log(`Connected to Realm ${client.getServerVersion()} as tenant ${client.getTenantId()}`);

  const result = await client.generate({
    prompt: "What is the capital of France?",
    max_tokens: 50,
  });
  console.log(`Answer: ${result.text} (${result.tokens_generated} tokens)`);

  const pipeline = await client.executePipeline("rag-pipeline", {
    query: "What is machine learning?",
    context: "Machine learning is a field of AI that learns from data.",
  });
  console.log("Pipeline output:", JSON.stringify(pipeline));

  const health = await client.health();
  console.log(`Server ${health.status}, up ${health.uptime_seconds} s`);

  await client.disconnect();
}

if (import.meta.main) {
  await main(Deno.env.get("REALM_URL") ?? "ws://localhost:8080", Deno.env.get("REALM_API_KEY"));
}
