/**
 * A scripted WebSocket server on 127.0.0.1 for the cases the stub server
 * will not produce because the real server never would (a bad tenant id, a
 * token that is not a string), and a bounded wait for promises.
 * @module
 */
import assert from "node:assert/strict";

/** One client socket as the scripted server sees it. */
export interface RawPeer {
  socket: WebSocket;
  /** Text frames received, parsed. */
  received: Record<string, unknown>[];
  send(frame: unknown): void;
}

/** What the server does: on open and on each frame. */
export interface RawScript {
  open?(peer: RawPeer): void;
  message?(peer: RawPeer, frame: Record<string, unknown>): void;
}

/** A running scripted server. */
export interface RawServer {
  url: string;
  peers: RawPeer[];
  /** Sockets open now. */
  readonly openCount: number;
  close(): Promise<void>;
}

/** The open server's welcome frame. */
export const WELCOME = { status: "connected", version: "0.1.0", tenant_id: null };

/** Starts a scripted server; `close()` it when done. */
export async function rawServer(script: RawScript): Promise<RawServer> {
  const peers: RawPeer[] = [];
  let open = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    const peer: RawPeer = {
      socket,
      received: [],
      send: (frame) => {
        if (socket.readyState === WebSocket.OPEN) {
          socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
        }
      },
    };
    peers.push(peer);
    socket.onopen = () => {
      open++;
      script.open?.(peer);
    };
    socket.onclose = () => open--;
    socket.onmessage = (event) => {
      const frame = JSON.parse(String(event.data));
      peer.received.push(frame);
      script.message?.(peer, frame);
    };
    return response;
  });
  await new Promise((resolve) => setTimeout(resolve, 0));
  return {
    url: `ws://127.0.0.1:${server.addr.port}`,
    peers,
    get openCount() {
      return open;
    },
    async close() {
      for (const peer of peers) {
        if (peer.socket.readyState <= WebSocket.OPEN) peer.socket.close();
      }
      await server.shutdown();
    },
  };
}

/**
 * Awaits `promise`, failing after `ms` with `what` in the message: a promise
 * that should settle by a client timer fails in seconds if the timer is missing.
 */
export async function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not settled within ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Settles `promise` within `ms` and returns how: `{ value }` or `{ error }`. */
export async function outcome<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<{ value: T } | { error: unknown }> {
  return await bounded(
    promise.then((value) => ({ value }), (error) => ({ error })),
    ms,
    what,
  );
}

/** Asserts that `result` is a failure with a RealmError of `code`, and returns the error. */
export function failedWith(
  result: { value: unknown } | { error: unknown },
  code: string,
): { code: string; message: string; sent?: boolean; retryAfter?: number } {
  assert.ok("error" in result, `expected a failure with ${code}, got a value`);
  const error = result.error as { code?: string; message: string };
  assert.equal(error?.code, code, `expected ${code}, got ${error?.code}: ${error?.message}`);
  return error as { code: string; message: string; sent?: boolean; retryAfter?: number };
}
