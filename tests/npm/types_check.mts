/**
 * Type-checked (never run) by `tsc --noEmit` against the installed package's declarations, with
 * `skipLibCheck` off, as a strict TypeScript consumer on Node would compile it: once with the DOM
 * library, and once as a Node project without it (`lib: ["es2023"]`, `types: ["node"]`), with
 * module `node16` and with `bundler` resolution.
 *
 * @module
 */
import {
  type GenerationResult,
  RealmError,
  RealmWebSocketClient,
  type WebSocketSource,
} from "@realm-ai/ws-client";
import { startStubServer, type StubServer } from "@realm-ai/ws-client/testing";
import { runConformance } from "@realm-ai/ws-client/conformance";

export async function roundTrip(): Promise<string> {
  const server: StubServer = await startStubServer({ tokenDelayMs: 0 });
  const client = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b" });
  await client.connect();
  const source: WebSocketSource | undefined = client.getWebSocketSource();
  const result: GenerationResult = await client.generate({ prompt: "Hi" });
  let streamed = "";
  for await (const token of client.generateStream({ prompt: "Hi", max_tokens: 2 })) {
    streamed += token;
  }
  try {
    await client.executePipeline("missing", { query: "x" });
  } catch (error) {
    if (error instanceof RealmError && error.code === "DISPATCH_ERROR") streamed += error.message;
  }
  await client.disconnect();
  await server.close();
  return `${source} ${result.text} ${streamed}`;
}

export function listen(client: RealmWebSocketClient, signal: AbortSignal): void {
  client.addEventListener("statechange", (event) => console.log(event.type), { signal });
  client.addEventListener("error", { handleEvent: (event) => console.log(event.type) }, true);
  client.removeEventListener("error", () => {}, { capture: true });
  client.on("connected", ({ tenantId }) => console.log(tenantId));
}

export async function conformance(url: string): Promise<boolean> {
  return (await runConformance({ url })).failed === 0;
}
