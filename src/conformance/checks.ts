/**
 * The conformance checks: a fixed list, run in order against one server, each through the public
 * client where it can and through a {@linkcode RawSocket} for what the client never sends or
 * never shows. The first check learns the server's mode (open or authenticated); the others read
 * it from the shared {@linkcode Run}.
 *
 * @module
 */

import { RealmError } from "../errors.ts";
import { RealmWebSocketClient } from "../client.ts";
import type { RealmClientOptions } from "../types.ts";
import { RawSocket, type SeenFrame, WaitFailed } from "./raw.ts";

/** What a check concluded: passed, failed, or not run (and why). */
export type CheckStatus = "pass" | "fail" | "skip";

/**
 * One check's outcome, as the report lists it.
 *
 * @example
 * ```ts
 * import type { CheckResult } from "@realm-ai/ws-client/conformance";
 *
 * const row: CheckResult = { name: "health", status: "pass", ms: 3, detail: "healthy, 0.1.0" };
 * ```
 */
export interface CheckResult {
  /** The check's name, e.g. `"generate, streamed"`. */
  name: string;
  /** `"pass"`, `"fail"` or `"skip"`. */
  status: CheckStatus;
  /** How long it took, in milliseconds (0 when skipped). */
  ms: number;
  /** What was seen (the frames, for a failure), or why the check was skipped. */
  detail: string;
}

/** The settings a run uses, after the command line or the caller's options are checked. */
export interface RunSettings {
  url: string;
  apiKey?: string;
  allowInsecureAuth: boolean;
  rateLimit: boolean;
  model: string;
  timeoutMs: number;
  connections: number;
}

/** The tenant id every call of an open-server run carries: one tenant, however many runs. */
export const CONFORMANCE_TENANT = "realm-conformance";

/** A failed expectation; its message is the check's detail. */
class CheckFailed extends Error {}

function fail(message: string): never {
  throw new CheckFailed(message);
}

/** A frame as evidence: its text, cut at 300 characters. */
export function show(frame: SeenFrame | undefined): string {
  if (frame === undefined) return "nothing";
  if (frame.text === undefined) return "a binary frame";
  return frame.text.length > 300 ? `${frame.text.slice(0, 300)}…` : frame.text;
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function quote(text: unknown, max = 60): string {
  const value = String(text);
  return JSON.stringify(value.length > max ? `${value.slice(0, max)}…` : value);
}

/** The state a run shares between its checks. */
export class Run {
  readonly settings: RunSettings;
  /** Learnt by the first check; undefined when no Realm server answered. */
  mode: "open" | "authenticated" | undefined;
  version: string | undefined;
  /** The tenant calls carry: the key's tenant on an authenticated server. */
  tenant = CONFORMANCE_TENANT;
  readonly #sockets = new Set<RawSocket>();
  readonly #clients = new Set<RealmWebSocketClient>();
  #ids = 0;

  constructor(settings: RunSettings) {
    this.settings = settings;
  }

  /** A fresh call id. */
  id(): string {
    return `realm-conformance-${++this.#ids}`;
  }

  /** A raw socket, closed when the check ends. */
  async open(): Promise<RawSocket> {
    const socket = await RawSocket.open(this.settings.url, this.settings.timeoutMs);
    this.#sockets.add(socket);
    return socket;
  }

  /** A raw socket past the handshake (the key sent when the server asks for it). */
  async session(): Promise<RawSocket> {
    const socket = await this.open();
    const timeout = this.settings.timeoutMs;
    let first = await socket.next(timeout, "the first frame");
    if (first.json?.type === "auth_required") {
      socket.send({ type: "auth", api_key: this.settings.apiKey ?? "" });
      const answer = await socket.next(timeout, "the answer to the auth frame");
      if (answer.json?.type !== "auth_success") {
        fail(`the server did not accept the key: ${show(answer)}`);
      }
      first = await socket.next(timeout, "the welcome frame after auth_success");
    }
    if (first.json?.status !== "connected") fail(`expected the welcome frame, got ${show(first)}`);
    return socket;
  }

  /** A call frame, carrying the run's tenant. */
  call(id: string, fn: string, params: unknown, tenant: string | null = this.tenant) {
    return tenant === null
      ? { id, function: fn, params }
      : { id, function: fn, params, tenant_id: tenant };
  }

  /** A client with the run's settings (`extra` on top), disconnected when the check ends. */
  client(extra: Partial<RealmClientOptions> = {}): RealmWebSocketClient {
    const { url, apiKey, allowInsecureAuth, model, timeoutMs } = this.settings;
    const client = new RealmWebSocketClient({
      url,
      model,
      apiKey,
      allowInsecureAuth,
      tenantId: CONFORMANCE_TENANT,
      reconnect: false,
      timeout: timeoutMs,
      connectTimeout: timeoutMs,
      streamIdleTimeout: timeoutMs,
      ...extra,
    });
    this.#clients.add(client);
    return client;
  }

  /** Closes what the check opened. */
  async cleanUp(): Promise<void> {
    const sockets = [...this.#sockets].map((socket) => socket.close());
    const clients = [...this.#clients].map((client) => client.disconnect());
    this.#sockets.clear();
    this.#clients.clear();
    await Promise.all([...sockets, ...clients]);
  }
}

/** One check of the list. */
export interface Check {
  readonly name: string;
  /** Why it cannot run here, or undefined. */
  skip?(run: Run): string | undefined;
  /** Runs it; resolves with what was seen, throws with what went wrong. */
  run(run: Run): Promise<string>;
  /** Its time limit in units of the run's timeout (default 1). */
  readonly budget?: number;
}

const needsServer = (run: Run) =>
  run.mode === undefined ? "no Realm server answered the first check" : undefined;

/** Skips unless a session can be had: a server answered, and it has the key it needs. */
const needsSession = (run: Run) =>
  needsServer(run) ??
    (run.mode === "authenticated" && run.settings.apiKey === undefined
      ? "needs --api-key: the server requires authentication"
      : undefined);

const needsAuthServer = (run: Run) =>
  needsServer(run) ??
    (run.mode === "open" ? "needs an auth-enabled server; this one is open" : undefined);

function expectError(
  frame: SeenFrame,
  id: string,
  code: string | undefined,
  what: string,
): { code: string; message: string } {
  const json = frame.json;
  const error = json?.error as { code?: unknown; message?: unknown } | undefined;
  if (
    json?.id !== id || json.status !== "error" || typeof error !== "object" || error === null ||
    typeof error.code !== "string" || typeof error.message !== "string"
  ) {
    fail(`${what}: expected an error frame for id ${id}, got ${show(frame)}`);
  }
  if (code !== undefined && error.code !== code) {
    fail(`${what}: expected error code ${code}, got ${show(frame)}`);
  }
  return { code: error.code, message: error.message };
}

function expectComplete(frame: SeenFrame, id: string, what: string): Record<string, unknown> {
  const json = frame.json;
  if (json?.id !== id || json.status !== "complete") {
    fail(`${what}: expected a complete frame for id ${id}, got ${show(frame)}`);
  }
  const data = json.data;
  if (typeof data !== "object" || data === null) fail(`${what}: no data in ${show(frame)}`);
  return data as Record<string, unknown>;
}

/** Awaits a promise that must reject with a RealmError; returns it. */
async function rejectsWith(
  promise: Promise<unknown>,
  code: string,
  what: string,
): Promise<RealmError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof RealmError && error.code === code) return error;
    fail(`${what}: expected ${code}, got ${describeError(error)}`);
  }
  fail(`${what}: expected ${code}, but it succeeded`);
}

/** An error in a line: a RealmError's code and message. */
export function describeError(error: unknown): string {
  if (error instanceof RealmError) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}

/** Reads a stream's frames for `id`: its tokens in order, then its one complete frame. */
async function readStream(
  socket: RawSocket,
  id: string,
  maxTokens: number,
  timeoutMs: number,
): Promise<{ tokens: string[]; complete: Record<string, unknown> }> {
  const tokens: string[] = [];
  let final = false;
  for (;;) {
    const { frame } = await socket.answer(
      id,
      timeoutMs,
      `frame ${tokens.length + 1} of the stream`,
    );
    const json = frame.json!;
    if (json.status === "complete") {
      if (!final) fail(`complete before a token with is_final: true: ${show(frame)}`);
      return { tokens, complete: expectComplete(frame, id, "the stream's end") };
    }
    if (final) fail(`a frame after the token with is_final: true: ${show(frame)}`);
    const data = json.data as Record<string, unknown> | undefined;
    if (json.status !== "streaming" || typeof data !== "object" || data === null) {
      fail(`expected a streaming frame, got ${show(frame)}`);
    }
    if (typeof data.text !== "string") fail(`the token is not in data.text: ${show(frame)}`);
    if (data.index !== tokens.length) {
      fail(`expected index ${tokens.length}, got ${show(frame)}`);
    }
    if (typeof data.is_final !== "boolean") fail(`no boolean is_final: ${show(frame)}`);
    tokens.push(data.text);
    final = data.is_final;
    if (tokens.length > maxTokens) fail(`more than max_tokens (${maxTokens}) tokens`);
  }
}

// -----------------------------------------------------------------------------------------------

const welcome: Check = {
  name: "welcome frame",
  async run(run) {
    const socket = await run.open();
    const first = await socket.next(run.settings.timeoutMs, "a first frame");
    const json = first.json;
    if (json?.type === "auth_required") {
      if (typeof json.message !== "string") fail(`auth_required without a message: ${show(first)}`);
      run.mode = "authenticated";
      return "auth_required: an auth-enabled server";
    }
    if (json?.status === "connected") {
      if (typeof json.version !== "string") fail(`a welcome without a version: ${show(first)}`);
      if (json.tenant_id !== null) {
        fail(`an open server's welcome carries tenant_id null, got ${show(first)}`);
      }
      run.mode = "open";
      run.version = json.version;
      return `open server, version ${json.version}`;
    }
    fail(`expected the welcome frame or auth_required first, got ${show(first)}`);
  },
};

const keyAccepted: Check = {
  name: "auth: key accepted",
  skip: needsAuthServer,
  async run(run) {
    const key = run.settings.apiKey;
    if (key === undefined) fail("the server requires an API key: pass --api-key KEY");
    const socket = await run.open();
    const timeout = run.settings.timeoutMs;
    const first = await socket.next(timeout, "auth_required");
    if (first.json?.type !== "auth_required") fail(`expected auth_required, got ${show(first)}`);
    socket.send({ type: "auth", api_key: key });
    const answer = await socket.next(timeout, "the answer to the auth frame");
    if (answer.json?.type === "auth_failed") fail(`the key was refused: ${show(answer)}`);
    const tenant = answer.json?.tenant_id;
    if (answer.json?.type !== "auth_success" || typeof tenant !== "string") {
      fail(`expected auth_success with a tenant_id, got ${show(answer)}`);
    }
    const hello = await socket.next(timeout, "the welcome frame");
    const json = hello.json;
    if (json?.status !== "connected" || typeof json.version !== "string") {
      fail(`expected the welcome frame after auth_success, got ${show(hello)}`);
    }
    if (json.tenant_id !== tenant) {
      fail(`the welcome names tenant ${json.tenant_id}, auth_success named ${tenant}`);
    }
    run.tenant = tenant;
    run.version = json.version;
    return `auth_success for tenant ${tenant}, then the welcome (version ${json.version})`;
  },
};

const wrongKey: Check = {
  name: "auth: wrong key refused",
  skip: needsAuthServer,
  async run(run) {
    const socket = await run.open();
    const timeout = run.settings.timeoutMs;
    await socket.next(timeout, "auth_required");
    socket.send({ type: "auth", api_key: `realm-conformance-no-such-key-${Date.now()}` });
    const answer = await socket.next(timeout, "auth_failed");
    if (answer.json?.type !== "auth_failed" || typeof answer.json.error !== "string") {
      fail(`expected auth_failed with an error, got ${show(answer)}`);
    }
    const closed = await socket.waitClosed(timeout);
    if (closed === undefined) fail(`the socket stayed open after ${show(answer)}`);
    return `auth_failed ${quote(answer.json.error)}, then closed (code ${closed.code})`;
  },
};

const noKey: Check = {
  name: "auth: no key refused",
  skip: needsAuthServer,
  async run(run) {
    const client = run.client({ apiKey: undefined });
    const error = await rejectsWith(client.connect(), "UNAUTHORIZED", "a client without a key");
    if (!/API key/.test(error.message)) {
      fail(`the client's error does not ask for a key: ${error.message}`);
    }
    const socket = await run.open();
    const timeout = run.settings.timeoutMs;
    await socket.next(timeout, "auth_required");
    socket.send(run.call(run.id(), "health", {}, null));
    const answer = await socket.next(timeout, "auth_failed");
    if (answer.json?.type !== "auth_failed") {
      fail(`a call instead of the auth frame: expected auth_failed, got ${show(answer)}`);
    }
    const closed = await socket.waitClosed(timeout);
    if (closed === undefined) fail(`the socket stayed open after ${show(answer)}`);
    return `a client without a key: ${error.code} at connect(); a call instead of the auth ` +
      `frame: auth_failed, then closed`;
  },
};

const connects: Check = {
  name: "client connects",
  skip: needsSession,
  async run(run) {
    const client = run.client();
    await client.connect();
    if (client.state !== "open") fail(`state is ${client.state} after connect()`);
    const version = client.getServerVersion();
    if (run.version !== undefined && version !== run.version) {
      fail(`getServerVersion() is ${version}, the welcome said ${run.version}`);
    }
    if (client.getTenantId() !== run.tenant) {
      fail(`getTenantId() is ${client.getTenantId()}, expected ${run.tenant}`);
    }
    return `open, version ${version}, tenant ${client.getTenantId()}`;
  },
};

const tenant: Check = {
  name: "tenant",
  skip: needsSession,
  async run(run) {
    const socket = await run.session();
    const timeout = run.settings.timeoutMs;
    const ask = async (fn: string, params: unknown, tenant: string | null) => {
      const id = run.id();
      socket.send(run.call(id, fn, params, tenant));
      return { id, frame: (await socket.answer(id, timeout)).frame };
    };
    if (run.mode === "authenticated") {
      const other = await ask("health", {}, `${run.tenant}-other`);
      expectError(other.frame, other.id, "UNAUTHORIZED", "another tenant's call");
      const none = await ask("health", {}, null);
      expectError(none.frame, none.id, "UNAUTHORIZED", "a call without tenant_id");
      const own = await ask("health", {}, run.tenant);
      expectComplete(own.frame, own.id, "a call with the key's tenant");
      return `the key's tenant served; another tenant and none refused with UNAUTHORIZED`;
    }
    const own = await ask("generate", { prompt: "Hi", max_tokens: 1 }, run.tenant);
    expectComplete(own.frame, own.id, `generate for tenant ${run.tenant}`);
    const none = await ask("health", {}, null);
    expectComplete(none.frame, none.id, "health without tenant_id");
    const bad = await ask("generate", { prompt: "Hi", max_tokens: 1 }, "x");
    const { message } = expectError(bad.frame, bad.id, "DISPATCH_ERROR", 'generate for tenant "x"');
    return `a valid tenant and none served; tenant "x" refused: ${quote(message)}`;
  },
};

const health: Check = {
  name: "health",
  skip: needsSession,
  async run(run) {
    const client = run.client();
    await client.connect();
    const status = await client.health();
    if (status.status !== "healthy") fail(`status is ${quote(status.status)}, not "healthy"`);
    if (typeof status.version !== "string") fail(`no version: ${JSON.stringify(status)}`);
    if (typeof status.uptime_seconds !== "number" || !(status.uptime_seconds >= 0)) {
      fail(`uptime_seconds is not a number ≥ 0: ${JSON.stringify(status)}`);
    }
    return `healthy, version ${status.version}, uptime ${status.uptime_seconds} s`;
  },
};

const metadata: Check = {
  name: "metadata",
  skip: needsSession,
  async run(run) {
    const client = run.client();
    await client.connect();
    const meta = await client.metadata();
    if (typeof meta.version !== "string" || !Array.isArray(meta.functions)) {
      fail(`expected {version, functions: [...]}, got ${JSON.stringify(meta).slice(0, 300)}`);
    }
    for (const fn of meta.functions) {
      if (typeof fn?.name !== "string" || !Array.isArray(fn.params)) {
        fail(`a function without a name or params: ${JSON.stringify(fn)}`);
      }
      for (const param of fn.params) {
        if (
          typeof param?.name !== "string" || typeof param.type !== "string" ||
          typeof param.required !== "boolean"
        ) {
          fail(`${fn.name}: a parameter without name, type or required: ${JSON.stringify(param)}`);
        }
      }
    }
    const names = meta.functions.map((fn) => fn.name);
    for (const name of ["generate", "health", "metadata"]) {
      if (!names.includes(name)) fail(`${name} is not listed: ${names.join(", ")}`);
    }
    const generate = meta.functions.find((fn) => fn.name === "generate")!;
    if (generate.streaming !== true) fail("generate is not marked streaming");
    return `${names.length} functions: ${names.join(", ")}`;
  },
};

const generateWhole: Check = {
  name: "generate",
  skip: needsSession,
  async run(run) {
    const client = run.client();
    await client.connect();
    const result = await client.generate({
      prompt: "What is the capital of France?",
      max_tokens: 16,
    });
    if (typeof result.text !== "string" || result.text === "") fail("no text in the result");
    if (typeof result.tokens_generated !== "number") fail("no tokens_generated in the result");
    return `${quote(result.text)}, ${plural(result.tokens_generated, "token")}`;
  },
};

const generateStreamed: Check = {
  name: "generate, streamed",
  skip: needsSession,
  async run(run) {
    const client = run.client();
    await client.connect();
    const stream = client.generateStream({ prompt: "Hello", max_tokens: 5 });
    const tokens: string[] = [];
    for await (const token of stream) tokens.push(token);
    const result = await stream.result;
    if (tokens.length === 0 || tokens.length > 5) fail(`${tokens.length} tokens for max_tokens 5`);
    if (result.tokens_generated !== tokens.length) {
      fail(`tokens_generated is ${result.tokens_generated}, ${tokens.length} tokens came`);
    }
    if (result.text !== tokens.join("")) fail("result.text is not the tokens joined");
    const joined: string[] = [];
    const whole = await client.generate({
      prompt: "Hello",
      max_tokens: 5,
      stream: true,
      onToken: (token) => joined.push(token),
    });
    if (whole.text !== joined.join("") || joined.length === 0) {
      fail(`generate({stream: true}): text ${quote(whole.text)}, tokens ${JSON.stringify(joined)}`);
    }
    return `${plural(tokens.length, "token")}: ${quote(tokens.join(""))}`;
  },
};

const streamFrames: Check = {
  name: "stream frames",
  skip: needsSession,
  async run(run) {
    const socket = await run.session();
    const timeout = run.settings.timeoutMs;
    const id = run.id();
    const next = run.id();
    socket.send(run.call(id, "generate", { prompt: "Hello", max_tokens: 4, stream: true }));
    socket.send(run.call(next, "health", {}));
    const { tokens, complete } = await readStream(socket, id, 4, timeout);
    if (tokens.length === 0) fail("no token before the complete frame");
    if (complete.tokens_generated !== tokens.length) {
      fail(`complete says tokens_generated ${complete.tokens_generated}, ${tokens.length} came`);
    }
    const { frame, skipped } = await socket.answer(next, timeout, "the answer to the next call");
    expectComplete(frame, next, "the call after the stream");
    const late = skipped.find((seen) => seen.json?.id === id);
    if (late) fail(`a frame of the stream after its complete frame: ${show(late)}`);
    return `${tokens.length} streaming frames (index 0 to ${tokens.length - 1}, ` +
      `data.text, is_final on the last), then complete with tokens_generated ${tokens.length}`;
  },
};

const zeroTokens: Check = {
  name: "max_tokens: 0",
  skip: needsSession,
  async run(run) {
    const client = run.client();
    const refused = await rejectsWith(
      client.generateStream({ prompt: "Hi", max_tokens: 0 }).result,
      "INVALID_PARAMS",
      "the client with max_tokens: 0",
    );
    if (refused.sent === true) fail("the client sent the call before refusing it");
    const socket = await run.session();
    const timeout = run.settings.timeoutMs;
    const id = run.id();
    const next = run.id();
    socket.send(run.call(id, "generate", { prompt: "Hi", max_tokens: 0, stream: true }));
    socket.send(run.call(next, "health", {}));
    const { frame, skipped } = await socket.answer(next, timeout, "the answer to the next call");
    expectComplete(frame, next, "the call after the max_tokens: 0 stream");
    // Frames of the empty stream that arrive late, after the next call's answer.
    await socket.waitClosed(200);
    const ours = [...skipped, ...socket.drain()].filter((seen) => seen.json?.id === id);
    if (ours.length === 0) {
      return "the client refuses it before sending; the server sends nothing for it (the known " +
        "quirk: such a stream never ends)";
    }
    const status = ours[0].json?.status;
    if (ours.length === 1 && (status === "error" || status === "complete")) {
      return `the client refuses it before sending; the server ends it: ${show(ours[0])}`;
    }
    fail(`expected no frame or one terminal frame, got ${ours.map(show).join(" ")}`);
  },
};

const badParams: Check = {
  name: "bad parameters",
  skip: needsSession,
  async run(run) {
    const client = run.client();
    await rejectsWith(
      client.generate({ prompt: 42 as unknown as string }),
      "INVALID_PARAMS",
      "the client with prompt: 42",
    );
    const socket = await run.session();
    const timeout = run.settings.timeoutMs;
    const messages: string[] = [];
    for (const params of [{ prompt: 42 }, { max_tokens: 5 }, { prompt: "Hi", max_tokens: -1 }]) {
      const id = run.id();
      socket.send(run.call(id, "generate", params));
      const { frame } = await socket.answer(id, timeout);
      const what = `generate with ${JSON.stringify(params)}`;
      messages.push(expectError(frame, id, "DISPATCH_ERROR", what).message);
    }
    return `the client refuses them; the server: DISPATCH_ERROR ${
      messages.map((m) => quote(m, 40))
        .join(", ")
    }`;
  },
};

const unknownFunction: Check = {
  name: "unknown function",
  skip: needsSession,
  async run(run) {
    const socket = await run.session();
    const id = run.id();
    socket.send(run.call(id, "realm_conformance_no_such_function", {}));
    const { frame } = await socket.answer(id, run.settings.timeoutMs);
    const { message } = expectError(frame, id, "DISPATCH_ERROR", "an unknown function");
    return `DISPATCH_ERROR ${quote(message)}`;
  },
};

const unparseable: Check = {
  name: "unparseable frame",
  skip: needsSession,
  async run(run) {
    const socket = await run.session();
    const timeout = run.settings.timeoutMs;
    socket.send("{not json");
    const answer = await socket.next(timeout, "an answer to the unparseable frame");
    const { code, message } = expectError(answer, "unknown", undefined, "an unparseable frame");
    const id = run.id();
    socket.send(run.call(id, "health", {}));
    expectComplete((await socket.answer(id, timeout)).frame, id, "a call after it");
    return `id "unknown", ${code} ${quote(message)}; the socket still serves`;
  },
};

const binary: Check = {
  name: "binary frame",
  skip: needsSession,
  async run(run) {
    const socket = await run.session();
    const timeout = run.settings.timeoutMs;
    socket.sendBinary(new Uint8Array([1, 2, 3]));
    const answer = await socket.next(timeout, "an answer to the binary frame");
    if (typeof answer.json?.error !== "string" || "id" in answer.json) {
      fail(`expected {"error": "..."} without an id, got ${show(answer)}`);
    }
    const id = run.id();
    socket.send(run.call(id, "health", {}));
    expectComplete((await socket.answer(id, timeout)).frame, id, "a call after it");
    return `${show(answer)}; the socket still serves`;
  },
};

const unknownPipeline: Check = {
  name: "unknown pipeline",
  skip: needsSession,
  async run(run) {
    const client = run.client();
    await client.connect();
    const error = await rejectsWith(
      client.executePipeline("realm-conformance-no-such-pipeline", {}),
      "DISPATCH_ERROR",
      "an unknown pipeline",
    );
    return `DISPATCH_ERROR ${quote(error.message)}`;
  },
};

const severalSockets: Check = {
  name: "several sockets",
  skip: needsSession,
  budget: 2,
  async run(run) {
    const n = run.settings.connections;
    const client = run.client({ connections: n });
    await client.connect();
    const open = client.stats().openConnections;
    if (open !== n) fail(`${open} sockets open, expected ${n}`);
    let settled = 0;
    const count = <T>(promise: Promise<T>) =>
      promise.finally(() => {
        settled++;
      });
    const streams = Array.from({ length: n }, (_, i) => {
      const tokens: string[] = [];
      return count(
        client.generate({
          prompt: `Hello ${i}`,
          max_tokens: 3,
          stream: true,
          onToken: (token) => tokens.push(token),
        }).then((result) => ({ result, tokens })),
      );
    });
    const wholes = Array.from({ length: n }, () => count(client.generate({ prompt: "Hi" })));
    const healths = Array.from({ length: n }, () => count(client.health()));
    const [streamed] = await Promise.all([
      Promise.all(streams),
      Promise.all(wholes),
      Promise.all(healths),
    ]);
    for (const { result, tokens } of streamed) {
      if (tokens.length === 0 || result.text !== tokens.join("")) {
        fail(`a stream's text ${quote(result.text)} is not its tokens ${JSON.stringify(tokens)}`);
      }
    }
    if (settled !== 3 * n) fail(`${settled} of ${3 * n} calls settled`);
    const stats = client.stats();
    if (stats.pendingCalls !== 0) fail(`${stats.pendingCalls} calls still pending`);
    return `${n} sockets, ${3 * n} calls at once (streams, generates, health), each settled once`;
  },
};

/** About how many calls a run makes (the rate-limit probe apart): 32 call frames today. */
export const CALLS_PER_RUN = 32;

/** Calls a rate-limit probe makes at most, raw and through the client each. */
const PROBE_LIMIT = 1000;

const rateLimit: Check = {
  name: "rate limit",
  budget: 6,
  skip(run) {
    if (!run.settings.rateLimit) {
      return "not asked: pass --rate-limit (it drains the key's bucket for a while)";
    }
    return needsServer(run) ??
      (run.mode === "open"
        ? "rate limits apply to authenticated connections only; this server is open"
        : needsSession(run));
  },
  async run(run) {
    const socket = await run.session();
    const timeout = run.settings.timeoutMs;
    let refusal: { id: string; frame: SeenFrame; calls: number } | undefined;
    let sent = 0;
    while (refusal === undefined && sent < PROBE_LIMIT) {
      // In batches: the answers to one come back before the next goes out.
      const ids = Array.from({ length: 25 }, () => run.id());
      for (const id of ids) socket.send(run.call(id, "health", {}));
      for (const id of ids) {
        sent++;
        const { frame } = await socket.answer(id, timeout);
        if (frame.json?.status === "error") refusal ??= { id, frame, calls: sent };
      }
    }
    if (refusal === undefined) {
      fail(
        `no call refused in ${sent} calls: the server has no rate limit for this key, or a ` +
          `burst above ${PROBE_LIMIT}`,
      );
    }
    const { message } = expectError(refusal.frame, refusal.id, "RATE_LIMIT_EXCEEDED", "a probe");
    const client = run.client({ connections: 1 });
    await client.connect();
    let error: RealmError | undefined;
    for (let calls = 0; error === undefined && calls < PROBE_LIMIT; calls += 10) {
      const results = await Promise.allSettled(
        Array.from({ length: 10 }, () => client.health({ maxRetries: 0 })),
      );
      for (const result of results) {
        if (result.status === "fulfilled") continue;
        if (!(result.reason instanceof RealmError)) throw result.reason;
        if (result.reason.code !== "RATE_LIMIT_EXCEEDED") {
          fail(`the client got ${describeError(result.reason)}`);
        }
        error ??= result.reason;
      }
    }
    if (error === undefined) fail("the client saw no RATE_LIMIT_EXCEEDED");
    if (typeof error.retryAfter !== "number" || !(error.retryAfter >= 0)) {
      fail(`the client's error has no retryAfter: ${describeError(error)}`);
    }
    return `call ${refusal.calls} refused: ${quote(message)}; the client's error: ` +
      `${error.code}, retryAfter ${error.retryAfter} s`;
  },
};

/**
 * The checks, in the order they run. The first learns the server's mode; the rate-limit probe
 * runs last, as it leaves the key's bucket empty.
 */
export const CHECKS: readonly Check[] = [
  welcome,
  keyAccepted,
  wrongKey,
  noKey,
  connects,
  tenant,
  health,
  metadata,
  generateWhole,
  generateStreamed,
  streamFrames,
  zeroTokens,
  badParams,
  unknownFunction,
  unparseable,
  binary,
  unknownPipeline,
  severalSockets,
  rateLimit,
];

/** Runs one check within its time limit; never throws. */
export async function runCheck(check: Check, run: Run): Promise<CheckResult> {
  const reason = check.skip?.(run);
  if (reason !== undefined) return { name: check.name, status: "skip", ms: 0, detail: reason };
  const started = performance.now();
  const limit = run.settings.timeoutMs * (check.budget ?? 1) + 1000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WaitFailed(`not done within ${limit} ms`)), limit);
  });
  let result: CheckResult;
  try {
    const detail = await Promise.race([check.run(run), late]);
    result = { name: check.name, status: "pass", ms: 0, detail };
  } catch (error) {
    let detail = error instanceof CheckFailed || error instanceof WaitFailed
      ? error.message
      : describeError(error);
    if (error instanceof RealmError && error.code === "RATE_LIMIT_EXCEEDED") {
      detail += ` (a run makes about ${CALLS_PER_RUN} calls: the key's rate limit is tighter)`;
    }
    result = { name: check.name, status: "fail", ms: 0, detail };
  } finally {
    clearTimeout(timer);
  }
  result.ms = Math.round(performance.now() - started);
  await run.cleanUp();
  return result;
}
