/**
 * `deno task serve` (examples/serve.ts) as a user runs it: a busy port gets a line that names
 * the port and the `--port` flag.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parseServeFlags } from "../examples/serve.ts";

const serveScript = fileURLToPath(new URL("../examples/serve.ts", import.meta.url));

Deno.test("serve on a busy port names the port and --port, exits with 1", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (busy.addr as Deno.NetAddr).port;
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net=127.0.0.1,localhost",
        "--allow-read",
        serveScript,
        "--port",
        `${port}`,
      ],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
      signal: AbortSignal.timeout(30_000),
    }).output();
    assert.equal(output.code, 1);
    assert.equal(new TextDecoder().decode(output.stdout), "");
    assert.equal(
      new TextDecoder().decode(output.stderr),
      `Port ${port} on 127.0.0.1 is already in use. ` +
        "Pick another with --port N (--port 0: any free port).\n",
    );
  } finally {
    busy.close();
  }
});

Deno.test("serve refuses an --api-key whose tenant the real server would refuse", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1,localhost",
      serveScript,
      "--port",
      "0",
      "--api-key",
      "k=a",
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    signal: AbortSignal.timeout(30_000),
  }).output();
  assert.equal(output.code, 1);
  assert.equal(new TextDecoder().decode(output.stdout), "");
  assert.equal(
    new TextDecoder().decode(output.stderr),
    'API key "k" maps to tenant "a", which the real server refuses on every call: ' +
      "Tenant ID must be between 3 and 64 characters, got 1.\n",
  );
});

Deno.test("serve's --long-streams and --orchestrator turn on the stub's extras, and only they", () => {
  assert.deepEqual(parseServeFlags([]), { port: 8080 });
  assert.deepEqual(parseServeFlags(["--long-streams", "--orchestrator", "--port", "0"]), {
    port: 0,
    longStreams: true,
    orchestrator: true,
  });
  assert.throws(() => parseServeFlags(["--long-streams=yes"]), /--long-streams takes no value/);
});
