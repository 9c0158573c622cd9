/**
 * The stub server's Node adapter: a `ws` `WebSocketServer` on 127.0.0.1 that moves text frames
 * between its sockets and the runtime-free {@linkcode StubEngine}.
 *
 * `ws` is the npm package's dependency, loaded on Node only, through the loader the package's
 * Node entry registers with {@linkcode setWsLoader}. Its types are not imported (Deno
 * type-checks this file without them): the few members used are declared below.
 *
 * @module
 */

import type { StubEngine, StubListener } from "./server.ts";
import type { StubConnection } from "./websocket.ts";

/** The members of a `ws` server-side socket this adapter uses. */
interface WsSocket {
  readonly readyState: number;
  send(text: string): void;
  /** Without a code: a close frame with no status code (the client sees 1005). */
  close(): void;
  terminate(): void;
  on(event: "message", listener: (data: { toString(): string }, isBinary: boolean) => void): void;
  on(event: "close" | "error", listener: () => void): void;
}

/** `verifyClient`'s verdict: accept, or refuse with an HTTP status. */
type VerifyCallback = (accept: boolean, code?: number, message?: string) => void;

interface WsServer {
  readonly clients: Set<WsSocket>;
  address(): { port: number } | string | null;
  on(event: "connection", listener: (socket: WsSocket) => void): void;
  on(event: "listening", listener: () => void): void;
  on(event: "error", listener: (error: Error) => void): void;
  close(callback?: (error?: Error) => void): void;
}

interface WsServerOptions {
  host: string;
  port: number;
  perMessageDeflate: boolean;
  /** The real server never selects a subprotocol; `false` refuses to pick one. */
  handleProtocols: () => false;
  verifyClient: (info: unknown, callback: VerifyCallback) => void;
}

interface WsModule {
  WebSocketServer: new (options: WsServerOptions) => WsServer;
}

/** How long `close()` lets clients answer the close frame before cutting them off. */
const CLOSE_GRACE_MS = 1000;
const OPEN = 1;

let loadWs: (() => Promise<unknown>) | undefined;

/**
 * Registers how to load `ws`. The npm package's Node entry of `./testing` calls it with
 * `() => import("ws")`: the import lives in the npm build, not here, so that neither `deno check`
 * nor JSR tries to resolve the npm package from this file.
 *
 * @example
 * ```ts ignore
 * setWsLoader(() => import("ws"));
 * ```
 */
export function setWsLoader(loader: () => Promise<unknown>): void {
  loadWs = loader;
}

async function wsServerClass(): Promise<WsModule["WebSocketServer"]> {
  const module = await loadWs?.() as
    | Partial<WsModule> & { default?: Partial<WsModule> }
    | undefined;
  const WebSocketServer = module?.WebSocketServer ?? module?.default?.WebSocketServer;
  if (typeof WebSocketServer !== "function") {
    throw new Error(
      "The stub server's Node adapter needs `ws`: use it through the npm package " +
        "@realm-ai/ws-client/testing, which depends on ws.",
    );
  }
  return WebSocketServer;
}

/**
 * Listens on `127.0.0.1:port` (`0`: a free port) and serves every WebSocket with `engine`.
 *
 * @example
 * ```ts ignore
 * import { createStubServer, StubEngine } from "./server.ts";
 * import { listenNode } from "./node.ts";
 *
 * const engine = new StubEngine({ tokenDelayMs: 0 });
 * const server = createStubServer(engine, await listenNode(engine, 0));
 * await server.close();
 * ```
 */
export async function listenNode(engine: StubEngine, port: number): Promise<StubListener> {
  const WebSocketServer = await wsServerClass();
  const server = new WebSocketServer({
    host: "127.0.0.1",
    port,
    perMessageDeflate: false,
    handleProtocols: () => false,
    verifyClient: (_info, accept) => {
      if (engine.acceptingConnections) accept(true);
      else accept(false, 503, "Service Unavailable");
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.on("listening", resolve);
    server.on("error", reject);
  });
  const address = server.address();
  if (address === null || typeof address === "string") {
    server.close();
    throw new Error("the stub server's WebSocketServer has no TCP port");
  }

  const closed = new Set<Promise<void>>();
  server.on("connection", (socket) => {
    // Registered in the same tick as the listeners below, before any frame can arrive.
    const connection: StubConnection = engine.openConnection({
      send: (text) => {
        if (socket.readyState === OPEN) socket.send(text);
      },
      close: () => socket.close(),
      terminate: () => socket.terminate(),
    });
    const gone = new Promise<void>((resolve) => {
      socket.on("close", () => {
        connection.onClose();
        resolve();
      });
    });
    closed.add(gone);
    gone.then(() => closed.delete(gone));
    // Errors (a reset by the client, a bad frame) are followed by "close".
    socket.on("error", () => {});
    socket.on("message", (data, isBinary) => {
      if (isBinary) connection.onBinary();
      else connection.onText(data.toString());
    });
  });

  let closing: Promise<void> | undefined;
  return {
    port: address.port,
    close: () => {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        const allClosed = Promise.all(closed);
        // Clients that do not answer the close frame in time are cut off.
        let timer: ReturnType<typeof setTimeout> | undefined;
        const grace = new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_GRACE_MS));
        await Promise.race([allClosed, grace]);
        clearTimeout(timer);
        for (const socket of server.clients) socket.terminate();
        await allClosed;
        await stopped;
      })();
      return closing;
    },
  };
}
