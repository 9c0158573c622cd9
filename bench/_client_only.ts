/**
 * The client's own cost, without a socket: the same `health()` loop as the harness's first two
 * groups, against an in-process fake socket that answers every call on a microtask with the
 * server's own `complete` frame, beside the harness's raw loop on the same fake socket
 * (`JSON.stringify` a call, `JSON.parse` the answer, a `Map` of pending calls by id). Both sides
 * pay the fake socket's work alike, so their difference is what the client adds per call, free of
 * the socket's and the other process's noise. `bench/run.ts` runs it on Deno, `bench/_npm_main.ts`
 * on Node and Bun.
 *
 * @module
 */
import { deepStrictEqual } from "node:assert/strict";
import { closeAndWait, median, RawSocket } from "./_harness.ts";

/** A `WebSocket` constructor, as the client's `WebSocket` option takes it. */
type WebSocketClass = new (url: string, protocols?: string | string[]) => WebSocket;

/** What the group needs of the client class (the npm build's class and `mod.ts`'s both fit). */
export type ClientClass = new (options: {
  url: string;
  model: string;
  WebSocket: WebSocketClass;
}) => {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  health(): Promise<unknown>;
  getTenantId(): string;
};

/** The frames the server sends, as text: its welcome frame and its answer to `health` call "1". */
export interface ServerFrames {
  welcome: string;
  health: string;
}

/** What a runtime provides. */
export interface ClientOnlyEnv {
  /** The client class, connected to the fake socket through its `WebSocket` option. */
  Client: ClientClass;
  /** The process's CPU time (user + system) so far, in µs. */
  cpuMicros(): number;
  /** The frames the fake socket sends, from {@linkcode serverFrames}. */
  frames: ServerFrames;
  /** Measured rounds ({@linkcode WARMUP_ROUNDS} warm-up rounds come first). */
  rounds: number;
  /** Progress lines (to stderr). */
  log(line: string): void;
}

/** Median CPU time per call of each round, in µs, of each side. */
export interface ClientOnlySides {
  bare: number[];
  client: number[];
}

/** Everything measured, for the table and `--json`. */
export interface ClientOnlyReport {
  /** Calls per side per round, one after another. */
  sequentialCalls: number;
  /** Calls per side per round, 1,000 at a time. */
  concurrentCalls: number;
  sequential: ClientOnlySides;
  concurrent: ClientOnlySides;
}

/** Measured rounds the entries ask for. */
export const CLIENT_ONLY_ROUNDS = 21;
const SEQUENTIAL_BLOCK = 100;
const SEQUENTIAL_BLOCKS = 50;
const CONCURRENT = 1_000;
const CONCURRENT_BLOCKS = 5;
/** Each round is 20 to 50 ms of CPU here; the JIT settles within the first 15,000 calls. */
const WARMUP_ROUNDS = 6;
/** On a machine so loaded that the rounds crawl, stop early rather than hold it up. */
const TIME_LIMIT_MS = 30_000;
const MIN_ROUNDS = 5;
const TENANT = "bench-tenant";

/**
 * Asks the server for its welcome frame and its answer to `health` call "1", as the fake socket
 * will send them; throws if they are not in the layout the fake socket relies on.
 */
export async function serverFrames(
  WebSocketClass: new (url: string) => WebSocket,
  url: string,
): Promise<ServerFrames> {
  const socket = new WebSocketClass(url);
  const texts: string[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no health answer from ${url}`)), 5_000);
      socket.onerror = () => {
        clearTimeout(timer);
        reject(new Error(`cannot open ${url}`));
      };
      socket.onmessage = (event) => {
        texts.push(String(event.data));
        if (texts.length === 1) {
          socket.send(
            JSON.stringify({ id: "1", function: "health", params: {}, tenant_id: TENANT }),
          );
        } else {
          clearTimeout(timer);
          resolve();
        }
      };
    });
  } finally {
    await closeAndWait(socket);
  }
  const [welcome, health] = texts;
  if (!health.startsWith(ANSWER_PREFIX) || JSON.parse(health).status !== "complete") {
    throw new Error(`the server's health answer is not a complete frame for "1": ${health}`);
  }
  return { welcome, health };
}

const ANSWER_PREFIX = '{"id":"1",';

/**
 * A `WebSocket` class that opens on a timer, sends the server's welcome frame, and answers every
 * call with the server's `health` answer under the call's id, on a microtask.
 */
function fakeSocketClass(frames: ServerFrames): WebSocketClass {
  const rest = frames.health.slice(ANSWER_PREFIX.length - 1);
  class FakeSocket {
    readyState = 0;
    onopen: ((event: unknown) => void) | null = null;
    onmessage: ((event: { data: string }) => void) | null = null;
    onclose: ((event: { code: number; reason: string; wasClean: boolean }) => void) | null = null;
    onerror: ((event: unknown) => void) | null = null;

    constructor(_url: string) {
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
        this.onmessage?.({ data: frames.welcome });
      }, 0);
    }

    send(text: string): void {
      // Both sides' calls begin `{"id":"<id>"`, and their ids are digits.
      if (!text.startsWith('{"id":"')) throw new Error(`unexpected frame: ${text}`);
      const id = text.slice(7, text.indexOf('"', 7));
      queueMicrotask(() => this.onmessage?.({ data: `{"id":"${id}"${rest}` }));
    }

    close(code = 1000, reason = ""): void {
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason, wasClean: true }), 0);
    }

    addEventListener(): void {}
    removeEventListener(): void {}
  }
  return FakeSocket as unknown as WebSocketClass;
}

/**
 * {@linkcode WARMUP_ROUNDS} warm-up rounds, then `env.rounds` rounds (fewer, but at least
 * {@linkcode MIN_ROUNDS}, past {@linkcode TIME_LIMIT_MS}). A round runs the bare loop and the
 * client 5,000 calls each one after another, then 5,000 each 1,000 at a time, in blocks that
 * alternate the two sides (which goes first alternates too), and keeps each side's CPU time per
 * call.
 */
export async function runClientOnly(env: ClientOnlyEnv): Promise<ClientOnlyReport> {
  const FakeSocket = fakeSocketClass(env.frames);
  const expected = JSON.parse(env.frames.health).data;
  const client = new env.Client({
    url: "ws://fake.invalid",
    model: "llama-2-7b",
    WebSocket: FakeSocket,
  });
  await client.connect();
  try {
    const raw = await RawSocket.open(FakeSocket, "ws://fake.invalid");
    const tenant = client.getTenantId();
    // The fake socket's frames are the server's: both sides read the server's answer from them.
    // The client's answer is the server's `data` plus the call's `requestId` (README, Observability).
    const { requestId, ...answer } = await client.health() as Record<string, unknown>;
    deepStrictEqual(answer, expected, "client health() through the fake socket");
    if (typeof requestId !== "string") throw new Error(`no requestId: ${requestId}`);
    deepStrictEqual(await raw.call("health", {}, tenant), expected, "bare loop's health answer");

    // A block is a few ms of CPU: a round alternates the two sides block by block, so that a burst
    // of the machine's other load (or a GC) falls on both sides alike, not on one side's round.
    const groups = {
      sequential: {
        blocks: SEQUENTIAL_BLOCKS,
        callsPerBlock: SEQUENTIAL_BLOCK,
        bare: async () => {
          for (let i = 0; i < SEQUENTIAL_BLOCK; i++) await raw.call("health", {}, tenant);
        },
        client: async () => {
          for (let i = 0; i < SEQUENTIAL_BLOCK; i++) await client.health();
        },
      },
      concurrent: {
        blocks: CONCURRENT_BLOCKS,
        callsPerBlock: CONCURRENT,
        bare: async () => {
          await Promise.all(
            Array.from({ length: CONCURRENT }, () => raw.call("health", {}, tenant)),
          );
        },
        client: async () => {
          await Promise.all(Array.from({ length: CONCURRENT }, () => client.health()));
        },
      },
    };
    const report: ClientOnlyReport = {
      sequentialCalls: SEQUENTIAL_BLOCKS * SEQUENTIAL_BLOCK,
      concurrentCalls: CONCURRENT_BLOCKS * CONCURRENT,
      sequential: { bare: [], client: [] },
      concurrent: { bare: [], client: [] },
    };
    const start = performance.now();
    for (let round = -WARMUP_ROUNDS; round < env.rounds; round++) {
      if (round >= MIN_ROUNDS && performance.now() - start > TIME_LIMIT_MS) {
        env.log(`  client only: stopped after ${round} rounds (${TIME_LIMIT_MS / 1000} s)`);
        break;
      }
      for (const name of ["sequential", "concurrent"] as const) {
        const group = groups[name];
        const cpu = { bare: 0, client: 0 };
        for (let block = 0; block < group.blocks; block++) {
          const sides = (round + block) % 2 === 0
            ? ["bare", "client"] as const
            : ["client", "bare"] as const;
          for (const side of sides) {
            const before = env.cpuMicros();
            await group[side]();
            cpu[side] += env.cpuMicros() - before;
          }
        }
        if (round < 0) continue;
        for (const side of ["bare", "client"] as const) {
          report[name][side].push(cpu[side] / (group.blocks * group.callsPerBlock));
        }
      }
    }
    await raw.close();
    const extra = (group: ClientOnlySides) =>
      median(group.client.map((c, i) => c - group.bare[i])).toFixed(2);
    env.log(
      `  client only: client − bare ${extra(report.sequential)} µs a call sequential, ` +
        `${extra(report.concurrent)} µs 1,000 concurrent`,
    );
    return report;
  } finally {
    await client.disconnect();
  }
}

/** One runtime's row of {@linkcode clientOnlyTable}. */
export interface ClientOnlyRow {
  runtime: string;
  clientOnly: ClientOnlyReport;
}

/**
 * Reports as a Markdown table, a row per runtime: the median CPU time per call of the bare loop
 * and the client, and the median of the rounds' client − bare, sequential and 1,000 concurrent.
 */
export function clientOnlyTable(rows: ClientOnlyRow[]): string {
  const us = (value: number) => `${value.toFixed(2)} µs`;
  const cells = (sides: ClientOnlySides) => [
    us(median(sides.bare)),
    us(median(sides.client)),
    us(median(sides.client.map((c, i) => c - sides.bare[i]))),
  ];
  const lines = [
    "| CPU per call | bare loop | client | client − bare | bare loop, 1,000 concurrent | client, 1,000 concurrent | client − bare, 1,000 concurrent |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const { runtime, clientOnly } of rows) {
    lines.push(
      `| ${runtime} | ${
        [...cells(clientOnly.sequential), ...cells(clientOnly.concurrent)].join(" | ")
      } |`,
    );
  }
  return lines.join("\n");
}
