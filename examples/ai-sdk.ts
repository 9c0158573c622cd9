/**
 * Realm inside the Vercel AI SDK: `generateText` and `streamText` with the `realm` provider, a
 * conversation, a warning for a setting Realm cannot honour, and the typed error underneath.
 *
 *     REALM_URL=ws://localhost:8080 deno run --allow-net --allow-env --allow-sys=hostname examples/ai-sdk.ts
 *
 * (`ai` reads the host name when it loads, hence `--allow-sys=hostname`.)
 *
 * @module
 */
import { APICallError, generateText, streamText } from "ai";
import { RealmError } from "@realm-ai/ws-client";
import { createRealm } from "@realm-ai/ws-client/ai-sdk";

/** Runs the example against the server at `url`. */
export async function main(url: string, apiKey?: string): Promise<void> {
  // For a server on ws://localhost:8080 without a key, `import { realm }` is enough.
  const realm = createRealm({ url, apiKey });
  const encoder = new TextEncoder();
  const write = (text: string) => Deno.stdout.writeSync(encoder.encode(text));
  try {
    const answer = await generateText({
      model: realm("llama-2-7b"),
      prompt: "What is the capital of France?",
    });
    console.log(`generateText: ${answer.text} (output tokens: ${answer.usage.outputTokens})`);

    write("streamText: ");
    const story = streamText({
      model: realm("llama-2-7b"),
      system: "You are a storyteller.",
      messages: [
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello! Want a story?" },
        { role: "user", content: "Yes, a short one." },
      ],
      maxOutputTokens: 8,
    });
    for await (const delta of story.textStream) write(delta);
    write(`\n  finish: ${await story.finishReason}, ${(await story.usage).outputTokens} tokens\n`);

    // The AI SDK also prints each warning unless AI_SDK_LOG_WARNINGS is false; here we read them.
    (globalThis as { AI_SDK_LOG_WARNINGS?: boolean }).AI_SDK_LOG_WARNINGS = false;
    const seeded = await generateText({ model: realm("llama-2-7b"), prompt: "Hi", seed: 1 });
    for (const warning of seeded.warnings ?? []) {
      if (warning.type === "unsupported") {
        console.log(`warning: ${warning.feature} unsupported (${warning.details})`);
      }
    }

    try {
      await generateText({ model: realm("llama-2-7b"), prompt: "Hi", temperature: 9 });
    } catch (error) {
      // Every failed call is the AI SDK's APICallError; the RealmError is its cause.
      if (APICallError.isInstance(error) && error.cause instanceof RealmError) {
        console.log(
          `error: ${error.cause.code}, retryable by the AI SDK: ${error.isRetryable}`,
        );
      } else throw error;
    }
  } finally {
    await realm.close();
  }
}

if (import.meta.main) {
  await main(Deno.env.get("REALM_URL") ?? "ws://localhost:8080", Deno.env.get("REALM_API_KEY"));
}
