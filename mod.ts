/**
 * A client for the Realm multi-tenant LLM inference server, spoken over one
 * WebSocket: connect (with or without an API key), `generate` whole or token
 * by token, run pipelines, check health and read the server's metadata.
 * Zero dependencies; runs on Deno, Node, Bun and browsers.
 *
 * @example Connect and generate
 * ```ts
 * import { RealmWebSocketClient } from "@realm-ai/ws-client";
 * import { startStubServer } from "@realm-ai/ws-client/testing";
 *
 * const server = await startStubServer({ tokenDelayMs: 0 });
 * const client = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b" });
 * await client.connect();
 * const result = await client.generate({ prompt: "What is the capital of France?" });
 * const answer = result.text; // "Paris"
 * let streamed = "";
 * for await (const token of client.generateStream({ prompt: "Tell me a story", max_tokens: 5 })) {
 *   streamed += token;
 * }
 * await client.disconnect();
 * await server.close();
 * ```
 *
 * @module
 */

export { RealmWebSocketClient } from "./src/client.ts";
export {
  parseRetryAfter,
  RealmError,
  type RealmErrorCode,
  type RealmErrorInit,
} from "./src/errors.ts";
export { type ConnectionState, STATE_EDGES, type StateChange } from "./src/lifecycle.ts";
export {
  CALL_CHANNEL,
  type CallTraceContext,
  CONNECTION_CHANNEL,
  type ConnectionTraceMessage,
} from "./src/telemetry.ts";
export { type TokenSink, TokenStream } from "./src/token_stream.ts";
export type { WebSocketSource } from "./src/websocket.ts";
export type {
  CallOptions,
  ClientStats,
  FunctionMetadata,
  GenerationOptions,
  GenerationResult,
  HealthStatus,
  ParamMetadata,
  PipelineInput,
  RealmClientOptions,
  RealmEventMap,
  RealmLogger,
  RuntimeMetadata,
  ServerStats,
  WebSocketConstructor,
} from "./src/types.ts";
