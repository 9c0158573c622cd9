/**
 * A bare WebSocket for the conformance checks: it sends what the client rightly refuses to send
 * (unknown functions, unparseable frames, parameters the client validates away) and shows the
 * frames the client hides. Every wait is bounded, and closing never waits on the peer for long.
 *
 * @module
 */

import { resolveWebSocket } from "../websocket.ts";

/** One frame the server sent: its text (parsed when it is JSON), or a binary frame. */
export interface SeenFrame {
  /** The frame as received; `undefined` for a binary frame. */
  readonly text?: string;
  /** The parsed JSON object, when the text is a JSON object. */
  readonly json?: Record<string, unknown>;
}

/** How a socket ended. */
export interface SeenClose {
  readonly code: number;
  readonly reason: string;
}

/** Why a wait ended without what it waited for; its message says what was awaited. */
export class WaitFailed extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "WaitFailed";
  }
}

/** How long closing waits for the peer's close frame before it stops caring. */
const CLOSE_GRACE_MS = 1000;

/** A raw socket: a queue of received frames, read one at a time with a deadline. */
export class RawSocket {
  readonly #socket: WebSocket;
  readonly #frames: SeenFrame[] = [];
  #waiter: (() => void) | undefined;
  #closed: SeenClose | undefined;
  readonly #closedPromise: Promise<SeenClose>;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    let resolveClosed!: (close: SeenClose) => void;
    this.#closedPromise = new Promise((resolve) => (resolveClosed = resolve));
    socket.addEventListener("message", (event) => {
      const data = (event as MessageEvent).data;
      this.#frames.push(typeof data === "string" ? { text: data, json: parseObject(data) } : {});
      this.#wake();
    });
    socket.addEventListener("close", (event) => {
      const { code, reason } = event as CloseEvent;
      this.#closed ??= { code, reason };
      resolveClosed(this.#closed);
      this.#wake();
    });
  }

  /**
   * Opens a socket to `url`; rejects with a {@linkcode WaitFailed} naming the address when it
   * cannot be opened within `timeoutMs`.
   */
  static async open(url: string, timeoutMs: number): Promise<RawSocket> {
    const { WebSocket } = await resolveWebSocket(undefined);
    const socket = new WebSocket(url);
    // Not "blob": Node's built-in WebSocket would hand binary frames over as a Blob.
    socket.binaryType = "arraybuffer";
    const raw = new RawSocket(socket);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        timer = setTimeout(() => {
          reject(new WaitFailed(`no WebSocket to ${url} within ${timeoutMs} ms`));
        }, timeoutMs);
        socket.addEventListener("open", () => resolve());
        // Node 22's WebSocket fires `error` but never `close` when it cannot connect; `ws`
        // needs an error listener, or a failure to connect would end the process.
        socket.addEventListener("error", () => {
          reject(new WaitFailed(`cannot open a WebSocket to ${url}`));
        });
        socket.addEventListener("close", (event) => {
          reject(new WaitFailed(`${url} closed the WebSocket (code ${event.code}) at once`));
        });
      });
    } catch (error) {
      raw.close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
    return raw;
  }

  /** How the socket closed, once it has; else `undefined`. */
  get closed(): SeenClose | undefined {
    return this.#closed;
  }

  /** Sends one text frame (a value is sent as its JSON). */
  send(frame: string | Record<string, unknown>): void {
    this.#socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Sends one binary frame. */
  sendBinary(bytes: Uint8Array): void {
    this.#socket.send(bytes);
  }

  /**
   * The next frame; rejects with a {@linkcode WaitFailed} when none comes within `timeoutMs` or
   * the socket closes first. `what` names the awaited frame in that message.
   */
  async next(timeoutMs: number, what = "a frame"): Promise<SeenFrame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const frame = this.#frames.shift();
      if (frame !== undefined) return frame;
      if (this.#closed !== undefined) {
        throw new WaitFailed(
          `the server closed the socket (code ${this.#closed.code}) instead of sending ${what}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new WaitFailed(`no ${what.replace(/^an? /, "")} within ${timeoutMs} ms`);
      await this.#wait(left);
    }
  }

  /** The next frame whose `id` is `id` (others are returned in `skipped`), within `timeoutMs`. */
  async answer(
    id: string,
    timeoutMs: number,
    what = `an answer to call ${id}`,
  ): Promise<{ frame: SeenFrame; skipped: SeenFrame[] }> {
    const deadline = Date.now() + timeoutMs;
    const skipped: SeenFrame[] = [];
    for (;;) {
      const frame = await this.next(Math.max(0, deadline - Date.now()), what);
      if (frame.json?.id === id) return { frame, skipped };
      skipped.push(frame);
    }
  }

  /** Frames received so far and not read yet (taken out of the queue). */
  drain(): SeenFrame[] {
    return this.#frames.splice(0);
  }

  /** Resolves with how the socket closed, or `undefined` when it stays open for `timeoutMs`. */
  async waitClosed(timeoutMs: number): Promise<SeenClose | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), timeoutMs);
    });
    try {
      return await Promise.race([this.#closedPromise, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Closes the socket and resolves once it is closed, or after a short grace: a runtime may wait
   * for the peer's close frame without a limit.
   */
  async close(): Promise<void> {
    if (this.#closed === undefined) {
      try {
        this.#socket.close();
      } catch {
        // A socket still connecting can throw on close; its close event follows.
      }
    }
    await this.waitClosed(CLOSE_GRACE_MS);
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }

  #wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        resolve();
      }, ms);
      this.#waiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}
