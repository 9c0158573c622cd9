/**
 * The one behaviour suite of the npm package, run unchanged on Node 20 (`ws`), Node 22, Bun and
 * in Chromium. It imports nothing: the runner hands it the package's exports and the stub
 * servers (started in the runner's process, or in the Node process behind the browser page).
 *
 * @module
 */

/**
 * What the suite needs from its runner.
 *
 * @typedef {object} BehaviourEnv
 * @property {typeof import("@realm-ai/ws-client").RealmWebSocketClient} RealmWebSocketClient
 * @property {typeof import("@realm-ai/ws-client").RealmError} RealmError
 * @property {string} openUrl A stub server in open mode (no authentication).
 * @property {string} authUrl A stub server with authentication.
 * @property {string} apiKey A key the authenticating server accepts.
 * @property {string} tenantId The tenant that key belongs to.
 * @property {() => Promise<void>} dropConnections Cuts every connection of the open server.
 * @property {"global" | "fallback" | "option"} expectedSource Which WebSocket the client must pick.
 * @property {(line: string) => void} [log] Where the report lines go (default: console.log).
 */

const MODEL = "llama-2-7b";

/**
 * Runs every check and reports one line per check, then `N passed, N failed`.
 *
 * @param {BehaviourEnv} env
 * @returns {Promise<{ passed: number, failed: number, failures: string[] }>}
 */
export async function runBehaviour(env) {
  const log = env.log ?? ((line) => console.log(line));
  const { RealmWebSocketClient, RealmError } = env;
  const clients = [];
  /** A client that is disconnected when the suite ends, whatever happens. */
  const newClient = (options) => {
    const client = new RealmWebSocketClient({ model: MODEL, timeout: 10_000, ...options });
    clients.push(client);
    return client;
  };
  const checks = [];
  const check = (name, fn) => checks.push({ name, fn });

  /** @param {unknown} error @param {string} code */
  const expectRealmError = (error, code) => {
    assert(error instanceof RealmError, `expected a RealmError, got ${describe(error)}`);
    assert(error.code === code, `expected code ${code}, got ${error.code}: ${error.message}`);
  };

  /** Resolves with the error the promise rejects with; fails if it resolves. */
  const rejection = async (promise) => {
    try {
      await promise;
    } catch (error) {
      return error;
    }
    throw new Error("expected a rejection, but it resolved");
  };

  const shared = newClient({ url: env.openUrl });

  check("connect (open mode) with the expected WebSocket", async () => {
    await shared.connect();
    assert(shared.isConnected(), "isConnected() after connect()");
    const source = shared.getWebSocketSource();
    assert(source === env.expectedSource, `WebSocket source ${source}, want ${env.expectedSource}`);
    assert(shared.getServerVersion() === "0.1.0", `server version ${shared.getServerVersion()}`);
    assert(/^[0-9a-f-]{36}$/.test(shared.getTenantId()), `own tenant id ${shared.getTenantId()}`);
  });

  check("auth: the key is sent and the server's tenant adopted", async () => {
    const client = newClient({ url: env.authUrl, apiKey: env.apiKey, tenantId: "my-own-tenant" });
    await client.connect();
    assert(client.getTenantId() === env.tenantId, `tenant ${client.getTenantId()}`);
    const health = await client.health();
    assert(health.status === "healthy", `health after auth: ${JSON.stringify(health)}`);
    await client.disconnect();
  });

  check("auth: a wrong key and a missing key fail with UNAUTHORIZED", async () => {
    const wrong = newClient({ url: env.authUrl, apiKey: "not-a-key", reconnect: false });
    expectRealmError(await rejection(wrong.connect()), "UNAUTHORIZED");
    const missing = newClient({ url: env.authUrl, reconnect: false, connectTimeout: 5000 });
    const started = Date.now();
    expectRealmError(await rejection(missing.connect()), "UNAUTHORIZED");
    assert(Date.now() - started < 4000, "a missing key fails at once, not at the auth timeout");
  });

  check("generate", async () => {
    const result = await shared.generate({ prompt: "What is the capital of France?" });
    // The server's exact answer, every field kept, beside the call's id and timing.
    assertSame(serverAnswer(result), {
      text: "Paris",
      tokens_generated: 1,
      prompt_tokens: 6,
      cost_usd: 0.00024,
      time_ms: 150,
    });
  });

  check("stream: generateStream and generate({ stream: true })", async () => {
    const tokens = [];
    for await (const token of shared.generateStream({ prompt: "Tell me a story", max_tokens: 5 })) {
      tokens.push(token);
    }
    // The simulated stream's words, in order, each with its trailing space.
    assertSame(tokens, ["The ", "capital ", "of ", "France ", "is "]);
    const seen = [];
    const joined = await shared.generate({
      prompt: "Tell me a story",
      max_tokens: 4,
      stream: true,
      onToken: (token) => seen.push(token),
    });
    assertSame(seen, ["The ", "capital ", "of ", "France "]);
    assertSame(serverAnswer(joined), { text: "The capital of France ", tokens_generated: 4 });
    assert(joined.timeToFirstTokenMs <= joined.durationMs, describe(joined));
  });

  check("stream: the ReadableStream view", async () => {
    const reader = shared.generateStream({ prompt: "Hi", max_tokens: 3 }).readable.getReader();
    const chunks = [];
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      chunks.push(read.value);
    }
    assertSame(chunks, ["The ", "capital ", "of "]);
  });

  check("pipeline", async () => {
    const output = await shared.executePipeline("rag-pipeline", {
      query: "What is ML?",
      context: "Machine learning is a field of AI.",
    });
    assertSame(serverAnswer(output), {
      answer: "Simulated response to: What is ML?",
      sources: ["Machine learning is a field of AI."],
    });
  });

  check("health", async () => {
    const health = await shared.health();
    assert(health.status === "healthy", `status ${health.status}`);
    assert(health.version === "0.1.0", `version ${health.version}`);
    assert(
      Number.isInteger(health.uptime_seconds) && health.uptime_seconds >= 0,
      `uptime_seconds ${health.uptime_seconds}`,
    );
    assertSame(Object.keys(health).sort(), ["requestId", "status", "uptime_seconds", "version"]);
  });

  check("metadata", async () => {
    const metadata = await shared.metadata();
    assert(metadata.version === "0.1.0", `metadata version ${metadata.version}`);
    const names = metadata.functions.map((f) => f.name);
    assertSame([...names].sort(), ["generate", "health", "metadata", "pipeline"]);
    const streaming = metadata.functions.filter((f) => f.streaming).map((f) => f.name);
    assertSame(streaming, ["generate"]);
    const generate = metadata.functions.find((f) => f.name === "generate");
    const prompt = generate.params.find((p) => p.name === "prompt");
    // The wire field is `type` (Rust's `param_type`), holding Rust type names.
    assert(prompt.type === "String" && prompt.required === true, describe(prompt));
  });

  check("error codes: DISPATCH_ERROR from the server, INVALID_PARAMS before sending", async () => {
    const error = await rejection(shared.executePipeline("no-such-pipeline", {}));
    expectRealmError(error, "DISPATCH_ERROR");
    assert(/Pipeline not found/.test(error.message), `message ${error.message}`);
    assert(error instanceof Error, "a RealmError is an Error");
    expectRealmError(
      await rejection(shared.generate({ prompt: "x", max_tokens: 0 })),
      "INVALID_PARAMS",
    );
  });

  check("abort: a stream stops with ABORTED", async () => {
    const client = newClient({ url: env.openUrl });
    await client.connect();
    const controller = new AbortController();
    const stream = client.generateStream(
      { prompt: "Tell me a long story", max_tokens: 40 },
      { signal: controller.signal },
    );
    let count = 0;
    const error = await rejection((async () => {
      for await (const _token of stream) {
        if (++count === 2) controller.abort();
      }
    })());
    expectRealmError(error, "ABORTED");
    assert(count === 2, `no token after the abort, got ${count}`);
    const aborted = new AbortController();
    aborted.abort();
    expectRealmError(await rejection(client.health({ signal: aborted.signal })), "ABORTED");
    await client.disconnect();
  });

  check("drop and reconnect", async () => {
    const client = newClient({
      url: env.openUrl,
      reconnectInterval: 50,
      maxReconnectInterval: 200,
    });
    await client.connect();
    const disconnected = once(client, "disconnected");
    const reconnected = disconnected.then(() => once(client, "connected"));
    await env.dropConnections();
    const { willReconnect } = await within(disconnected, 5000, "the disconnected event");
    assert(willReconnect === true, "willReconnect after a drop");
    await within(reconnected, 5000, "the reconnect");
    assert(client.isConnected(), "connected again");
    const health = await client.health();
    assert(health.status === "healthy", "health after the reconnect");
    await client.disconnect();
  });

  check("disconnect", async () => {
    await shared.disconnect();
    assert(!shared.isConnected(), "not connected after disconnect()");
    const stats = shared.stats();
    assert(stats.pendingCalls === 0 && stats.openConnections === 0, JSON.stringify(stats));
  });

  let passed = 0;
  const failures = [];
  for (const [index, { name, fn }] of checks.entries()) {
    try {
      await within(fn(), 20_000, name);
      passed++;
      log(`ok ${index + 1} - ${name}`);
    } catch (error) {
      failures.push(`${name}: ${describe(error)}`);
      log(`not ok ${index + 1} - ${name}: ${describe(error)}`);
    }
  }
  await Promise.all(clients.map((client) => client.disconnect()));
  log(`${passed} passed, ${failures.length} failed`);
  return { passed, failed: failures.length, failures };
}

/** @param {unknown} condition @param {string} message */
function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

/** Deep equality of JSON-like values (key order ignored), failing with both values shown. */
function assertSame(actual, expected) {
  assert(same(actual, expected), `got ${describe(actual)}, want ${describe(expected)}`);
}

/**
 * The server's part of a result, once what the client adds is checked: the call's `requestId`
 * and, on a generation, its timings in ms.
 */
function serverAnswer(result) {
  const { requestId, durationMs, timeToFirstTokenMs, ...answer } = result;
  assert(typeof requestId === "string" && /^\d+$/.test(requestId), `requestId ${requestId}`);
  for (const ms of [durationMs, timeToFirstTokenMs]) {
    assert(ms === undefined || (typeof ms === "number" && ms >= 0), `timing ${ms}`);
  }
  return answer;
}

function same(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => Object.hasOwn(b, key) && same(a[key], b[key]));
}

function describe(value) {
  if (value instanceof Error) {
    const code = "code" in value ? ` [${value.code}]` : "";
    return `${value.name}${code}: ${value.message}`;
  }
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** The payload of the client's next `type` event. */
function once(client, type) {
  return new Promise((resolve) => {
    const listener = (payload) => {
      client.off(type, listener);
      resolve(payload);
    };
    client.on(type, listener);
  });
}

/** `promise`, or a rejection naming `what` after `ms`. */
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
