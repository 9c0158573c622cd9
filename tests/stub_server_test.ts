/**
 * The stub Realm server spoken to with raw WebSockets over 127.0.0.1: every behaviour the client
 * relies on, pinned frame by frame.
 *
 * @module
 */
import assert from "node:assert/strict";
import { startStubServer, type StubServer, type StubServerOptions } from "../testing.ts";
import { stablePort } from "./_helpers.ts";

const sanitize = { sanitizeOps: true, sanitizeResources: true } as const;

type Frame = Record<string, unknown>;

/** A raw WebSocket with a frame queue, so a test can await frames one by one. */
class RawClient {
  readonly socket: WebSocket;
  readonly closed: Promise<CloseEvent>;
  readonly #frames: string[] = [];
  #waiter: (() => void) | undefined;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    socket.addEventListener("message", (event) => {
      this.#frames.push(typeof event.data === "string" ? event.data : "<binary>");
      this.#waiter?.();
    });
    this.closed = new Promise((resolve) => socket.addEventListener("close", resolve));
    this.closed.then(() => this.#waiter?.());
  }

  /** Connects and waits for the socket to open (the server's first frame may follow). */
  static async open(url: string): Promise<RawClient> {
    const client = new RawClient(new WebSocket(url));
    await new Promise<void>((resolve, reject) => {
      client.socket.addEventListener("open", () => resolve());
      client.socket.addEventListener("error", () => reject(new Error("connection failed")));
    });
    return client;
  }

  /** The next frame, as text; fails after `ms`. */
  async nextText(ms = 3000): Promise<string> {
    const deadline = performance.now() + ms;
    while (this.#frames.length === 0) {
      const left = deadline - performance.now();
      if (left <= 0) assert.fail("timed out waiting for a frame");
      if (this.socket.readyState === WebSocket.CLOSED) assert.fail("socket closed, no frame");
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#waiter = undefined;
    }
    return this.#frames.shift()!;
  }

  /** The next frame, parsed. */
  async next(ms?: number): Promise<Frame> {
    return JSON.parse(await this.nextText(ms));
  }

  /** Asserts that no frame arrives within `ms`. */
  async nothingFor(ms: number): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, ms));
    assert.deepEqual(this.#frames, [], "expected no frame");
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  call(id: string, fn: string, params: unknown = {}, extra: Frame = {}): void {
    this.send({ id, function: fn, params, ...extra });
  }

  /** Closes (if still open) and waits for the close event. */
  async close(): Promise<CloseEvent> {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.close();
    return await this.closed;
  }
}

/** Runs `body` against a fresh server and client, closing both whatever happens. */
async function withServer(
  options: StubServerOptions,
  body: (server: StubServer, client: RawClient) => Promise<void>,
): Promise<void> {
  const server = await startStubServer({ tokenDelayMs: 1, ...options });
  const client = await RawClient.open(server.url);
  try {
    await body(server, client);
  } finally {
    await client.close();
    await server.close();
  }
}

/** Opens a client on an open-mode server and consumes the welcome frame. */
async function withWelcomed(
  options: StubServerOptions,
  body: (server: StubServer, client: RawClient) => Promise<void>,
): Promise<void> {
  await withServer(options, async (server, client) => {
    assert.equal((await client.next()).status, "connected");
    await body(server, client);
  });
}

const KEYS = { "key-a": "tenant-a", "key-b": "tenant-b" };

/** Opens a client on an authenticated server and authenticates it with `key`. */
async function authenticated(server: StubServer, key = "key-a"): Promise<RawClient> {
  const client = await RawClient.open(server.url);
  assert.equal((await client.next()).type, "auth_required");
  client.send({ type: "auth", api_key: key });
  assert.equal((await client.next()).type, "auth_success");
  assert.equal((await client.next()).status, "connected");
  return client;
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "open mode: the welcome frame is the first frame, exactly",
  ...sanitize,
  fn: () =>
    withServer({}, async (server, client) => {
      assert.equal(
        await client.nextText(),
        '{"status":"connected","tenant_id":null,"version":"0.1.0"}',
      );
      assert.equal(server.connectionCount, 1);
      assert.match(server.url, /^ws:\/\/127\.0\.0\.1:\d+$/);
      assert.equal(server.url, `ws://127.0.0.1:${server.port}`);
    }),
});

Deno.test({
  name: "version option: welcome, health and metadata report it",
  ...sanitize,
  fn: () =>
    withServer({ version: "9.9.9" }, async (_server, client) => {
      assert.equal((await client.next()).version, "9.9.9");
      client.call("h", "health");
      assert.equal(((await client.next()).data as Frame).version, "9.9.9");
      client.call("m", "metadata");
      assert.equal(((await client.next()).data as Frame).version, "9.9.9");
    }),
});

Deno.test({
  name: "auth mode: auth_required, then auth_success and the welcome with the key's tenant",
  ...sanitize,
  fn: () =>
    withServer({ apiKeys: KEYS }, async (_server, client) => {
      assert.equal(
        await client.nextText(),
        '{"message":"Please send authentication message with your API key","type":"auth_required"}',
      );
      client.send({ type: "auth", api_key: "key-b", extra: "ignored" });
      assert.equal(await client.nextText(), '{"tenant_id":"tenant-b","type":"auth_success"}');
      assert.equal(
        await client.nextText(),
        '{"status":"connected","tenant_id":"tenant-b","version":"0.1.0"}',
      );
      client.call("1", "health", {}, { tenant_id: "tenant-b" });
      const health = await client.next();
      assert.equal(health.status, "complete");
    }),
});

/** Sends `first` as the first frame to an auth server; returns the failure and the close code. */
async function authFailure(
  first: string | Uint8Array | undefined,
  options: StubServerOptions = {},
  prepare: (server: StubServer) => void = () => {},
): Promise<{ frame: string; code: number }> {
  const server = await startStubServer({ apiKeys: KEYS, ...options });
  prepare(server);
  const client = await RawClient.open(server.url);
  try {
    assert.equal((await client.next()).type, "auth_required");
    if (first !== undefined) client.socket.send(first);
    const frame = await client.nextText();
    const { code } = await client.closed;
    return { frame, code };
  } finally {
    await client.close();
    await server.close();
  }
}

const failed = (error: string) => JSON.stringify({ error, type: "auth_failed" });

Deno.test({
  name: "auth: an authenticated connection outlives authTimeoutMs",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ apiKeys: KEYS, authTimeoutMs: 30, tokenDelayMs: 1 });
    const client = await authenticated(server);
    try {
      await client.nothingFor(80);
      client.call("1", "health", {}, { tenant_id: "tenant-a" });
      assert.equal((await client.next()).status, "complete");
    } finally {
      await client.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "auth failure: invalid key, then a close without status code (1005)",
  ...sanitize,
  fn: async () => {
    const { frame, code } = await authFailure('{"type":"auth","api_key":"nope"}');
    assert.equal(frame, failed("Invalid API key"));
    assert.equal(code, 1005);
  },
});

Deno.test({
  name: "auth failure: a disabled key, and a removed key",
  ...sanitize,
  fn: async () => {
    const disabled = await authFailure(
      '{"type":"auth","api_key":"key-a"}',
      {},
      (server) => server.revokeApiKey("key-a"),
    );
    assert.equal(disabled.frame, failed("API key is disabled"));
    assert.equal(disabled.code, 1005);
    const removed = await authFailure(
      '{"type":"auth","api_key":"key-a"}',
      {},
      (server) => server.revokeApiKey("key-a", "removed"),
    );
    assert.equal(removed.frame, failed("Invalid API key"));
    assert.equal(removed.code, 1005);
  },
});

Deno.test({
  name: "auth failure: a call (or a wrong type) as first frame is an invalid format",
  ...sanitize,
  fn: async () => {
    const expected = failed(
      'Invalid authentication message format. Expected: {"type":"auth","api_key":"your-key"}',
    );
    const call = await authFailure('{"id":"1","function":"health","params":{}}');
    assert.equal(call.frame, expected);
    assert.equal(call.code, 1005);
    const wrongType = await authFailure('{"type":"login","api_key":"key-a"}');
    assert.equal(wrongType.frame, expected);
  },
});

Deno.test({
  name: "auth failure: a binary first frame",
  ...sanitize,
  fn: async () => {
    const { frame, code } = await authFailure(new Uint8Array([1, 2, 3]));
    assert.equal(frame, failed("Authentication message must be text"));
    assert.equal(code, 1005);
  },
});

Deno.test({
  name: "auth failure: timeout keeps the real message whatever authTimeoutMs is",
  ...sanitize,
  fn: async () => {
    const started = performance.now();
    const { frame, code } = await authFailure(undefined, { authTimeoutMs: 50 });
    assert.equal(frame, failed("Authentication timeout (10 seconds)"));
    assert.equal(code, 1005);
    assert.ok(performance.now() - started < 2000);
  },
});

Deno.test({
  name: "auth: setApiKey adds a key for later connections; open connections survive a revoke",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ apiKeys: KEYS, tokenDelayMs: 1 });
    const first = await authenticated(server, "key-a");
    server.setApiKey("key-c", "tenant-c");
    server.revokeApiKey("key-a");
    const second = await authenticated(server, "key-c");
    try {
      first.call("1", "health", {}, { tenant_id: "tenant-a" });
      assert.equal((await first.next()).status, "complete");
      second.call("2", "health", {}, { tenant_id: "tenant-c" });
      assert.equal((await second.next()).status, "complete");
    } finally {
      await first.close();
      await second.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "open mode: an auth frame is not a call (id unknown, missing field id)",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (_server, client) => {
      client.send('{"type":"auth","api_key":"k"}');
      assert.equal(
        await client.nextText(),
        '{"id":"unknown","status":"error","error":{"code":"INTERNAL_ERROR",' +
          '"message":"Invalid function call: missing field `id` at line 1 column 29"}}',
      );
    }),
});

// ---------------------------------------------------------------------------------------------
// Tenants and rate limits
// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "auth mode: a call with another tenant, null or no tenant is UNAUTHORIZED",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ apiKeys: KEYS, tokenDelayMs: 1 });
    const client = await authenticated(server);
    try {
      const expected = (id: string) =>
        JSON.stringify({
          id,
          status: "error",
          error: { code: "UNAUTHORIZED", message: "Tenant ID mismatch" },
        });
      client.call("1", "health", {}, { tenant_id: "tenant-b" });
      assert.equal(await client.nextText(), expected("1"));
      client.call("2", "health");
      assert.equal(await client.nextText(), expected("2"));
      client.call("3", "health", {}, { tenant_id: null });
      assert.equal(await client.nextText(), expected("3"));
      client.call("4", "generate", { prompt: "hi" }, { tenant_id: "tenant-a" });
      assert.equal((await client.next()).status, "complete");
    } finally {
      await client.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "rate limit: per tenant across connections, health included, message without retry_after",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({
      apiKeys: KEYS,
      rateLimit: { perMinute: 6, burst: 2 },
      tokenDelayMs: 1,
    });
    const first = await authenticated(server, "key-a");
    const second = await authenticated(server, "key-a");
    const other = await authenticated(server, "key-b");
    try {
      const tenant = { tenant_id: "tenant-a" };
      first.call("1", "health", {}, tenant);
      assert.equal((await first.next()).status, "complete");
      second.call("2", "metadata", {}, tenant);
      assert.equal((await second.next()).status, "complete");
      // The bucket is empty; at 6 a minute a token takes 10 s, rounded down to 9.
      first.call("3", "generate", { prompt: "hi" }, tenant);
      const limitedText = await first.nextText();
      assert.equal(
        limitedText,
        '{"id":"3","status":"error","error":{"code":"RATE_LIMIT_EXCEEDED",' +
          '"message":"Rate limit exceeded. Try again in 9 seconds."}}',
      );
      assert.ok(!limitedText.includes("retry_after"));
      second.call("4", "health", {}, tenant);
      assert.equal(((await second.next()).error as Frame).code, "RATE_LIMIT_EXCEEDED");
      // A tenant mismatch is refused before the limiter, and another tenant has its own bucket.
      first.call("5", "health", {}, { tenant_id: "tenant-b" });
      assert.equal(((await first.next()).error as Frame).code, "UNAUTHORIZED");
      other.call("6", "health", {}, { tenant_id: "tenant-b" });
      assert.equal((await other.next()).status, "complete");
    } finally {
      await first.close();
      await second.close();
      await other.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "rate limit: the wait is often 0 seconds, and tokens come back",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({
      apiKeys: KEYS,
      rateLimit: { perMinute: 1200, burst: 1 },
      tokenDelayMs: 1,
    });
    const client = await authenticated(server);
    try {
      const tenant = { tenant_id: "tenant-a" };
      client.call("1", "health", {}, tenant);
      assert.equal((await client.next()).status, "complete");
      client.call("2", "health", {}, tenant);
      assert.equal(
        ((await client.next()).error as Frame).message,
        "Rate limit exceeded. Try again in 0 seconds.",
      );
      await new Promise((resolve) => setTimeout(resolve, 80)); // 20 tokens a second
      client.call("3", "health", {}, tenant);
      assert.equal((await client.next()).status, "complete");
    } finally {
      await client.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "rate limit: off on open connections even when configured",
  ...sanitize,
  fn: () =>
    withWelcomed({ rateLimit: { perMinute: 1, burst: 0 } }, async (_server, client) => {
      client.call("1", "health");
      assert.equal((await client.next()).status, "complete");
    }),
});

// ---------------------------------------------------------------------------------------------
// generate
// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "generate without streaming: Paris, the simulated answer, and max_tokens ignored",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (_server, client) => {
      client.call("1", "generate", { prompt: "What is the CAPITAL of France?", max_tokens: 1 });
      assert.equal(
        await client.nextText(),
        '{"id":"1","status":"complete","data":{"cost_usd":0.00024,"prompt_tokens":6,' +
          '"text":"Paris","time_ms":150,"tokens_generated":1}}',
      );
      client.call("2", "generate", { prompt: "France: which city is its capital?" });
      const paris = (await client.next()).data as Frame;
      assert.equal(paris.text, "The capital of France is Paris.");
      assert.equal(paris.tokens_generated, 6);
      client.call("3", "generate", { prompt: "Tell me a story", stream: false });
      const story = (await client.next()).data as Frame;
      assert.equal(story.text, "Simulated response to: Tell me a story");
      assert.equal(story.tokens_generated, 7);
      assert.equal(story.prompt_tokens, 4);
      // Words are split as Rust's split_whitespace splits them: at U+0085, not at U+FEFF.
      client.call("4", "generate", { prompt: "a\u0085b\ufeffc" });
      assert.equal(((await client.next()).data as Frame).prompt_tokens, 2);
    }),
});

Deno.test({
  name: "generate stream: tokens in order with index and is_final, then complete",
  ...sanitize,
  fn: () =>
    withWelcomed({ tokenDelayMs: 2 }, async (_server, client) => {
      client.call("s", "generate", {
        prompt: "What is the capital of France?",
        max_tokens: 6,
        stream: true,
      });
      const texts: string[] = [];
      for (let index = 0; index < 6; index++) {
        const frame = await client.next();
        assert.deepEqual(Object.keys(frame), ["id", "status", "data"]);
        assert.equal(frame.id, "s");
        assert.equal(frame.status, "streaming");
        const data = frame.data as Frame;
        assert.deepEqual(Object.keys(data), ["index", "is_final", "text"]);
        assert.equal(data.index, index);
        assert.equal(data.is_final, index === 5);
        texts.push(data.text as string);
      }
      assert.equal(texts.join(""), "The capital of France is Paris. ");
      assert.equal(
        await client.nextText(),
        '{"id":"s","status":"complete","data":{"status":"complete","tokens_generated":6}}',
      );
    }),
});

Deno.test({
  name: "generate stream: at most the 13 simulated words, the last one the prompt's first word",
  ...sanitize,
  fn: () =>
    withWelcomed({ tokenDelayMs: 0 }, async (_server, client) => {
      client.call("s", "generate", { prompt: "  Hello there", max_tokens: 100, stream: true });
      const texts: string[] = [];
      for (let index = 0; index < 13; index++) {
        const data = (await client.next()).data as Frame;
        assert.equal(data.is_final, index === 12);
        texts.push(data.text as string);
      }
      assert.equal(
        texts.join(""),
        "The capital of France is Paris. This is a simulated response to: Hello ",
      );
      assert.equal(
        await client.nextText(),
        '{"id":"s","status":"complete","data":{"status":"complete","tokens_generated":13}}',
      );
      client.call("e", "generate", { prompt: " ", max_tokens: 13, stream: true });
      for (let index = 0; index < 12; index++) await client.next();
      assert.equal(((await client.next()).data as Frame).text, "unknown ");
      assert.equal(((await client.next()).data as Frame).tokens_generated, 13);
    }),
});

Deno.test({
  name: "generate stream: longStreams sends exactly max_tokens tokens, cycling the words",
  ...sanitize,
  fn: () =>
    withWelcomed({ tokenDelayMs: 0, longStreams: true }, async (_server, client) => {
      client.call("s", "generate", { prompt: "Hello there", max_tokens: 2000, stream: true });
      const texts: string[] = [];
      for (let index = 0; index < 2000; index++) {
        texts.push(((await client.next()).data as Frame).text as string);
      }
      const words = "The capital of France is Paris. This is a simulated response to: Hello"
        .split(" ");
      assert.equal(texts[0], "The ");
      assert.equal(texts[12], "Hello ");
      assert.equal(texts[13], "The ");
      assert.equal(texts[1999], `${words[1999 % 13]} `);
      assert.deepEqual((await client.next()).data, { status: "complete", tokens_generated: 2000 });
    }),
});

Deno.test({
  name: "generate stream: max_tokens 0 sends nothing at all, and the next call is answered",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (_server, client) => {
      client.call("zero", "generate", { prompt: "hi", max_tokens: 0, stream: true });
      await client.nothingFor(100);
      client.call("next", "health");
      const health = await client.next();
      assert.equal(health.id, "next");
      assert.equal(health.status, "complete");
    }),
});

Deno.test({
  name: "generate: parameter errors are DISPATCH_ERROR with serde_json's message",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (_server, client) => {
      const cases: Array<[unknown, string]> = [
        [{}, "missing field `prompt`"],
        [{ prompt: 5 }, "invalid type: integer `5`, expected a string"],
        [{ prompt: "x", max_tokens: -1 }, "invalid value: integer `-1`, expected usize"],
        [{ prompt: "x", max_tokens: "9" }, 'invalid type: string "9", expected usize'],
        [{ prompt: "x", stream: "yes" }, 'invalid type: string "yes", expected a boolean'],
        [{ prompt: "x", temperature: null }, "invalid type: null, expected f64"],
        [null, "invalid type: null, expected struct GenerateOptions"],
      ];
      for (const [index, [params, message]] of cases.entries()) {
        client.call(`${index}`, "generate", params);
        assert.deepEqual(await client.next(), {
          id: `${index}`,
          status: "error",
          error: { code: "DISPATCH_ERROR", message },
        });
      }
      // A float where usize is expected: serde_json keeps 1.0 a float.
      client.send('{"id":"f","function":"generate","params":{"prompt":"x","max_tokens":1.0}}');
      assert.equal(
        ((await client.next()).error as Frame).message,
        "invalid type: floating point `1.0`, expected usize",
      );
    }),
});

Deno.test({
  name: "generate: a tenant_id must be 3-64 letters, digits, '-' or '_' (null is none)",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (_server, client) => {
      client.call("1", "generate", { prompt: "x" }, { tenant_id: "ab" });
      assert.deepEqual((await client.next()).error, {
        code: "DISPATCH_ERROR",
        message: "Tenant ID must be between 3 and 64 characters, got 2",
      });
      client.call("2", "generate", { prompt: "x" }, { tenant_id: "bad tenant!" });
      assert.deepEqual((await client.next()).error, {
        code: "DISPATCH_ERROR",
        message: "Tenant ID must contain only alphanumeric characters, hyphens, and underscores",
      });
      client.call("3", "generate", { prompt: "x" }, { tenant_id: crypto.randomUUID() });
      assert.equal((await client.next()).status, "complete");
      client.call("4", "generate", { prompt: "x" }, { tenant_id: null });
      assert.equal((await client.next()).status, "complete");
      // Only generate checks the tenant id on an open server.
      client.call("5", "health", {}, { tenant_id: "ab" });
      assert.equal((await client.next()).status, "complete");
    }),
});

// ---------------------------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "one call at a time: a health sent with a stream is answered after the stream ends",
  ...sanitize,
  fn: () =>
    withWelcomed({ tokenDelayMs: 5 }, async (_server, client) => {
      client.call("s", "generate", { prompt: "hi", max_tokens: 5, stream: true });
      client.call("h", "health");
      const seen: string[] = [];
      for (let i = 0; i < 7; i++) {
        const frame = await client.next();
        seen.push(`${frame.id}:${frame.status}`);
      }
      assert.deepEqual(seen, [
        "s:streaming",
        "s:streaming",
        "s:streaming",
        "s:streaming",
        "s:streaming",
        "s:complete",
        "h:complete",
      ]);
    }),
});

Deno.test({
  name: "calls on different connections run concurrently",
  ...sanitize,
  fn: () =>
    withWelcomed({ tokenDelayMs: 20 }, async (server, client) => {
      const other = await RawClient.open(server.url);
      try {
        assert.equal((await other.next()).status, "connected");
        client.call("s", "generate", { prompt: "hi", max_tokens: 20, stream: true });
        assert.equal((await client.next()).status, "streaming");
        other.call("h", "health");
        assert.equal((await other.next(200)).status, "complete");
        assert.equal(server.connectionCount, 2);
      } finally {
        await other.close();
      }
    }),
});

Deno.test({
  name: "a socket closed mid-stream stops its work (the server closes cleanly afterwards)",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 5 });
    const client = await RawClient.open(server.url);
    await client.next();
    client.call("s", "generate", { prompt: "hi", max_tokens: 1000, stream: true });
    await client.next();
    await client.close();
    await server.close();
    assert.equal(server.connectionCount, 0);
  },
});

// ---------------------------------------------------------------------------------------------
// Frames that are not calls
// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "frames that are not calls get id unknown INTERNAL_ERROR with serde_json's reason",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (_server, client) => {
      const cases: Array<[string, string]> = [
        ["hello", "expected value at line 1 column 1"],
        ["{oops", "key must be a string at line 1 column 2"],
        ["{}", "missing field `id` at line 1 column 2"],
        ['{"id":"1","params":{}}', "missing field `function` at line 1 column 22"],
        ['{"id":"1","function":"health"}', "missing field `params` at line 1 column 30"],
        [
          '{"id":1,"function":"health","params":{}}',
          "invalid type: integer `1`, expected a string at line 1 column 7",
        ],
        [
          '{"id":"1","function":"health","params":{},"tenant_id":7}',
          "invalid type: integer `7`, expected a string at line 1 column 55",
        ],
        [
          '{"id":"1","id":"2","function":"health","params":{}}',
          "duplicate field `id` at line 1 column 14",
        ],
        [
          '{"id":"1","function":"health","params":{}',
          "EOF while parsing an object at line 1 column 41",
        ],
        ['{"id":"1","function":"health","params":{}} x', "trailing characters at line 1 column 44"],
        ["[]", "invalid length 0, expected struct FunctionCall with 4 elements at line 1 column 2"],
        ["", "EOF while parsing a value at line 1 column 0"],
      ];
      for (const [text, reason] of cases) {
        client.send(text);
        assert.deepEqual(await client.next(), {
          id: "unknown",
          status: "error",
          error: { code: "INTERNAL_ERROR", message: `Invalid function call: ${reason}` },
        }, text);
      }
    }),
});

Deno.test({
  name: "calls: unknown fields are ignored, params can be any JSON, an array is a call too",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (_server, client) => {
      client.send('{"id":"1","function":"health","params":null,"extra":[1,{"a":2}]}');
      assert.equal((await client.next()).status, "complete");
      client.send('["2","health",{},null]');
      assert.deepEqual(await client.next(), {
        id: "2",
        status: "complete",
        data: { status: "healthy", version: "0.1.0", uptime_seconds: 0 },
      });
    }),
});

Deno.test({
  name: "a binary frame after the handshake gets the bare Binary messages error",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (_server, client) => {
      client.socket.send(new Uint8Array([1, 2]));
      assert.equal(await client.nextText(), '{"error":"Binary messages not supported"}');
    }),
});

Deno.test({
  name: "an unknown function is a DISPATCH_ERROR",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (_server, client) => {
      client.call("1", "embed", {});
      assert.equal(
        await client.nextText(),
        '{"id":"1","status":"error","error":{"code":"DISPATCH_ERROR","message":"Unknown function: embed"}}',
      );
    }),
});

// ---------------------------------------------------------------------------------------------
// health, metadata, pipeline
// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "health: healthy, uptime 0 (the real server does not count it) and the version",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (_server, client) => {
      await new Promise((resolve) => setTimeout(resolve, 1100));
      client.call("h", "health");
      assert.equal(
        await client.nextText(),
        '{"id":"h","status":"complete","data":{"status":"healthy","uptime_seconds":0,"version":"0.1.0"}}',
      );
    }),
});

/** The real server's answer to `metadata` (id "m"), byte for byte: its keys sorted. */
const REAL_METADATA = '{"id":"m","status":"complete","data":{"functions":[' +
  '{"description":"Generate text completion from a prompt","name":"generate","params":[' +
  '{"description":"Input text prompt","name":"prompt","required":true,"type":"String"},' +
  '{"default":100,"description":"Maximum tokens to generate","name":"max_tokens",' +
  '"required":false,"type":"usize"},' +
  '{"default":0.7,"description":"Sampling temperature (0.0-2.0)","name":"temperature",' +
  '"required":false,"type":"f64"},' +
  '{"default":false,"description":"Enable token streaming","name":"stream","required":false,' +
  '"type":"bool"}],"returns":"GenerationResult","streaming":true},' +
  '{"description":"Check server health status","name":"health","params":[],' +
  '"returns":"HealthStatus","streaming":false},' +
  '{"description":"Get runtime metadata (available functions)","name":"metadata","params":[],' +
  '"returns":"RuntimeMetadata","streaming":false},' +
  '{"description":"Execute a multi-model pipeline","name":"pipeline","params":[' +
  '{"description":"Pipeline name to execute","name":"pipeline","required":true,"type":"String"},' +
  '{"description":"Input data for the pipeline","name":"input","required":true,"type":"Object"}' +
  '],"returns":"PipelineResult","streaming":false}],"version":"0.1.0"}}';

Deno.test({
  name: "metadata: the four functions with their parameters, as the real server writes them",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (_server, client) => {
      client.call("m", "metadata");
      assert.equal(await client.nextText(), REAL_METADATA);
    }),
});

Deno.test({
  name: "pipeline: built-in rag-pipeline, user pipelines, not found, failures",
  ...sanitize,
  fn: () =>
    withWelcomed({
      pipelines: {
        echo: (input) => ({ echoed: input }),
        slow: async (input) => {
          await new Promise((resolve) => setTimeout(resolve, 5));
          return input;
        },
        broken: () => {
          throw new Error("step exploded");
        },
      },
    }, async (_server, client) => {
      client.call("1", "pipeline", {
        pipeline: "rag-pipeline",
        input: { query: "What is the capital of France?", context: ["doc-1"] },
      });
      assert.deepEqual((await client.next()).data, { answer: "Paris", sources: ["doc-1"] });
      client.call("2", "pipeline", { pipeline: "echo", input: { b: [1, { z: 1, y: 2 }], a: 0 } });
      // The output is a serde_json::Value on the server: its keys come out sorted.
      assert.equal(
        await client.nextText(),
        '{"id":"2","status":"complete","data":{"echoed":{"a":0,"b":[1,{"y":2,"z":1}]}}}',
      );
      client.call("3", "pipeline", { pipeline: "slow", input: "text" });
      assert.deepEqual(await client.next(), { id: "3", status: "complete", data: "text" });
      client.call("4", "pipeline", { pipeline: "echo" });
      assert.deepEqual((await client.next()).data, { echoed: {} });
      const errorOf = async (id: string, params: unknown) => {
        client.call(id, "pipeline", params);
        const frame = await client.next();
        assert.equal(frame.status, "error");
        return frame.error;
      };
      assert.deepEqual(await errorOf("5", { pipeline: "nope", input: {} }), {
        code: "DISPATCH_ERROR",
        message: "Pipeline not found: nope",
      });
      assert.deepEqual(await errorOf("6", { pipeline: "broken", input: {} }), {
        code: "DISPATCH_ERROR",
        message: "step exploded",
      });
      assert.deepEqual(await errorOf("7", { input: {} }), {
        code: "DISPATCH_ERROR",
        message: "Missing 'pipeline' parameter",
      });
      assert.deepEqual(await errorOf("8", { pipeline: "rag-pipeline", input: { other: 1 } }), {
        code: "DISPATCH_ERROR",
        message: "Could not extract prompt from step input",
      });
    }),
});

Deno.test({
  name: "pipeline: no orchestrator by default, as the real server in simulation mode",
  ...sanitize,
  fn: async () => {
    await withWelcomed({}, async (_server, client) => {
      client.call("1", "pipeline", { pipeline: "rag-pipeline", input: { query: "q" } });
      assert.equal(
        await client.nextText(),
        '{"id":"1","status":"error","error":{"code":"DISPATCH_ERROR",' +
          '"message":"Orchestrator not available"}}',
      );
    });
    await withWelcomed({ orchestrator: false, pipelines: { echo: (input) => input } }, async (
      _server,
      client,
    ) => {
      client.call("1", "pipeline", { pipeline: "echo", input: {} });
      assert.equal(((await client.next()).error as Frame).message, "Orchestrator not available");
    });
    await withWelcomed({ orchestrator: true }, async (_server, client) => {
      client.call("1", "pipeline", { pipeline: "rag-pipeline", input: { query: "Hi" } });
      assert.deepEqual((await client.next()).data, {
        answer: "Simulated response to: Hi",
        sources: [],
      });
    });
  },
});

// ---------------------------------------------------------------------------------------------
// Bookkeeping
// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "receivedFrames and callCount record what clients sent",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (server, client) => {
      assert.deepEqual(server.receivedFrames(), []);
      assert.equal(server.callCount, 0);
      client.call("1", "health", {}, { tenant_id: "acme" });
      await client.next();
      client.send("{oops");
      await client.next();
      assert.deepEqual(server.receivedFrames(), [
        '{"id":"1","function":"health","params":{},"tenant_id":"acme"}',
        "{oops",
      ]);
      assert.equal(server.callCount, 1);
      server.receivedFrames().length = 0; // a copy: the record is unaffected
      assert.equal(server.receivedFrames().length, 2);
    }),
});

Deno.test({
  name: "close(): closes client sockets with 1005, is idempotent, and frees the port",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 5, port: stablePort() });
    const client = await RawClient.open(server.url);
    await client.next();
    client.call("s", "generate", { prompt: "hi", max_tokens: 100, stream: true });
    await client.next();
    const closing = server.close();
    assert.equal(server.close(), closing);
    await closing;
    assert.equal((await client.closed).code, 1005);
    assert.equal(server.connectionCount, 0);
    const again = await startStubServer({ port: server.port });
    await again.close();
  },
});

Deno.test({
  name: "options are checked",
  ...sanitize,
  fn: async () => {
    await assert.rejects(startStubServer({ tokenDelayMs: -1 }), RangeError);
    await assert.rejects(startStubServer({ authTimeoutMs: Number.NaN }), RangeError);
    await assert.rejects(startStubServer({ rateLimit: { perMinute: 0, burst: 1 } }), RangeError);
    await assert.rejects(startStubServer({ port: 70000 }), RangeError);
  },
});

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "fault dropAfterFrames: open connections drop after n more frames (1011), new ones too",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 1 });
    const client = await RawClient.open(server.url);
    try {
      await client.next();
      server.faults.dropAfterFrames(3);
      client.call("s", "generate", { prompt: "hi", max_tokens: 10, stream: true });
      for (let i = 0; i < 3; i++) assert.equal((await client.next()).status, "streaming");
      assert.equal((await client.closed).code, 1011);
      assert.equal(server.connectionCount, 0);
      // A new connection counts from its welcome: 1 frame, then dropped.
      server.faults.dropAfterFrames(1);
      const fresh = await RawClient.open(server.url);
      assert.equal((await fresh.next()).status, "connected");
      assert.equal((await fresh.closed).code, 1011);
      // 0 drops new connections before their first frame.
      server.faults.dropAfterFrames(0);
      const none = await RawClient.open(server.url);
      assert.equal((await none.closed).code, 1011);
      server.faults.dropAfterFrames(Infinity);
      const healthy = await RawClient.open(server.url);
      assert.equal((await healthy.next()).status, "connected");
      await healthy.close();
    } finally {
      await client.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "fault stall: no first frame, calls swallowed, streams pause and resume",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 2 });
    const streaming = await RawClient.open(server.url);
    try {
      await streaming.next();
      streaming.call("s", "generate", { prompt: "hi", max_tokens: 8, stream: true });
      assert.equal(((await streaming.next()).data as Frame).index, 0);
      server.faults.stall(true);
      const late = await RawClient.open(server.url);
      try {
        await late.nothingFor(60);
        late.call("swallowed", "health");
        await late.nothingFor(30);
        // Whatever the stream sent before the stall took effect, it is paused now.
        const pausedAt: number[] = [];
        for (;;) {
          const probe = await streaming.next(30).catch(() => undefined);
          if (probe === undefined) break;
          pausedAt.push((probe.data as Frame).index as number);
        }
        await streaming.nothingFor(40);
        server.faults.stall(false);
        assert.equal((await late.next()).status, "connected");
        late.call("after", "health");
        assert.equal((await late.next()).id, "after"); // the swallowed call never got an answer
        const rest: Frame[] = [];
        for (;;) {
          const frame = await streaming.next();
          rest.push(frame);
          if (frame.status === "complete") break;
        }
        const indexes = [...pausedAt, ...rest.slice(0, -1).map((f) => (f.data as Frame).index)];
        assert.deepEqual(indexes, [1, 2, 3, 4, 5, 6, 7].slice(0, indexes.length));
        assert.equal(indexes.length, 7);
        assert.equal(server.callCount, 3);
      } finally {
        await late.close();
      }
    } finally {
      await streaming.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "fault sendMalformed: each kind, pushed to every open connection",
  ...sanitize,
  fn: () =>
    withWelcomed({}, async (server, client) => {
      const other = await RawClient.open(server.url);
      try {
        await other.next();
        server.faults.sendMalformed("not-json");
        assert.equal(await client.nextText(), "{oops");
        assert.equal(await other.nextText(), "{oops");
        server.faults.sendMalformed("unknown-id");
        const orphan = await client.next();
        assert.equal(orphan.status, "complete");
        assert.match(orphan.id as string, /^stub-orphan-\d+$/);
        await other.next();
        server.faults.sendMalformed("binary-reply");
        assert.equal(await client.nextText(), '{"error":"Binary messages not supported"}');
        await other.next();
        server.faults.sendMalformed("id-unknown");
        assert.deepEqual(await client.next(), {
          id: "unknown",
          status: "error",
          error: {
            code: "INTERNAL_ERROR",
            message: "Invalid function call: expected value at line 1 column 1",
          },
        });
        await other.next();
      } finally {
        await other.close();
      }
    }),
});

Deno.test({
  name: "fault sendMalformed during a stall: it is the first frame a new client sees",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({});
    server.faults.stall(true);
    const client = await RawClient.open(server.url);
    try {
      server.faults.sendMalformed("not-json");
      assert.equal(await client.nextText(), "{oops");
      server.faults.clear();
      assert.equal((await client.next()).status, "connected");
    } finally {
      await client.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "fault rejectConnections: upgrades get HTTP 503 until turned off",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({});
    try {
      server.faults.rejectConnections(true);
      const response = await fetch(`http://127.0.0.1:${server.port}/`);
      assert.equal(response.status, 503);
      await response.body?.cancel();
      await assert.rejects(RawClient.open(server.url));
      server.faults.clear();
      const client = await RawClient.open(server.url);
      assert.equal((await client.next()).status, "connected");
      await client.close();
    } finally {
      await server.close();
    }
  },
});
