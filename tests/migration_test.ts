// deno-lint-ignore-file no-explicit-any -- the earlier programs below are kept as written
/**
 * Coming from the earlier client (`sdks/nodejs-ws` of the Realm project): the members it had
 * that programs still call (`getModel()`, `onError()`), and `apiKey: ""` (an empty
 * `REALM_API_KEY=` line) meaning no key, as it did there.
 */
import assert from "node:assert/strict";
import { RealmError, RealmWebSocketClient } from "../mod.ts";
import { startStubServer } from "../testing.ts";
import { idleStats, rejection, sanitize, until } from "./_helpers.ts";

Deno.test("getModel() returns the model option, before and after connecting", async () => {
  const server = await startStubServer({ tokenDelayMs: 0 });
  const client = new RealmWebSocketClient({ url: server.url, model: "tinyllama-1.1b" });
  try {
    assert.equal(client.getModel(), "tinyllama-1.1b");
    await client.connect();
    assert.equal(client.getModel(), "tinyllama-1.1b");
  } finally {
    await client.disconnect();
    await server.close();
  }
});

Deno.test({
  name: "onError(callback) receives error events, returns nothing, and off('error') removes it",
  ...sanitize,
  fn: async () => {
    const server = await startStubServer({ tokenDelayMs: 0 });
    const client = new RealmWebSocketClient({ url: server.url, model: "m" });
    const errors: RealmError[] = [];
    const callback = (error: RealmError) => errors.push(error);
    try {
      assert.equal(client.onError(callback), undefined);
      assert.deepEqual(client.stats(), idleStats(0, 1));
      await client.connect();
      server.faults.sendMalformed("not-json");
      await until(() => errors.length === 1, 3000, "the error event");
      assert.ok(errors[0] instanceof RealmError);
      assert.equal(errors[0].code, "PROTOCOL_ERROR");
      client.off("error", callback);
      assert.deepEqual(client.stats(), idleStats(1, 0));
      server.faults.sendMalformed("not-json");
      // A health round trip after the frame: the frame has been handled when it answers.
      assert.equal((await client.health()).status, "healthy");
      assert.equal(errors.length, 1);
    } finally {
      await client.disconnect();
      await server.close();
    }
  },
});

Deno.test({
  name: 'apiKey: "" is no key: an open server connects, an authenticating one asks for a key',
  ...sanitize,
  fn: async () => {
    const open = await startStubServer({ tokenDelayMs: 0 });
    const auth = await startStubServer({ tokenDelayMs: 0, apiKeys: { "key-1": "tenant-a" } });
    const openClient = new RealmWebSocketClient({ url: open.url, model: "m", apiKey: "" });
    const authClient = new RealmWebSocketClient({
      url: auth.url,
      model: "m",
      apiKey: "",
      reconnect: false,
    });
    try {
      await openClient.connect();
      assert.equal((await openClient.health()).status, "healthy");
      const error = await rejection(authClient.connect());
      assert.equal(error.code, "UNAUTHORIZED");
      assert.match(error.message, /requires an API key/);
      // No auth frame was sent with an empty key.
      assert.deepEqual(auth.receivedFrames(), []);
    } finally {
      await openClient.disconnect();
      await authClient.disconnect();
      await open.close();
      await auth.close();
    }
  },
});

Deno.test('apiKey: "" over ws:// to another host is no key, so nothing to refuse', () => {
  const client = new RealmWebSocketClient({
    model: "m",
    url: "ws://realm.example.com:8080",
    apiKey: "",
  });
  assert.equal(client.getModel(), "m");
  // A real key there is still refused, and a key that is not a string too.
  for (const apiKey of ["k", 42]) {
    try {
      new RealmWebSocketClient({
        model: "m",
        url: "ws://realm.example.com:8080",
        apiKey: apiKey as string,
      });
      assert.fail("accepted");
    } catch (error) {
      assert.ok(error instanceof RealmError);
      assert.equal(error.code, "INVALID_OPTIONS");
    }
  }
});

// -------------------------------------------------------------------------------------------
// The earlier client's documented programs, run against the stub.
//
// Below are the README's snippets and the three example programs of `sdks/nodejs-ws` (Querent-ai/
// realm, commit dc54997), each kept as written there except for three things: the import line
// (this file imports the package once, at the top), the server address, `"ws://localhost:8080"`
// there, which is the stub's ephemeral port here (`url`), and `process`, which is a stand-in here,
// given to each program: its `env` (REALM_API_KEY as the test sets it) and its `stdout`. The test
// files run in parallel in one process, so a variable set in the real environment would reach the
// others. What the programs print is captured and checked line by line, so a message of ours
// printed unasked would fail the test too.
// -------------------------------------------------------------------------------------------

/** What a program printed: console.log/console.error arguments, and its stdout's text. */
interface Printed {
  log: unknown[][];
  error: unknown[][];
  stdout: string;
}

/** The `process` a program sees: its environment and its stdout, nothing shared. */
interface StandInProcess {
  env: Record<string, string | undefined>;
  stdout: { write(chunk: string): boolean };
}

/**
 * Runs `program(url, process)` against a fresh stub, with a stand-in `process` whose
 * REALM_API_KEY is `apiKey` (unset when undefined), and console.log and console.error captured.
 */
async function runAgainstStub(
  serverOptions: Parameters<typeof startStubServer>[0],
  apiKey: string | undefined,
  program: (url: string, process: StandInProcess) => Promise<void>,
): Promise<Printed> {
  // The earlier README streams 100 tokens and runs a pipeline: the stub's test extras.
  const server = await startStubServer({
    tokenDelayMs: 0,
    longStreams: true,
    orchestrator: true,
    ...serverOptions,
  });
  const printed: Printed = { log: [], error: [], stdout: "" };
  const standIn: StandInProcess = {
    env: apiKey === undefined ? {} : { REALM_API_KEY: apiKey },
    stdout: {
      write(chunk) {
        printed.stdout += chunk;
        return true;
      },
    },
  };
  const { log, error } = console;
  console.log = (...args: unknown[]) => printed.log.push(args);
  console.error = (...args: unknown[]) => printed.error.push(args);
  try {
    await program(server.url, standIn);
    // The programs call disconnect() without awaiting it (it returned void before): what
    // their listeners print while the sockets close is theirs too.
    await until(() => server.connectionCount === 0, 3000, "the program's sockets to close");
  } finally {
    console.log = log;
    console.error = error;
    await server.close();
  }
  return printed;
}

/** The simulated stream's text for `max_tokens` tokens of a prompt starting with `firstWord`. */
function streamedText(firstWord: string, maxTokens: number): string {
  const words = `The capital of France is Paris. This is a simulated response to: ${firstWord}`
    .split(" ");
  return Array.from({ length: maxTokens }, (_, i) => `${words[i % words.length]} `).join("");
}

const METADATA_FUNCTIONS = ["generate", "health", "metadata", "pipeline"];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

Deno.test("earlier README: Quick Start runs unchanged and prints only what it prints", async () => {
  const printed = await runAgainstStub({}, undefined, async (url, process) => {
    // Simple usage - model is required, tenant ID auto-assigned
    const client = new RealmWebSocketClient({
      url,
      model: "llama-2-7b", // Model name or URL (required)
      apiKey: "your-api-key", // Optional
      // tenantId: "my-tenant",  // Optional - auto-assigned if not provided
    });

    // Connect
    await client.connect();

    // Get your auto-assigned tenant ID
    console.log("Tenant ID:", client.getTenantId());

    // Generate text
    const result = await client.generate({
      prompt: "What is the capital of France?",
      max_tokens: 50,
    });

    console.log(result.text);

    // Generate with streaming
    for await (
      const token of client.generateStream({
        prompt: "Tell me a story",
        max_tokens: 100,
      })
    ) {
      process.stdout.write(token);
    }

    // Disconnect
    client.disconnect();
  });
  assert.equal(printed.log.length, 2);
  assert.equal(printed.log[0][0], "Tenant ID:");
  assert.match(printed.log[0][1] as string, UUID);
  assert.deepEqual(printed.log[1], ["Paris"]);
  assert.equal(printed.stdout, streamedText("Tell", 100));
  assert.deepEqual(printed.error, []);
});

Deno.test("earlier README: the method, event and error-handling snippets run unchanged", async () => {
  const printed = await runAgainstStub(
    { apiKeys: { "your-api-key": "your-tenant" } },
    undefined,
    async (url, process) => {
      const client = new RealmWebSocketClient({ url, model: "llama-2-7b", apiKey: "your-api-key" });

      // Listen for connection events
      const callback = () => {
        console.log("Connected!");
      };
      client.on("connected", callback);

      client.on("disconnected", () => {
        console.log("Disconnected!");
      });

      client.on("error", (error) => {
        console.error("Error:", error);
      });

      // #### `connect(): Promise<void>`
      await client.connect();

      // #### `generate(options: GenerationOptions): Promise<GenerationResult>`
      const result = await client.generate({
        prompt: "Hello, world!",
        max_tokens: 100,
        temperature: 0.7,
        stream: false, // Set to true for streaming
      });
      console.log(result.text);

      // #### `generateStream(options: GenerationOptions): AsyncGenerator<string>`
      for await (
        const token of client.generateStream({
          prompt: "Hello, world!",
          max_tokens: 100,
          temperature: 0.7,
        })
      ) {
        process.stdout.write(token);
      }

      // #### `executePipeline(pipelineName: string, input: PipelineInput): Promise<any>`
      const pipelineResult = await client.executePipeline("rag-pipeline", {
        query: "What is machine learning?",
        context: "Machine learning is...",
      });
      console.log(pipelineResult);

      // #### `health()`, `metadata()`, `isConnected()`
      console.log((await client.health()).status);
      console.log((await client.metadata()).functions.map((f) => f.name));
      console.log(client.isConnected());

      // ## Error Handling
      try {
        await client.generate({ prompt: "Hello" });
      } catch (error: any) {
        if (error.code === "RATE_LIMIT_EXCEEDED") {
          console.log("Rate limited. Retry after:", error.retryAfter);
        } else if (error.code === "UNAUTHORIZED") {
          console.log("Authentication failed");
        } else {
          console.error("Error:", error.message);
        }
      }

      // Remove listener
      client.off("connected", callback);

      // #### `disconnect(): void`
      client.disconnect();
    },
  );
  assert.deepEqual(printed.log, [
    ["Connected!"],
    ["Simulated response to: Hello, world!"],
    [{
      answer: "Simulated response to: What is machine learning?",
      sources: ["Machine learning is..."],
      // Object answers carry the call's id (the third call: after generate and the stream).
      requestId: "3",
    }],
    ["healthy"],
    [METADATA_FUNCTIONS],
    [true],
    ["Disconnected!"],
  ]);
  assert.equal(printed.stdout, streamedText("Hello,", 100));
  assert.deepEqual(printed.error, []);
});

Deno.test("earlier examples/basic.ts runs unchanged with an empty REALM_API_KEY= line", async () => {
  const printed = await runAgainstStub({}, "", async (url, process) => {
    const client = new RealmWebSocketClient({
      url,
      model: "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
      apiKey: process.env.REALM_API_KEY, // Optional
      tenantId: "example-tenant", // Optional
    });

    try {
      // Connect to server
      console.log("Connecting to Realm server...");
      await client.connect();
      console.log("✓ Connected!");

      // Check health
      console.log("\nChecking server health...");
      const health = await client.health();
      console.log("Health:", health);

      // Get metadata
      console.log("\nGetting runtime metadata...");
      const metadata = await client.metadata();
      console.log("Available functions:", metadata.functions.map((f: any) => f.name));

      // Generate text
      console.log("\nGenerating text...");
      const result = await client.generate({
        prompt: "What is the capital of France?",
        max_tokens: 50,
        temperature: 0.7,
      });
      console.log("Generated:", result.text);
      console.log("Tokens:", result.tokens_generated);

      // Execute pipeline (if available)
      console.log("\nExecuting pipeline...");
      try {
        const pipelineResult = await client.executePipeline("simple-chat", {
          prompt: "Hello, how are you?",
        });
        console.log("Pipeline result:", pipelineResult);
      } catch (error) {
        console.log("Pipeline not available:", (error as Error).message);
      }
    } catch (error) {
      console.error("Error:", error);
    } finally {
      client.disconnect();
    }
  });
  assert.deepEqual(printed.error, []);
  const health = printed.log[3];
  assert.equal(health[0], "Health:");
  // In the server's order (its serde_json map is sorted), then the client's requestId.
  assert.deepEqual(Object.keys(health[1] as object), [
    "status",
    "uptime_seconds",
    "version",
    "requestId",
  ]);
  assert.deepEqual(printed.log, [
    ["Connecting to Realm server..."],
    ["✓ Connected!"],
    ["\nChecking server health..."],
    health,
    ["\nGetting runtime metadata..."],
    ["Available functions:", METADATA_FUNCTIONS],
    ["\nGenerating text..."],
    ["Generated:", "Paris"],
    ["Tokens:", 1],
    ["\nExecuting pipeline..."],
    ["Pipeline not available:", "Pipeline not found: simple-chat"],
  ]);
});

Deno.test("earlier examples/streaming.ts runs unchanged, with an empty key or a real one", async (t) => {
  const program = async (url: string, process: StandInProcess) => {
    const client = new RealmWebSocketClient({
      url,
      model: "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
      apiKey: process.env.REALM_API_KEY,
    });

    try {
      await client.connect();
      console.log("✓ Connected!");

      console.log("\nGenerating with streaming...");

      for await (
        const token of client.generateStream({
          prompt: "Tell me a short story about a robot.",
          max_tokens: 100,
          temperature: 0.8,
        })
      ) {
        process.stdout.write(token);
      }

      console.log("\n✓ Complete!");
    } catch (error) {
      console.error("Error:", error);
    } finally {
      client.disconnect();
    }
  };
  const expected = [["✓ Connected!"], ["\nGenerating with streaming..."], ["\n✓ Complete!"]];
  await t.step("open server, REALM_API_KEY=", async () => {
    const printed = await runAgainstStub({}, "", program);
    assert.deepEqual(printed.error, []);
    assert.deepEqual(printed.log, expected);
    assert.equal(printed.stdout, streamedText("Tell", 100));
  });
  await t.step("authenticating server, REALM_API_KEY=sk_live_1", async () => {
    const printed = await runAgainstStub(
      { apiKeys: { sk_live_1: "tenant-a" } },
      "sk_live_1",
      program,
    );
    assert.deepEqual(printed.error, []);
    assert.deepEqual(printed.log, expected);
    assert.equal(printed.stdout, streamedText("Tell", 100));
  });
});

Deno.test("earlier examples/error-handling.ts runs unchanged against an authenticating server", async () => {
  const printed = await runAgainstStub(
    { apiKeys: { sk_live_1: "tenant-a" } },
    "sk_live_1",
    async (url, process) => {
      const client = new RealmWebSocketClient({
        url,
        model: "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
        apiKey: process.env.REALM_API_KEY,
      });

      try {
        await client.connect();

        // Example 1: Rate limit handling
        try {
          await client.generate({
            prompt: "Hello",
            max_tokens: 50,
          });
        } catch (error: any) {
          if (error.code === "RATE_LIMIT_EXCEEDED") {
            console.log(`Rate limited! Retry after: ${error.retryAfter} seconds`);
            // Wait and retry
            await new Promise((resolve) => setTimeout(resolve, error.retryAfter * 1000));
            // Retry...
          } else {
            throw error;
          }
        }

        // Example 2: Authentication error
        try {
          const invalidClient = new RealmWebSocketClient({
            url,
            model: "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
            apiKey: "invalid-key",
          });
          await invalidClient.connect();
        } catch (error: any) {
          if (error.code === "UNAUTHORIZED" || error.message.includes("auth")) {
            console.log("Authentication failed - check your API key");
          }
        }

        // Example 3: Function not found
        try {
          // This would fail if the function doesn't exist
          await client.generate({
            prompt: "Test",
            max_tokens: 10,
          });
        } catch (error: any) {
          if (error.code === "FUNCTION_NOT_FOUND") {
            console.log("Function not available on this server");
          } else {
            console.log("Other error:", error.message);
          }
        }
      } catch (error) {
        console.error("Unexpected error:", error);
      } finally {
        client.disconnect();
      }
    },
  );
  assert.deepEqual(printed.error, []);
  assert.deepEqual(printed.log, [["Authentication failed - check your API key"]]);
});
