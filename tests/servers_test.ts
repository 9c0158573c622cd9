/**
 * One client over several Realm servers (`url` as a list): sockets spread over the servers,
 * calls to the least busy socket anywhere, failover when a server dies, ejection of a server
 * that keeps failing, its return without a user action, one tenant everywhere, and a soak with
 * servers killed and restarted at random.
 */
import assert from "node:assert/strict";
import {
  type RealmClientOptions,
  RealmError,
  RealmWebSocketClient,
  type StateChange,
} from "../mod.ts";
import { startStubServer, type StubServer, type StubServerOptions } from "../testing.ts";
import {
  deadUrl,
  delay,
  failedWith,
  FAST,
  outcome,
  recordEvents,
  sanitize,
  scriptedServer,
  stablePort,
  until,
  within,
} from "./_helpers.ts";

/** Several stub servers that can be killed and restarted on their own ports. */
class Fleet {
  servers: StubServer[] = [];
  ports: number[] = [];
  constructor(readonly options: StubServerOptions[]) {}
  static async start(count: number, options: StubServerOptions = {}): Promise<Fleet> {
    return await new Fleet(Array.from({ length: count }, () => options)).startAll();
  }
  async startAll(): Promise<this> {
    for (const [i, options] of this.options.entries()) {
      // A port no other socket is given while the server is down: it restarts on it.
      this.servers[i] = await startStubServer({ tokenDelayMs: 1, ...options, port: stablePort() });
      this.ports[i] = this.servers[i].port;
    }
    return this;
  }
  get urls(): string[] {
    return this.ports.map((port) => `ws://127.0.0.1:${port}`);
  }
  alive = (i: number) => !this.dead.has(i);
  dead = new Set<number>();
  async kill(i: number): Promise<void> {
    this.dead.add(i);
    await this.servers[i].close();
  }
  async restart(i: number): Promise<void> {
    this.servers[i] = await startStubServer({
      tokenDelayMs: 1,
      ...this.options[i],
      port: this.ports[i],
    });
    this.dead.delete(i);
  }
  generates(i: number): number {
    return this.servers[i].receivedFrames().filter((f) => f.includes('"function":"generate"'))
      .length;
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.servers.map((server, i) => this.alive(i) ? server.close() : null));
  }
}

function client(urls: string[], options: Partial<RealmClientOptions> = {}) {
  const made = new RealmWebSocketClient({
    url: urls,
    model: "llama-2-7b",
    ...FAST,
    maxReconnectInterval: 80,
    ...options,
  });
  const errors: RealmError[] = [];
  const changes: StateChange[] = [];
  made.on("error", (error) => errors.push(error));
  made.on("statechange", (change) => changes.push(change));
  return { client: made, errors, changes };
}

Deno.test("url list: checked like one url; empty, duplicate or too few sockets refused", () => {
  const refused = (options: Partial<RealmClientOptions>, pattern: RegExp) =>
    assert.throws(
      () => new RealmWebSocketClient({ model: "m", ...options }),
      (e: RealmError) => e.code === "INVALID_OPTIONS" && pattern.test(e.message),
    );
  refused({ url: [] }, /a server at least/);
  refused({ url: ["ws://127.0.0.1:1", "ws://127.0.0.1:1/"] }, /twice/);
  refused({ url: ["ws://127.0.0.1:1", "http://127.0.0.1:2"] }, /ws:\/\/ or wss:\/\//);
  refused(
    { url: ["ws://127.0.0.1:1", "ws://127.0.0.1:2"], connections: 1 },
    /leave it out for one per server/,
  );
  refused(
    { url: ["ws://127.0.0.1:1", "ws://realm.example.com"], apiKey: "sk" },
    /realm\.example\.com over plain ws:\/\//,
  );
  const stats = new RealmWebSocketClient({ model: "m", url: ["ws://127.0.0.1:1"] }).stats();
  assert.deepEqual(stats.servers, [
    {
      url: "ws://127.0.0.1:1",
      state: "down",
      openConnections: 0,
      callsOnTheWire: 0,
      failures: 0,
      resentCalls: 0,
      retriesWithheld: 0,
    },
  ]);
});

Deno.test({
  name: "servers: one socket each by default, more spread in turn, calls reach every server",
  ...sanitize,
  fn: async () => {
    await using fleet = await Fleet.start(3, { tokenDelayMs: 5 });
    const one = client(fleet.urls).client;
    await one.connect();
    assert.deepEqual(fleet.servers.map((s) => s.connectionCount), [1, 1, 1]);
    await one.disconnect();

    const { client: c } = client(fleet.urls, { connections: 6 });
    await c.connect();
    assert.deepEqual(fleet.servers.map((s) => s.connectionCount), [2, 2, 2]);
    // Six streams at once: each socket, so each server, carries its share.
    await Promise.all(
      Array.from(
        { length: 6 },
        (_, i) => c.generate({ prompt: `s${i}`, max_tokens: 10, stream: true }),
      ),
    );
    assert.deepEqual([0, 1, 2].map((i) => fleet.generates(i)), [2, 2, 2]);
    const servers = c.stats().servers!;
    assert.deepEqual(servers.map((s) => [s.state, s.openConnections]), [
      ["up", 2],
      ["up", 2],
      ["up", 2],
    ]);
    await c.disconnect();
  },
});

Deno.test({
  name: "servers: one killed mid-load fails its streams, the others go on; back, it is used again",
  ...sanitize,
  fn: async () => {
    await using fleet = await Fleet.start(3, { tokenDelayMs: 5 });
    const { client: c, changes } = client(fleet.urls);
    await c.connect();
    const streams = Array.from(
      { length: 3 },
      (_, i) =>
        outcome(c.generate({ prompt: `s${i}`, max_tokens: 40, stream: true }), 5000, `stream ${i}`),
    );
    await until(() => fleet.generates(1) === 1, 2000, "every server streaming");
    await fleet.kill(1);
    const results = await Promise.all(streams);
    const failed = results.filter((r) => "error" in r);
    assert.equal(failed.length, 1, "only the stream on the killed server fails");
    assert.equal(failedWith(failed[0], "CONNECTION_CLOSED").sent, true);
    assert.equal(c.state, "open", "the other servers still serve");
    // Calls go to the two left while it is down.
    await Promise.all(Array.from({ length: 4 }, () => c.health()));
    await fleet.restart(1);
    await until(() => c.stats().servers![1].state === "up", 3000, "the server taken back");
    await Promise.all(
      Array.from(
        { length: 3 },
        (_, i) => c.generate({ prompt: `again${i}`, max_tokens: 5, stream: true }),
      ),
    );
    assert.equal(fleet.generates(1), 1, "the restarted server serves again");
    assert.ok(changes.every((change) => change.to !== "reconnecting"), "never without a server");
    await c.disconnect();
  },
});

Deno.test({
  name: "servers: all down, calls wait; one back and they are answered; state follows",
  ...sanitize,
  fn: async () => {
    await using fleet = await Fleet.start(3);
    const { client: c, changes } = client(fleet.urls);
    await c.connect();
    for (const i of [0, 1, 2]) await fleet.kill(i);
    await until(() => c.state === "reconnecting", 2000, "reconnecting");
    const waiting = Promise.all([c.health(), c.metadata(), c.generate({ prompt: "hi" })]);
    await delay(50);
    assert.equal(c.stats().queuedCalls, 3);
    await fleet.restart(2);
    const [health, metadata, generated] = await within(5000, waiting, "answered");
    assert.equal(health.status, "healthy");
    assert.equal(metadata.version, "0.1.0");
    assert.equal(generated.text, "Simulated response to: hi");
    assert.equal(c.state, "open");
    assert.deepEqual(changes.map((change) => change.to), [
      "connecting",
      "open",
      "reconnecting",
      "open",
    ]);
    await c.disconnect();
  },
});

Deno.test({
  name: "servers: a server that keeps failing is ejected, then probed and taken back",
  ...sanitize,
  fn: async () => {
    await using fleet = await Fleet.start(2);
    const logged: string[] = [];
    const { client: c } = client(fleet.urls, {
      reconnectInterval: 20,
      maxReconnectInterval: 400,
      logger: (message) => logged.push(message),
    });
    await c.connect();
    await fleet.kill(1);
    await until(() => c.stats().servers![1].state === "ejected", 3000, "ejected");
    assert.ok(logged.includes("server ejected"));
    // While ejected, no socket of it tries: the server sees no connection attempt.
    assert.equal(c.stats().servers![0].state, "up");
    await fleet.restart(1);
    await until(() => c.stats().servers![1].state === "up", 3000, "probed and taken back");
    assert.equal(c.stats().servers![1].failures, 0);
    await c.disconnect();
  },
});

Deno.test({
  name: "servers: one assigning another tenant is not used, and an error event says why",
  ...sanitize,
  fn: async () => {
    await using fleet = await new Fleet([
      { apiKeys: { sk_shared: "tenant-a" } },
      { apiKeys: { sk_shared: "tenant-a" } },
      { apiKeys: { sk_shared: "tenant-c" } },
    ]).startAll();
    // The third server opens after the others, so tenant-a is the one in use.
    const { client: c, errors } = client(fleet.urls, { apiKey: "sk_shared", connections: 3 });
    fleet.servers[2].faults.stall(true);
    const connecting = c.connect();
    await delay(50);
    fleet.servers[2].faults.stall(false);
    await within(3000, connecting, "connect with a mismatched server");
    assert.equal(c.getTenantId(), "tenant-a");
    const mismatch = errors.find((error) => error.code === "TENANT_MISMATCH");
    assert.ok(mismatch, `errors: ${errors.map((e) => e.code)}`);
    assert.match(mismatch.message, new RegExp(fleet.urls[2].replaceAll(".", "\\.")));
    assert.match(mismatch.message, /tenant-c/);
    await Promise.all(Array.from({ length: 6 }, () => c.health()));
    assert.equal(fleet.servers[2].callCount, 0, "no call went to the other tenant's server");
    assert.deepEqual(c.stats().servers!.map((s) => s.state), ["up", "up", "down"]);
    await c.disconnect();
  },
});

Deno.test({
  name: "servers: one unreachable at connect() is reported and retried until it is there",
  ...sanitize,
  fn: async () => {
    await using fleet = await Fleet.start(2);
    await fleet.kill(1);
    const { client: c, errors } = client(fleet.urls, { reconnectInterval: 10 });
    await within(3000, c.connect(), "connect() with one server down");
    assert.equal(c.state, "open");
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, "CONNECTION_CLOSED");
    assert.match(errors[0].message, new RegExp(`${fleet.urls[1]}.*Retried in the background`));
    await fleet.restart(1);
    await until(() => c.stats().servers![1].state === "up", 5000, "the late server joins");
    await c.disconnect();

    // None reachable: connect() fails and the client is closed.
    await fleet.kill(0);
    await fleet.kill(1);
    const { client: lonely } = client(fleet.urls);
    failedWith(await outcome(lonely.connect(), 3000, "no server"), "CONNECTION_CLOSED");
    assert.equal(lonely.state, "closed");
    await lonely.disconnect();
    await fleet.restart(0);
    await fleet.restart(1);
  },
});

Deno.test({
  name: "servers: soak, 1,000 calls and streams while servers die and come back at random",
  ...sanitize,
  fn: async () => {
    await using fleet = await Fleet.start(3, { tokenDelayMs: 1 });
    const { client: c } = client(fleet.urls, { connections: 6, timeout: 10_000 });
    await c.connect();
    let seed = 7;
    const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
    let running = true;
    let kills = 0;
    const chaos = (async () => {
      while (running) {
        await delay(10 + random() * 40);
        const i = Math.floor(random() * 3);
        if (fleet.alive(i) && fleet.dead.size < 2) {
          kills++;
          await fleet.kill(i);
        } else if (!fleet.alive(i)) await fleet.restart(i);
      }
    })();
    const words = (prompt: string) =>
      `The capital of France is Paris. This is a simulated response to: ${prompt}`.split(" ");
    let settled = 0;
    let streamsWhole = 0;
    const calls: Promise<void>[] = [];
    for (let i = 0; i < 1000; i++) {
      const prompt = `p${i}`;
      const kind = i % 3;
      const call = kind === 0
        ? c.health().then(() => {})
        : kind === 1
        ? c.generate({ prompt }).then(() => {})
        : c.generate({ prompt, max_tokens: 8, stream: true }).then((result) => {
          const expected = words(prompt).slice(0, 8).map((w) => `${w} `).join("");
          assert.equal(result.text, expected, "a stream's tokens, all, in order, none doubled");
          streamsWhole++;
        });
      calls.push(call.then(
        () => void settled++,
        (error) => {
          assert.ok(error instanceof RealmError, `a RealmError, got ${error}`);
          settled++;
        },
      ));
      if (i % 20 === 19) await delay(10);
    }
    await within(30_000, Promise.all(calls), "every call settled");
    running = false;
    await chaos;
    assert.equal(settled, 1000);
    assert.ok(kills >= 3, `only ${kills} kills during the soak`);
    assert.ok(streamsWhole > 0, "some streams went through whole");
    await c.disconnect();
    for (const i of [0, 1, 2]) if (!fleet.alive(i)) await fleet.restart(i);
  },
});

Deno.test({
  name: "servers: an unreachable server of a list is reported once, with its url and cause, " +
    "and with `reconnect` off not retried",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const dead = deadUrl();
    const client = new RealmWebSocketClient({
      ...FAST,
      url: [server.url, dead],
      model: "llama-2-7b",
      connections: 4,
      reconnect: false,
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect() with one of two servers down");
      assert.equal(seen.error.length, 1, "one report for the two sockets of the dead server");
      const reported = seen.error[0];
      assert.ok(reported instanceof RealmError);
      assert.equal((reported.details as { url: string }).url, dead);
      assert.ok(reported.cause instanceof RealmError, "the socket's own failure is the cause");
      const cause = reported.cause as RealmError;
      assert.equal(reported.code, cause.code);
      assert.equal(
        reported.message,
        `The server at ${dead} could not be used: ${cause.message}`,
        "with `reconnect` off the message does not promise a retry",
      );
      const attempts = seen.connecting.length;
      await delay(200); // 20 reconnect intervals
      assert.equal(seen.reconnecting.length, 0, "no socket to the dead server is retried");
      assert.equal(seen.connecting.length, attempts);
      assert.equal(client.stats().openConnections, 2);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: "servers: a server of a list that one socket reached is not reported when its other " +
    "socket fails",
  ...sanitize,
  fn: async () => {
    // It takes its first socket, greets it and never answers; a second socket to it gets 503.
    const half = scriptedServer({ upgrades: 1, frame() {} });
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: [half.url, server.url],
      model: "llama-2-7b",
      connections: 4,
      reconnect: false,
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect() with a server that takes one socket");
      assert.equal(client.stats().openConnections, 3);
      assert.deepEqual(seen.error, [], "both servers are in use: nothing to report");
    } finally {
      await client.disconnect();
      await half.close();
      await server.close();
    }
  },
});

Deno.test({
  name: "servers: a server of a list that assigns another tenant is reported with its url",
  ...sanitize,
  fn: async () => {
    const acme = await startStubServer({ apiKeys: { "key-1": "acme" }, tokenDelayMs: 0 });
    const other = await startStubServer({ apiKeys: { "key-1": "globex" }, tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({
      ...FAST,
      url: [acme.url, other.url],
      model: "llama-2-7b",
      apiKey: "key-1",
      reconnect: false,
    });
    const seen = recordEvents(client);
    try {
      await within(5000, client.connect(), "connect() with two tenants");
      assert.equal(seen.error.length, 1);
      const reported = seen.error[0];
      const url = (reported.details as { url: string }).url;
      assert.ok(url === acme.url || url === other.url, `reported url ${url}`);
      const cause = reported.cause as RealmError;
      assert.equal(cause.code, "TENANT_MISMATCH");
      assert.deepEqual(cause.details, { url }, "the mismatch names the server not used");
    } finally {
      await client.disconnect();
      await acme.close();
      await other.close();
    }
  },
});

/** A server of a list that the client does not use, and how it came to be so. */
interface UnusedServer {
  name: string;
  /** The servers to start, and the list's addresses (a dead one may be among them). */
  servers: StubServerOptions[];
  urls(servers: StubServer[]): string[];
  options?: Partial<RealmClientOptions>;
  /** After the first connect(): makes the second server unusable. */
  after?(servers: StubServer[], errors: RealmError[]): Promise<void>;
}

const UNUSED_SERVERS: UnusedServer[] = [
  { name: "down", servers: [{}], urls: ([live]) => [live.url, deadUrl()] },
  {
    name: "given up reconnecting",
    servers: [{}, {}],
    urls: (servers) => servers.map((server) => server.url),
    options: { maxReconnectAttempts: 1 },
    async after([, b], errors) {
      await b.close();
      await until(() => errors.length === 1, 3000, "the socket to b giving up");
      assert.match(errors[0].message, /^Gave up reconnecting/);
    },
  },
  {
    name: "of another tenant",
    servers: [{ apiKeys: { sk_shared: "tenant-a" } }, { apiKeys: { sk_shared: "tenant-b" } }],
    urls: (servers) => servers.map((server) => server.url),
    options: { apiKey: "sk_shared" },
  },
];

Deno.test({
  name: "servers: connect() while open resolves, twice at once too, whatever a server of the " +
    "list that the client does not use is doing",
  ...sanitize,
  fn: async (t) => {
    for (const unused of UNUSED_SERVERS) {
      await t.step({
        name: unused.name,
        ...sanitize,
        fn: async () => {
          const servers = await Promise.all(
            unused.servers.map((options) => startStubServer({ tokenDelayMs: 0, ...options })),
          );
          const { client: c, errors } = client(unused.urls(servers), unused.options);
          try {
            await within(5000, c.connect(), "the first connect()");
            await unused.after?.(servers, errors);
            assert.equal(c.state, "open");
            assert.equal(c.stats().openConnections, 1, "one server of the two is used");
            assert.deepEqual(await outcome(c.connect(), 3000, "connect() while open"), {
              value: undefined,
            });
            const twice = [c.connect(), c.connect()].map((p, i) =>
              outcome(p, 3000, `connect() #${i + 1} at once`)
            );
            assert.deepEqual(await Promise.all(twice), [{ value: undefined }, {
              value: undefined,
            }]);
            assert.equal(c.state, "open");
          } finally {
            await within(5000, c.disconnect(), "disconnect()");
            await Promise.all(servers.map((server) => server.close()));
          }
        },
      });
    }
  },
});

Deno.test({
  name: "servers: two connect() at once while open both resolve, and reopen a server of the " +
    "list that was given up and is back",
  ...sanitize,
  fn: async () => {
    await using fleet = await Fleet.start(2);
    const { client: c, errors } = client(fleet.urls, { maxReconnectAttempts: 1 });
    await within(5000, c.connect(), "connect()");
    await fleet.kill(1);
    await until(() => errors.length === 1, 3000, "the socket to the killed server giving up");
    await fleet.restart(1);
    const both = [c.connect(), c.connect()].map((p, i) =>
      outcome(p, 3000, `connect() #${i + 1} at once`)
    );
    assert.deepEqual(await Promise.all(both), [{ value: undefined }, { value: undefined }]);
    await until(() => c.stats().servers![1].state === "up", 3000, "the server back in use");
    assert.deepEqual(fleet.servers.map((server) => server.connectionCount), [1, 1]);
    await within(5000, c.disconnect(), "disconnect()");
  },
});
