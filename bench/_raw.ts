import { RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
/**
 * The baseline every bench compares the client with: a hand-written loop over a raw `WebSocket`
 * that does the least a correct caller must (JSON.stringify a call, send it, JSON.parse each
 * frame, match it to its call by id) and nothing else: no checks, no timers, no events.
 *
 * @module
 */

type FrameHandler = (frame: { id?: string; status?: string; data?: unknown }) => void;

/** One raw socket to the stub, past its welcome frame. */
export class RawSocket {
  readonly #socket: WebSocket;
  readonly #handlers = new Map<string, FrameHandler>();
  #nextId = 0;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      this.#handlers.get(frame.id)?.(frame);
    };
  }

  /** Opens a socket and waits for the server's welcome frame. */
  static open(url: string): Promise<RawSocket> {
    const socket = new WebSocket(url);
    return new Promise((resolve, reject) => {
      socket.onerror = () => reject(new Error(`cannot open ${url}`));
      socket.onmessage = () => resolve(new RawSocket(socket));
    });
  }

  /** Sends one call and resolves with the `data` of its `complete` frame. */
  call(fn: string, params: Record<string, unknown>, tenantId: string): Promise<unknown> {
    const id = String(++this.#nextId);
    return new Promise((resolve) => {
      this.#handlers.set(id, (frame) => {
        this.#handlers.delete(id);
        resolve(frame.data);
      });
      this.#socket.send(JSON.stringify({ id, function: fn, params, tenant_id: tenantId }));
    });
  }

  /** Sends a streaming generate call and resolves with the number of `streaming` frames. */
  stream(params: Record<string, unknown>, tenantId: string): Promise<number> {
    const id = String(++this.#nextId);
    let tokens = 0;
    return new Promise((resolve) => {
      this.#handlers.set(id, (frame) => {
        if (frame.status === "streaming") tokens++;
        else {
          this.#handlers.delete(id);
          resolve(tokens);
        }
      });
      this.#socket.send(
        JSON.stringify({ id, function: "generate", params, tenant_id: tenantId }),
      );
    });
  }

  /** Closes the socket and waits for its close event. */
  close(): Promise<void> {
    if (this.#socket.readyState === WebSocket.CLOSED) return Promise.resolve();
    const closed = new Promise<void>((resolve) => this.#socket.onclose = () => resolve());
    this.#socket.close();
    return closed;
  }
}

/**
 * Closes what a bench file opened when `deno bench` is done. The runner exits after its last
 * bench without waiting for open sockets, so this only starts the closes (the `unload` event
 * cannot await); it keeps the server's and client's shutdown paths exercised all the same.
 */
export function closeOnUnload(...closers: (() => Promise<unknown>)[]): void {
  globalThis.addEventListener("unload", () => {
    for (const close of closers) void close().catch(() => {});
  });
}

/**
 * A client and a raw socket side by side on one stub server started with token delay 0, both
 * closed when the bench file is done: the setup every "client vs raw" group shares.
 */
export async function clientBesideRaw() {
  const server = await startStubServer({ tokenDelayMs: 0 });
  const client = new RealmWebSocketClient({ url: server.url, model: "llama-2-7b" });
  await client.connect();
  const raw = await RawSocket.open(server.url);
  closeOnUnload(() => raw.close(), () => client.disconnect(), () => server.close());
  return { server, client, raw, tenantId: client.getTenantId() };
}
