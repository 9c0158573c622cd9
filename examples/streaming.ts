/**
 * Streaming: print tokens as they arrive, stop early with `break`, and join a
 * stream with `generate({ stream: true })`.
 *
 *     REALM_URL=ws://localhost:8080 deno run --allow-net --allow-env examples/streaming.ts
 *
 * @module
 */
import { RealmWebSocketClient } from "@realm-ai/ws-client";

/** Runs the example against the server at `url`. */
export async function main(url: string, apiKey?: string): Promise<void> {
  const client = new RealmWebSocketClient({ url, model: "llama-2-7b", apiKey });
  await client.connect();
  const encoder = new TextEncoder();
  const write = (text: string) => Deno.stdout.writeSync(encoder.encode(text));

  write("Streaming: ");
  for await (
    const token of client.generateStream({
      prompt: "What is the capital of France?",
      max_tokens: 6,
    })
  ) {
    write(token);
  }
  write("\n");

  write("First three tokens only: ");
  let count = 0;
  for await (const token of client.generateStream({ prompt: "Tell me a story", max_tokens: 13 })) {
    write(token);
    if (++count === 3) break; // stops listening; the client drops the rest of this stream
  }
  write("\n");

  const joined = await client.generate({
    prompt: "What is the capital of France?",
    max_tokens: 6,
    stream: true,
    onToken: (token) => write(`[${token.trim()}]`),
  });
  write(`\nJoined: ${joined.text}\n`);

  await client.disconnect();
}

if (import.meta.main) {
  await main(Deno.env.get("REALM_URL") ?? "ws://localhost:8080", Deno.env.get("REALM_API_KEY"));
}
