/**
 * The stub server's Bun adapter: `Bun.serve` on 127.0.0.1 with WebSocket handlers that move text
 * frames between the sockets and the runtime-free {@linkcode StubEngine}.
 *
 * Bun's types are not imported (Deno type-checks this file without them): the few members used
 * are declared below.
 *
 * @module
 */

import type { StubEngine, StubListener } from "./server.ts";
import type { StubConnection } from "./websocket.ts";

/** Per-socket data: the engine's side of the connection. */
interface SocketData {
  connection?: StubConnection;
  closed: () => void;
}

/** The members of Bun's `ServerWebSocket` this adapter uses. */
interface BunSocket {
  readonly data: SocketData;
  readonly readyState: number;
  send(text: string): number;
  /** With 1005: a close frame with no status code; without a code: 1000. */
  close(code?: number): void;
  terminate(): void;
}

interface BunServer {
  readonly port: number;
  upgrade(
    request: Request,
    options: { data: SocketData; headers?: Record<string, string> },
  ): boolean;
  stop(closeActiveConnections?: boolean): Promise<void> | void;
}

interface BunServeOptions {
  hostname: string;
  port: number;
  fetch(request: Request, server: BunServer): Response | undefined;
  websocket: {
    perMessageDeflate: boolean;
    open(socket: BunSocket): void;
    message(socket: BunSocket, message: string | Uint8Array): void;
    close(socket: BunSocket): void;
  };
}

interface BunGlobal {
  serve(options: BunServeOptions): BunServer;
}

/** How long `close()` lets clients answer the close frame before cutting them off. */
const CLOSE_GRACE_MS = 1000;
const OPEN = 1;

/**
 * Listens on `127.0.0.1:port` (`0`: a free port) and serves every WebSocket with `engine`.
 *
 * @example
 * ```ts ignore
 * import { createStubServer, StubEngine } from "./server.ts";
 * import { listenBun } from "./bun.ts";
 *
 * const engine = new StubEngine({ tokenDelayMs: 0 });
 * const server = createStubServer(engine, listenBun(engine, 0));
 * await server.close();
 * ```
 */
export function listenBun(engine: StubEngine, port: number): StubListener {
  const bun = (globalThis as unknown as { Bun?: BunGlobal }).Bun;
  if (bun === undefined) throw new Error("listenBun needs the Bun runtime");
  const sockets = new Set<BunSocket>();
  const closed = new Set<Promise<void>>();

  const server = bun.serve({
    hostname: "127.0.0.1",
    port,
    fetch(request, server) {
      if (!engine.acceptingConnections) {
        return new Response("Service Unavailable", { status: 503 });
      }
      let markClosed = () => {};
      const gone = new Promise<void>((resolve) => markClosed = resolve);
      const options: Parameters<BunServer["upgrade"]>[1] = { data: { closed: markClosed } };
      // Bun echoes a requested subprotocol unless told otherwise, but the real server never
      // selects one: a client that asks for one must fail the handshake. An empty value omits
      // the header (Bun 1.4; older versions send it empty). Set only when asked: some older
      // versions reject a `headers` option they have nothing to merge into.
      if (request.headers.has("sec-websocket-protocol")) {
        options.headers = { "Sec-WebSocket-Protocol": "" };
      }
      if (server.upgrade(request, options)) {
        trackClose(gone);
        return undefined;
      }
      return new Response("Expected a WebSocket upgrade", { status: 426 });
    },
    websocket: {
      perMessageDeflate: false,
      open(socket) {
        sockets.add(socket);
        socket.data.connection = engine.openConnection({
          send: (text) => {
            if (socket.readyState === OPEN) socket.send(text);
          },
          // Bun sends a close frame without a status code for 1005 (a plain close() sends 1000).
          close: () => socket.close(1005),
          terminate: () => socket.terminate(),
        });
      },
      message(socket, message) {
        if (typeof message === "string") socket.data.connection?.onText(message);
        else socket.data.connection?.onBinary();
      },
      close(socket) {
        sockets.delete(socket);
        socket.data.connection?.onClose();
        socket.data.closed();
      },
    },
  });

  function trackClose(gone: Promise<void>): void {
    closed.add(gone);
    gone.then(() => closed.delete(gone));
  }

  let closing: Promise<void> | undefined;
  return {
    port: server.port,
    close: () => {
      closing ??= (async () => {
        const allClosed = Promise.all(closed);
        // Clients that do not answer the close frame in time are cut off.
        let timer: ReturnType<typeof setTimeout> | undefined;
        const grace = new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_GRACE_MS));
        await Promise.race([allClosed, grace]);
        clearTimeout(timer);
        for (const socket of sockets) socket.terminate();
        // The listener closes at once; the promise can stay pending on Bun 1.1 to 1.3.
        const stopped = Promise.resolve(server.stop(true));
        await Promise.race([stopped, new Promise((resolve) => timer = setTimeout(resolve, 100))]);
        clearTimeout(timer);
      })();
      return closing;
    },
  };
}
