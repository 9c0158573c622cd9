/**
 * Failover under churn: three stub servers, each in its own process (`examples/serve.ts`), one at
 * a time killed (SIGKILL, or SIGINT for a graceful close: the stub closes its sockets with a close
 * frame) and restarted on the same port, while a client with the list of three makes a few hundred
 * mixed calls. Whatever dies under them, a call whose answer had not begun succeeds elsewhere; only
 * a stream that had delivered tokens may fail, and says so.
 *
 * @module
 */
import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import { type CallTraceContext, RealmError, RealmWebSocketClient } from "../mod.ts";
import { delay, stablePort, within } from "./_helpers.ts";

const SERVE = new URL("../examples/serve.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

/** Calls in a run: a third streams read whole, a third `generate`, a third `health`. */
const CALLS = 300;
/**
 * A new call every so many ms, for about 3 s: more than the servers serve, so every socket carries
 * `pipelining` calls and a kill finds calls behind the one being served.
 */
const CALL_EVERY_MS = 8;
/** The real server's simulated stream: 13 words, the last the prompt's first word. */
const STREAM_TOKENS = 13;
const TOKEN_DELAY_MS = 8;
/** Kills over a run, one server at a time, round robin; each restarts at once on its port. */
const KILLS = 4;
const KILL_EVERY_MS = 500;

/** One stub server in a child process, restartable on its port. */
class ServerProcess {
  // A port no other socket is given while the server is down: it restarts on it.
  readonly port = stablePort();
  #child: Deno.ChildProcess | undefined;

  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** Starts it and waits, at most 20 s, until it listens. */
  async start(): Promise<void> {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net=127.0.0.1",
        SERVE,
        "--port",
        String(this.port),
        "--token-delay",
        String(TOKEN_DELAY_MS),
        // One generation at a time per server: a `generate` on one of its two sockets waits its
        // turn with nothing of its answer yet, so a kill also finds calls it may have been running.
        "--max-generations",
        "1",
      ],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#child = child;
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      let text = "";
      const read = async () => {
        while (!/ws:\/\/127\.0\.0\.1:\d+/.test(text)) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`the stub server exited before listening: ${text}`);
          text += value;
        }
      };
      await within(20_000, read(), "a stub server process to listen");
    } finally {
      // It prints one line and nothing more.
      await reader.cancel();
    }
  }

  /** Sends `signal` and waits (at most 5 s, then SIGKILL) for the process to end. */
  async stop(signal: "SIGKILL" | "SIGINT"): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    try {
      child.kill(signal);
    } catch { /* already gone */ }
    const killer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    }, 5000);
    await child.status;
    clearTimeout(killer);
  }
}

/** The stream's tokens: each of the real simulation's 13 words and a space. */
function expectedTokens(prompt: string): string[] {
  const words = `The capital of France is Paris. This is a simulated response to: ${
    prompt.split(" ")[0]
  }`.split(" ");
  return words.map((word) => `${word} `);
}

type Kind = "stream" | "generate" | "health";

interface Outcome {
  kind: Kind;
  prompt: string;
  /** Tokens read from a stream, in order. */
  tokens: string[];
  value?: unknown;
  error?: unknown;
  settled: number;
}

async function makeCall(client: RealmWebSocketClient, outcome: Outcome): Promise<void> {
  try {
    if (outcome.kind === "stream") {
      const stream = client.generateStream({ prompt: outcome.prompt, max_tokens: STREAM_TOKENS });
      for await (const token of stream) outcome.tokens.push(token);
      outcome.value = await stream.result;
    } else if (outcome.kind === "generate") {
      outcome.value = await client.generate({ prompt: outcome.prompt, max_tokens: 16 });
    } else {
      outcome.value = await client.health();
    }
  } catch (error) {
    outcome.error = error;
  }
  outcome.settled++;
}

/**
 * Runs {@linkcode CALLS} calls against three server processes while {@linkcode KILLS} times one
 * of them is stopped with `signal` and restarted on its port, then checks every outcome.
 */
async function churn(signal: "SIGKILL" | "SIGINT"): Promise<void> {
  const servers = [new ServerProcess(), new ServerProcess(), new ServerProcess()];
  // Each call's settling, as the `realm:call` channel publishes it: once per call id.
  const ends = new Map<string, number>();
  const onEnd = (message: unknown) => {
    const id = (message as CallTraceContext)["gen_ai.response.id"];
    ends.set(id, (ends.get(id) ?? 0) + 1);
  };
  let client: RealmWebSocketClient | undefined;
  diagnostics.subscribe("tracing:realm:call:asyncEnd", onEnd);
  try {
    await Promise.all(servers.map((server) => server.start()));
    client = new RealmWebSocketClient({
      url: servers.map((server) => server.url),
      model: "llama-2-7b",
      connections: 6, // two per server
      reconnectInterval: 10,
      maxReconnectInterval: 100,
      connectTimeout: 2000,
      // Far above a call's worst wait here: a timeout would be a wedged call, not a slow one.
      timeout: 20_000,
    });
    let drops = 0;
    client.on("disconnected", () => drops++);
    await client.connect();
    const connected = client;

    const outcomes: Outcome[] = Array.from({ length: CALLS }, (_, i) => ({
      kind: (["stream", "generate", "health"] as const)[i % 3],
      prompt: `p${i} tell me`,
      tokens: [],
      settled: 0,
    }));
    const calls: Promise<void>[] = [];
    const issue = async () => {
      for (let i = 0; i < CALLS; i++) {
        calls.push(makeCall(connected, outcomes[i]));
        await delay(CALL_EVERY_MS);
      }
    };
    const chaos = async () => {
      for (let k = 0; k < KILLS; k++) {
        await delay(KILL_EVERY_MS);
        const server = servers[k % servers.length];
        await server.stop(signal);
        await server.start();
      }
    };
    await within(60_000, Promise.all([issue(), chaos()]), "the calls and the kills");
    await within(40_000, Promise.all(calls), "every call to settle");

    for (const [i, outcome] of outcomes.entries()) {
      const what = `call ${i} (${outcome.kind})`;
      assert.equal(outcome.settled, 1, `${what} settled once`);
      const expected = expectedTokens(outcome.prompt);
      if (outcome.error === undefined) {
        if (outcome.kind === "stream") {
          assert.deepEqual(outcome.tokens, expected, `${what}: every token, in order`);
          assert.equal(
            (outcome.value as { tokens_generated: number }).tokens_generated,
            STREAM_TOKENS,
          );
        } else if (outcome.kind === "generate") {
          assert.equal(
            (outcome.value as { text: string }).text,
            `Simulated response to: ${outcome.prompt}`,
          );
        } else {
          assert.equal((outcome.value as { status: string }).status, "healthy");
        }
        continue;
      }
      // Only a stream that had delivered tokens may fail, and it says so.
      const error = outcome.error;
      assert.ok(error instanceof RealmError, `${what} failed with ${error}`);
      assert.equal(outcome.kind, "stream", `${what} failed: ${error.code}: ${error.message}`);
      assert.equal(error.code, "CONNECTION_CLOSED", `${what}: ${error.message}`);
      assert.equal(error.delivered, true, `${what}: ${error.message}`);
      assert.ok(outcome.tokens.length > 0, `${what} failed before its reader saw a token`);
      // Its message says how many tokens had arrived: at least those its reader saw.
      const arrived = Number(/(\d+) tokens?\b/.exec(error.message)?.[1]);
      assert.ok(arrived >= outcome.tokens.length, `${what}: ${error.message}`);
      assert.deepEqual(outcome.tokens, expected.slice(0, outcome.tokens.length), what);
    }

    assert.equal(ends.size, CALLS, "every call published its end");
    for (const [id, count] of ends) assert.equal(count, 1, `call ${id} ended ${count} times`);
    assert.ok(drops >= KILLS, `the client saw ${drops} sockets close for ${KILLS} kills`);
    const stats = client.stats();
    assert.ok(stats.resentCalls > 0, "some call was re-sent: the kills hit calls in flight");
    assert.equal(stats.pendingCalls, 0);
    assert.equal(stats.queuedCalls, 0);
  } finally {
    diagnostics.unsubscribe("tracing:realm:call:asyncEnd", onEnd);
    await client?.disconnect();
    await Promise.all(servers.map((server) => server.stop("SIGKILL")));
  }
}

Deno.test("a server killed under load loses no call whose answer had not begun", async () => {
  await churn("SIGKILL");
});

Deno.test("a server closing its sockets under load loses no call whose answer had not begun", async () => {
  await churn("SIGINT");
});
