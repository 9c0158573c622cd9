/**
 * Which `WebSocket` implementation the client uses: the option, the runtime's
 * global, or a fallback registered by a runtime-specific entry point (the npm
 * package's Node entry registers `ws` for Node versions without a global).
 *
 * @module
 */

import { RealmError } from "./errors.ts";
import type { WebSocketConstructor } from "./types.ts";

/**
 * Where the `WebSocket` implementation came from, as
 * `client.getWebSocketSource()` reports it: the `WebSocket` option, the
 * runtime's global, or the fallback (`ws`, on Node versions without a global).
 *
 * @example
 * ```ts
 * import type { WebSocketSource } from "@realm-ai/ws-client";
 * const native = (source: WebSocketSource) => source === "global";
 * ```
 */
export type WebSocketSource = "option" | "global" | "fallback";

let fallback: (() => Promise<WebSocketConstructor>) | undefined;

/**
 * Registers a loader used when the runtime has no global `WebSocket`. Called
 * by the npm package's Node entry with a loader of `ws`, so that `ws` is
 * loaded only on such a Node and never reaches a browser bundle.
 */
export function setWebSocketFallback(loader: () => Promise<WebSocketConstructor>): void {
  fallback = loader;
}

/** Picks the implementation, in order: the option, the global, the fallback. */
export async function resolveWebSocket(
  option: WebSocketConstructor | undefined,
): Promise<{ WebSocket: WebSocketConstructor; source: WebSocketSource }> {
  if (option) return { WebSocket: option, source: "option" };
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof global === "function") return { WebSocket: global, source: "global" };
  if (fallback) return { WebSocket: await fallback(), source: "fallback" };
  throw new RealmError(
    "INVALID_OPTIONS",
    "No global WebSocket here: pass one as the `WebSocket` option " +
      '(e.g. the "ws" package\'s), or use Node 22 or newer.',
  );
}
