/**
 * Every option and parameter check at its boundaries, through the public API: the last value
 * accepted and the first refused on each side, so an off-by-one in a rule fails a test.
 * Parameter checks run on a client that is not connected: a value that passes the checks
 * reaches the connection and fails with NOT_CONNECTED, one that does not fails with
 * INVALID_PARAMS, before anything could be sent. The last tests run over loopback, to show that
 * nothing refused reaches the server.
 */
import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import {
  CALL_OPTIONS,
  GENERATION_PARAMS,
  OPTION_DEFAULTS,
  resolveOptions,
} from "../src/validate.ts";
import {
  type CallOptions,
  CONNECTION_CHANNEL,
  type GenerationOptions,
  RealmError,
  RealmWebSocketClient,
} from "../mod.ts";
import {
  failedWith,
  outcome,
  rejection,
  sanitize,
  sentCalls,
  stubAndClientWithStates,
  withClient,
  within,
} from "./_helpers.ts";

/** The error the constructor throws for these options, or undefined when it accepts them. */
function optionsOutcome(extra: Record<string, unknown>): RealmError | undefined {
  try {
    new RealmWebSocketClient({ model: "m", ...extra } as never);
    return undefined;
  } catch (error) {
    assert.ok(error instanceof RealmError, String(error));
    assert.equal(error.code, "INVALID_OPTIONS");
    return error;
  }
}

const NUMERIC: [name: string, accepted: unknown[], refused: unknown[]][] = [
  ["reconnectInterval", [0, 1, 0.5], [-1, -0.001, Infinity, NaN, "5", null]],
  ["maxReconnectAttempts", [0, 1, Infinity], [-1, 1.5, NaN, "3"]],
  ["timeout", [1, 0.5, Infinity], [0, -1, NaN, "5"]],
  ["streamIdleTimeout", [1, 0.5, Infinity], [0, -1, NaN]],
  ["connectTimeout", [1, 0.5, Infinity], [0, -1, NaN]],
  ["heartbeatInterval", [0, 1], [-1, Infinity, NaN]],
  ["heartbeatTimeout", [1, 0.5], [0, -1, Infinity, NaN]],
  ["maxRetries", [0, 1, 10], [-1, 1.5, Infinity, NaN, "1"]],
  ["maxQueuedCalls", [0, 1, Infinity], [-1, 1.5, NaN]],
  ["connections", [1, 2, 64], [0, 65, 1.5, -1, NaN, Infinity]],
];

Deno.test("numeric options: the edges of each rule, and the rule in the message", () => {
  for (const [name, accepted, refused] of NUMERIC) {
    for (const value of accepted) {
      assert.equal(optionsOutcome({ [name]: value }), undefined, `${name}: ${value} is accepted`);
    }
    for (const value of refused) {
      const error = optionsOutcome({ [name]: value });
      assert.ok(error, `${name}: ${String(value)} is refused`);
      assert.match(error.message, new RegExp(`^\`${name}\` must be `), error.message);
    }
  }
});

Deno.test("maxReconnectInterval: at least reconnectInterval, whose value names the floor", () => {
  assert.equal(optionsOutcome({ reconnectInterval: 100, maxReconnectInterval: 100 }), undefined);
  const below = optionsOutcome({ reconnectInterval: 100, maxReconnectInterval: 99 });
  assert.match(below!.message, /`maxReconnectInterval` must be .* ≥ reconnectInterval \(100\)/);
  // Its default never falls below reconnectInterval: 60 s, or reconnectInterval when longer.
  assert.equal(optionsOutcome({ reconnectInterval: 120_000 }), undefined);
  assert.equal(optionsOutcome({ maxReconnectInterval: 0, reconnectInterval: 0 }), undefined);
  assert.ok(optionsOutcome({ maxReconnectInterval: -1 }));
});

Deno.test("refused values are shown in the message, short", () => {
  assert.match(optionsOutcome({ timeout: "5" })!.message, /; got "5"\.$/);
  assert.match(optionsOutcome({ timeout: true })!.message, /; got true\.$/);
  assert.match(optionsOutcome({ timeout: null })!.message, /; got null\.$/);
  assert.match(optionsOutcome({ timeout: {} })!.message, /; got object\.$/);
  assert.match(optionsOutcome({ timeout: -2 })!.message, /; got -2\.$/);
  const long = "x".repeat(50);
  assert.match(
    optionsOutcome({ timeout: long })!.message,
    new RegExp(`; got "${"x".repeat(40)}…"\\.$`),
  );
  assert.match(optionsOutcome({ timeout: "x".repeat(40) })!.message, /"x{40}"\.$/);
});

Deno.test("url, apiKey, tenantId, flags and functions are checked", () => {
  assert.match(
    optionsOutcome({ url: "https://realm.example.com/ws" })!.message,
    /Use wss:\/\/realm\.example\.com\/ws\.$/,
  );
  assert.match(optionsOutcome({ url: "http://h:8080/" })!.message, /Use ws:\/\/h:8080\/\.$/);
  assert.doesNotMatch(optionsOutcome({ url: "ftp://h/" })!.message, /Use /);
  assert.match(optionsOutcome({ url: "::" })!.message, /must be a ws:\/\/ or wss:\/\/ URL/);
  for (const apiKey of [5, null]) assert.ok(optionsOutcome({ apiKey }), String(apiKey));
  // What an empty `REALM_API_KEY=` gives: no key, as the earlier client took it.
  assert.equal(optionsOutcome({ apiKey: "" }), undefined);
  for (const tenantId of [5, "ab", "a".repeat(65), "a b", null]) {
    assert.ok(optionsOutcome({ tenantId }), String(tenantId));
  }
  assert.equal(optionsOutcome({ tenantId: "abc" }), undefined);
  for (const flag of ["reconnect", "allowInsecureAuth"]) {
    assert.match(optionsOutcome({ [flag]: "yes" })!.message, new RegExp(`\`${flag}\` must be`));
    assert.match(optionsOutcome({ [flag]: 0 })!.message, new RegExp(`\`${flag}\` must be`));
    assert.equal(optionsOutcome({ [flag]: false }), undefined);
  }
  assert.match(optionsOutcome({ logger: "console" })!.message, /`logger` must be a function/);
  assert.equal(optionsOutcome({ logger: () => {} }), undefined);
  assert.match(optionsOutcome({ WebSocket: {} })!.message, /`WebSocket` must be/);
  assert.match(
    (() => {
      try {
        new RealmWebSocketClient(null as never);
      } catch (error) {
        return (error as RealmError).message;
      }
      return "";
    })(),
    /`model` is required/,
  );
});

Deno.test("an API key goes over plain ws:// only to a host that is certainly this machine", () => {
  // As a URL spells them: "LOCALHOST" is localhost, "127.1" is 127.0.0.1.
  for (
    const host of ["localhost", "LOCALHOST", "127.0.0.1", "127.1", "127.255.0.9", "[::1]"]
  ) {
    assert.equal(optionsOutcome({ url: `ws://${host}:1`, apiKey: "k" }), undefined, host);
  }
  for (
    const host of [
      "realm.example.com",
      "127.0.0.1.example.com",
      "localhost.example.com",
      // A name under .localhost may be resolved through DNS by the runtime.
      "app.localhost",
      "localhost.",
      "10.0.0.1",
      "0.0.0.0",
      "127.0.0.1x",
    ]
  ) {
    const error = optionsOutcome({ url: `ws://${host}:1`, apiKey: "k" });
    assert.match(error?.message ?? "", /Refusing to send the API key/, host);
  }
  assert.equal(optionsOutcome({ url: "wss://realm.example.com", apiKey: "k" }), undefined);
  assert.equal(
    optionsOutcome({ url: "ws://realm.example.com", apiKey: "k", allowInsecureAuth: true }),
    undefined,
  );
  assert.equal(optionsOutcome({ url: "ws://realm.example.com" }), undefined, "no key, no risk");
});

Deno.test("a user or password in url is refused, and never shown", async () => {
  const secret = "s3cret-pass";
  const lines: unknown[] = [];
  const seen: unknown[] = [];
  const watch = (message: unknown) => seen.push(message);
  diagnostics.subscribe(CONNECTION_CHANNEL, watch);
  try {
    for (
      const url of [
        `ws://user:${secret}@127.0.0.1:1`,
        `wss://user:${secret}@realm.example.com/ws`,
        `ws://${secret}@127.0.0.1:1`,
        ["wss://realm-1.example.com", `wss://user:${secret}@realm-2.example.com`],
        // Refused for another reason first, still without the password in the message.
        `http://user:${secret}@realm.example.com`,
        `ws://user:${secret}@realm.example.com:99999`,
        // Spellings a URL parser takes too.
        `ws:user:${secret}@127.0.0.1:1`,
        `ws:\\\\user:${secret}@127.0.0.1:1`,
        `ws:user:${secret}@realm.example.com:99999`,
        `ws://user:s3cret\n-pass@realm.example.com:99999`,
      ]
    ) {
      const error = optionsOutcome({
        url,
        apiKey: "k",
        logger: (line: unknown) => lines.push(line),
      });
      assert.ok(error, `refused: ${url}`);
      assert.equal(error.sent, false);
      assert.ok(!/s3cret/.test(error.message), error.message);
      assert.ok(!/s3cret/.test(String(error.stack)), "nor in its stack");
    }
    assert.match(
      optionsOutcome({ url: `ws://user:${secret}@127.0.0.1:1` })!.message,
      /^`url` must hold no user:password@: pass the key as `apiKey`\.$/,
    );
    // No client was made: nothing logged, nothing published.
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.deepEqual(lines, []);
    assert.deepEqual(seen, []);
  } finally {
    diagnostics.unsubscribe(CONNECTION_CHANNEL, watch);
  }
});

Deno.test("a url that WebSocket refuses (a #fragment) is refused by the constructor", () => {
  for (const url of ["ws://127.0.0.1:1/#x", "ws://127.0.0.1:1/#", "wss://h.example/ws#top"]) {
    // The runtime's own WebSocket throws for it: connect() would only fail later.
    assert.throws(() => new WebSocket(url), { name: "SyntaxError" });
    const error = optionsOutcome({ url });
    assert.match(
      error?.message ?? "",
      /^`url` must be a ws:\/\/ or wss:\/\/ URL without a #fragment/,
    );
    assert.equal(error!.sent, false);
  }
  assert.equal(optionsOutcome({ url: "ws://127.0.0.1:1/path?q=1" }), undefined);
});

Deno.test("an unknown option is refused with the one it most likely meant", () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ timout: 5000 }, "Unknown option `timout`: did you mean `timeout`?"],
    [{ Timeout: 5000 }, "Unknown option `Timeout`: did you mean `timeout`?"],
    [{ apikey: "k" }, "Unknown option `apikey`: did you mean `apiKey`?"],
    [{ URL: "ws://127.0.0.1:1" }, "Unknown option `URL`: did you mean `url`?"],
    [{ maxRetry: 2 }, "Unknown option `maxRetry`: did you mean `maxRetries`?"],
    [{ reconect: false }, "Unknown option `reconect`: did you mean `reconnect`?"],
    // Refused even when undefined: the key itself is the mistake.
    [{ tenant: undefined }, "Unknown option `tenant`: did you mean `tenantId`?"],
  ];
  for (const [extra, message] of cases) {
    const error = optionsOutcome(extra);
    assert.equal(error?.message, message);
    assert.equal(error!.sent, false);
  }
  // Nothing close: the message lists every option.
  assert.equal(
    optionsOutcome({ debug: true })?.message,
    `Unknown option \`debug\`; use ${Object.keys(OPTION_DEFAULTS).join(", ")}.`,
  );
});

Deno.test("the known keys are exactly the typed ones: options, call options, generate parameters", () => {
  // The compiler fails these objects when a key is missing or unknown.
  const callOptions: Record<keyof CallOptions, true> = {
    signal: true,
    timeout: true,
    streamIdleTimeout: true,
    maxRetries: true,
    safeToRepeat: true,
  };
  const generateParams: Record<keyof GenerationOptions, true> = {
    prompt: true,
    model: true,
    max_tokens: true,
    temperature: true,
    top_p: true,
    top_k: true,
    repetition_penalty: true,
    stream: true,
    onToken: true,
  };
  assert.deepEqual([...CALL_OPTIONS].sort(), Object.keys(callOptions).sort());
  assert.deepEqual([...GENERATION_PARAMS].sort(), Object.keys(generateParams).sort());
  // Every option of the one table is accepted, and nothing else.
  const everyOption = Object.fromEntries(
    Object.keys(OPTION_DEFAULTS).map((name) => [name, undefined]),
  );
  assert.equal(optionsOutcome({ ...everyOption, model: "m" }), undefined);
});

Deno.test("an unknown call option or generate parameter is refused, before anything is sent", async () => {
  const cases: [(client: RealmWebSocketClient) => Promise<unknown>, string][] = [
    [(c) => c.health({ timout: 5 } as never), "Unknown option `timout`: did you mean `timeout`?"],
    [
      (c) => c.generate({ prompt: "p" }, { abortSignal: 1 } as never),
      `Unknown option \`abortSignal\`; use ${CALL_OPTIONS.join(", ")}.`,
    ],
    [
      (c) => c.generate({ prompt: "p", maxTokens: 5 } as never),
      "Unknown parameter `maxTokens`: did you mean `max_tokens`?",
    ],
    [
      (c) => c.generate({ prompt: "p", temprature: 1 } as never),
      "Unknown parameter `temprature`: did you mean `temperature`?",
    ],
    [
      (c) => c.generate({ prompt: "p", topP: 0.5 } as never),
      "Unknown parameter `topP`: did you mean `top_p`?",
    ],
    [
      (c) => c.executePipeline("p", {}, { safe_to_repeat: true } as never),
      "Unknown option `safe_to_repeat`: did you mean `safeToRepeat`?",
    ],
    // A field the server would ignore in silence: refused, with the parameters listed.
    [
      (c) => c.generate({ prompt: "p", stop: ["\n"] } as never),
      `Unknown parameter \`stop\`; use ${GENERATION_PARAMS.join(", ")}.`,
    ],
    [
      async (c) => {
        for await (const _ of c.generateStream({ prompt: "p", max_token: 5 } as never)) { /* */ }
      },
      "Unknown parameter `max_token`: did you mean `max_tokens`?",
    ],
  ];
  await withClient({}, {}, async (client, server) => {
    await client.connect();
    for (const [call, message] of cases) {
      const error = await rejection(call(client));
      assert.equal(error.code, "INVALID_PARAMS");
      assert.equal(error.message, message);
      assert.equal(error.sent, false);
    }
    assert.deepEqual(sentCalls(server), []);
    assert.equal(client.stats().pendingCalls, 0);
  });
});

Deno.test("every refusal of a call's input says sent: false", async () => {
  const client = new RealmWebSocketClient({ model: "m" });
  const refusals = [
    client.generate({ prompt: 5 } as never),
    client.generate({ prompt: "p", max_tokens: 0 }),
    client.health({ timeout: -1 }),
    client.executePipeline("", {}),
    client.executePipeline("p", { n: 1n }),
  ];
  for (const refused of refusals) {
    const error = await rejection(refused);
    assert.equal(error.code, "INVALID_PARAMS");
    assert.equal(error.sent, false, error.message);
  }
});

/** The code a call on a never-connected client fails with: INVALID_PARAMS or NOT_CONNECTED. */
async function callCode(call: (client: RealmWebSocketClient) => Promise<unknown>) {
  const client = new RealmWebSocketClient({ model: "m" });
  return (await rejection(call(client), 2000)).code;
}

const GENERATION: [name: keyof GenerationOptions, accepted: unknown[], refused: unknown[]][] = [
  ["max_tokens", [1, 2, 1e6], [0, -1, 1.5, Infinity, NaN, "5"]],
  ["temperature", [0, 1.5, 2], [-0.01, 2.01, Infinity, NaN, "1"]],
  ["top_p", [1, 0.01], [0, -0.1, 1.01, NaN]],
  ["top_k", [0, 1, 40], [-1, 1.5, Infinity]],
  ["repetition_penalty", [0.01, 1, 2], [0, -1, Infinity, NaN]],
  ["model", ["x"], ["", "  ", 5, null]],
  ["stream", [true, false], ["yes", 1, null]],
  ["onToken", [() => {}], ["f", 5]],
];

Deno.test("generate parameters: the edges of each rule", async () => {
  for (const [name, accepted, refused] of GENERATION) {
    for (const value of accepted) {
      const code = await callCode((c) => c.generate({ prompt: "p", [name]: value }));
      assert.equal(code, "NOT_CONNECTED", `${name}: ${String(value)} is accepted`);
    }
    for (const value of refused) {
      const code = await callCode((c) => c.generate({ prompt: "p", [name]: value } as never));
      assert.equal(code, "INVALID_PARAMS", `${name}: ${String(value)} is refused`);
    }
  }
  for (const options of [null, "p", { prompt: 5 }, {}]) {
    assert.equal(await callCode((c) => c.generate(options as never)), "INVALID_PARAMS");
  }
});

Deno.test("call options: signal, timeouts and maxRetries at their edges", async () => {
  const accepted = [
    {},
    undefined,
    { timeout: 1 },
    { timeout: 0.5, streamIdleTimeout: 1 },
    { maxRetries: 0 },
    { signal: new AbortController().signal },
  ];
  for (const opts of accepted) {
    assert.equal(await callCode((c) => c.health(opts)), "NOT_CONNECTED", JSON.stringify(opts));
  }
  const refused = [
    null,
    "fast",
    { timeout: 0 },
    { timeout: -1 },
    { timeout: "5" },
    { timeout: NaN },
    { streamIdleTimeout: 0 },
    { maxRetries: -1 },
    { maxRetries: 1.5 },
    { maxRetries: "1" },
    { signal: {} },
    { signal: null },
    { signal: "abort" },
  ];
  for (const opts of refused) {
    assert.equal(
      await callCode((c) => c.health(opts as never)),
      "INVALID_PARAMS",
      JSON.stringify(opts),
    );
  }
});

Deno.test("pipeline: a non-empty name and an object input", async () => {
  assert.equal(await callCode((c) => c.executePipeline("p", {})), "NOT_CONNECTED");
  for (const name of ["", "  ", 5, null]) {
    assert.equal(
      await callCode((c) => c.executePipeline(name as never, {})),
      "INVALID_PARAMS",
      String(name),
    );
  }
  for (const input of [null, [1], "q", 5]) {
    assert.equal(
      await callCode((c) => c.executePipeline("p", input as never)),
      "INVALID_PARAMS",
      String(input),
    );
  }
  const client = new RealmWebSocketClient({ model: "m" });
  assert.match((await rejection(client.executePipeline("p", [1] as never))).message, /an array/);
});

Deno.test("generate without an options object says so", async () => {
  const client = new RealmWebSocketClient({ model: "m" });
  for (const options of ["p", 5, null]) {
    const error = await rejection(client.generate(options as never), 2000);
    assert.equal(error.code, "INVALID_PARAMS");
    assert.match(error.message, /^generate needs an options object/);
  }
});

Deno.test("the longest reconnect delay defaults to 60 s, or reconnectInterval when longer", () => {
  // Internal: the resolved options are not visible through the client.
  assert.equal(resolveOptions({ model: "m" }).maxReconnectInterval, 60_000);
  assert.equal(
    resolveOptions({ model: "m", reconnectInterval: 120_000 }).maxReconnectInterval,
    120_000,
  );
  assert.equal(
    resolveOptions({ model: "m", reconnectInterval: 10, maxReconnectInterval: 50 })
      .maxReconnectInterval,
    50,
  );
});

// -- over loopback: nothing refused reaches the server ---------------------------------------

Deno.test({
  name: "bad parameters reject with INVALID_PARAMS naming the field, before anything is sent",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client, server) => {
      await client.connect();
      const bad: [unknown, RegExp][] = [
        [{}, /`prompt` must be a string/],
        [{ prompt: 1 }, /`prompt`/],
        [
          { prompt: "p", max_tokens: 0 },
          /`max_tokens` must be an integer from 1 to 2\^53-1; got 0/,
        ],
        [{ prompt: "p", max_tokens: 1.5 }, /`max_tokens`/],
        [{ prompt: "p", temperature: 2.5 }, /`temperature` must be a number from 0 to 2/],
        [{ prompt: "p", top_p: 0 }, /`top_p` must be a number in \(0, 1\]/],
        [{ prompt: "p", top_k: -1 }, /`top_k`/],
        [{ prompt: "p", repetition_penalty: 0 }, /`repetition_penalty` must be a number > 0/],
        [{ prompt: "p", model: "" }, /`model`/],
        [{ prompt: "p", stream: "yes" }, /`stream`/],
      ];
      for (const [options, message] of bad) {
        const error = await rejection(client.generate(options as GenerationOptions));
        assert.equal(error.code, "INVALID_PARAMS");
        assert.match(error.message, message);
        const streamError = await rejection(
          (async () => {
            for await (const _ of client.generateStream(options as GenerationOptions)) { /* */ }
          })(),
        );
        assert.equal(streamError.code, "INVALID_PARAMS");
      }
      assert.equal((await rejection(client.executePipeline("", {}))).code, "INVALID_PARAMS");
      assert.equal(
        (await rejection(client.executePipeline("p", null as never))).code,
        "INVALID_PARAMS",
      );
      assert.equal((await rejection(client.health({ timeout: -1 }))).code, "INVALID_PARAMS");
      assert.deepEqual(sentCalls(server), []);
      assert.equal(client.stats().pendingCalls, 0);
    }),
});

Deno.test({
  name: "quirk: max_tokens 0 would stream nothing forever, so it is refused before sending",
  ...sanitize,
  fn: () =>
    withClient({}, {}, async (client, server) => {
      await client.connect();
      const error = await rejection(client.generate({ prompt: "p", max_tokens: 0, stream: true }));
      assert.equal(error.code, "INVALID_PARAMS");
      assert.deepEqual(sentCalls(server), []);
    }),
});

Deno.test({
  name:
    "call input that cannot become JSON (BigInt, cycles, a throwing toJSON) is refused before anything is sent",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates({}, {});
    t.server.faults.stall(true);
    const connecting = t.client.connect();
    const queued = t.client.health();
    const cycle: Record<string, unknown> = { a: 1 };
    cycle.self = cycle;
    const inputs: Record<string, unknown>[] = [
      { n: 10n },
      { deep: [{ n: 1n }] },
      cycle,
      {
        bad: {
          toJSON: () => {
            throw new Error("no JSON today");
          },
        },
      },
    ];
    for (const input of inputs) {
      const error = failedWith(
        await outcome(t.client.executePipeline("rag-pipeline", input), 1000, "bad input"),
        "INVALID_PARAMS",
      );
      assert.match(error.message, /parameters are not JSON/);
      assert.equal(error.sent, false);
    }
    assert.equal(t.client.stats().pendingCalls, 1, "only the good call is held");
    t.server.faults.stall(false);
    await within(2000, connecting, "connect() undisturbed");
    assert.equal((await within(2000, queued, "queued call")).status, "healthy");
    assert.equal(t.server.callCount, 1, "only the good call reached the server");
  },
});

Deno.test({
  name:
    "time options: Infinity means no limit; delays past 2^31-1 ms are refused, never fire at once",
  ...sanitize,
  fn: async () => {
    for (const name of ["timeout", "streamIdleTimeout", "connectTimeout"] as const) {
      new RealmWebSocketClient({ model: "m", [name]: Infinity });
      assert.throws(
        () => new RealmWebSocketClient({ model: "m", [name]: 2 ** 31 }),
        (e: { code?: string; message: string }) =>
          e.code === "INVALID_OPTIONS" && /up to 2147483647/.test(e.message),
      );
    }
    for (
      const name of [
        "reconnectInterval",
        "maxReconnectInterval",
        "heartbeatInterval",
        "heartbeatTimeout",
      ] as const
    ) {
      assert.throws(
        () => new RealmWebSocketClient({ model: "m", [name]: Infinity }),
        (e: { code?: string }) => e.code === "INVALID_OPTIONS",
        name,
      );
      assert.throws(
        () => new RealmWebSocketClient({ model: "m", [name]: 2 ** 31 }),
        (e: { code?: string }) => e.code === "INVALID_OPTIONS",
        name,
      );
    }
    await using t = await stubAndClientWithStates({}, { timeout: Infinity });
    await t.client.connect();
    t.server.faults.stall(true);
    const forever = outcome(t.client.health(), 300, "a call with no time limit");
    const tooLong = await outcome(t.client.health({ timeout: 2 ** 31 }), 500, "refused");
    failedWith(tooLong, "INVALID_PARAMS");
    const noLimit = outcome(t.client.health({ timeout: Infinity }), 300, "no limit per call");
    // Neither fires at once: both are still pending when the bounded wait runs out.
    await assert.rejects(forever, /still pending after 300 ms/);
    await assert.rejects(noLimit, /still pending after 300 ms/);
    assert.equal(t.client.stats().pendingCalls, 2);
  },
});

Deno.test({
  name: "a signal that is no AbortSignal and integers past the server's types are refused",
  ...sanitize,
  fn: async () => {
    await using t = await stubAndClientWithStates();
    await t.client.connect();
    const fakeSignal = { aborted: false } as unknown as AbortSignal;
    const badSignal = failedWith(
      await outcome(t.client.health({ signal: fakeSignal }), 1000, "fake signal"),
      "INVALID_PARAMS",
    );
    assert.match(badSignal.message, /`signal` must be an AbortSignal/);
    for (const options of [{ max_tokens: 1e300 }, { max_tokens: 2 ** 53 }, { top_k: 1e20 }]) {
      failedWith(
        await outcome(t.client.generate({ prompt: "x", ...options }), 1000, "huge integer"),
        "INVALID_PARAMS",
      );
    }
    failedWith(
      await outcome(t.client.health(null as unknown as undefined), 1000, "null options"),
      "INVALID_PARAMS",
    );
    assert.equal(t.server.callCount, 0);
  },
});
