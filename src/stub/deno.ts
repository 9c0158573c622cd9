/**
 * The stub server's Deno adapter: `Deno.serve` on 127.0.0.1 plus `Deno.upgradeWebSocket`, moving
 * text frames between the sockets and the runtime-free {@linkcode StubEngine}.
 *
 * @module
 */

import type { StubEngine, StubListener } from "./server.ts";
import type { StubPeer } from "./websocket.ts";

/** How long `close()` lets clients answer the close frame before giving up on them. */
const CLOSE_GRACE_MS = 1000;

/**
 * Listens on `127.0.0.1:port` (`0`: a free port) and serves every WebSocket with `engine`.
 *
 * @example
 * ```ts
 * import { createStubServer, StubEngine } from "./server.ts";
 * import { listenDeno } from "./deno.ts";
 *
 * const engine = new StubEngine({ tokenDelayMs: 0 });
 * const server = createStubServer(engine, await listenDeno(engine, 0));
 * const url = server.url; // "ws://127.0.0.1:<port>"
 * await server.close();
 * ```
 */
export function listenDeno(engine: StubEngine, port: number): Promise<StubListener> {
  /** Every socket not closed yet, with the promise of its close event. */
  const sockets = new Map<WebSocket, Promise<void>>();

  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, (request) => {
    if (!engine.acceptingConnections) {
      return new Response("Service Unavailable", { status: 503 });
    }
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("Expected a WebSocket upgrade", { status: 426 });
    }
    // No `protocol` option: like the real server, the stub never selects a subprotocol.
    const { socket, response } = Deno.upgradeWebSocket(request);
    const gone = new Promise<void>((resolve) => {
      socket.addEventListener("close", () => {
        sockets.delete(socket);
        resolve();
      });
    });
    sockets.set(socket, gone);
    socket.addEventListener("open", () => {
      const connection = engine.openConnection(denoPeer(socket));
      socket.addEventListener("message", (event) => {
        if (typeof event.data === "string") connection.onText(event.data);
        else connection.onBinary();
      });
      socket.addEventListener("close", () => connection.onClose());
    });
    // A socket's errors end in its close event; nothing more to do.
    socket.addEventListener("error", (event) => event.preventDefault());
    return response;
  });

  let closing: Promise<void> | undefined;
  return Promise.resolve({
    port: server.addr.port,
    close: () => {
      closing ??= (async () => {
        for (const socket of sockets.keys()) closeQuietly(socket);
        // Deno cannot cut a socket whose client never answers the close frame: stop waiting.
        let timer: ReturnType<typeof setTimeout> | undefined;
        const grace = new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_GRACE_MS));
        await Promise.race([Promise.all(sockets.values()), grace]);
        clearTimeout(timer);
        await server.shutdown();
      })();
      return closing;
    },
  });
}

function denoPeer(socket: WebSocket): StubPeer {
  return {
    send: (text) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(text);
    },
    close: () => closeQuietly(socket),
    // Deno cannot cut an upgraded TCP connection: the closest thing is a close with code 1011.
    terminate: () => closeQuietly(socket, 1011, "stub fault: connection dropped"),
  };
}

function closeQuietly(socket: WebSocket, code?: number, reason?: string): void {
  if (socket.readyState !== WebSocket.OPEN && socket.readyState !== WebSocket.CONNECTING) return;
  try {
    if (code === undefined) socket.close();
    else socket.close(code, reason);
  } catch {
    // Closing a socket whose handshake is still in flight can throw; its close event follows.
  }
}
