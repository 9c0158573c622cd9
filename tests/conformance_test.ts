/**
 * The conformance command (`conformance.ts`): it passes against the stub server, open and
 * authenticated; a server that answers differently fails the check that sees it and makes the
 * command exit with 1; a bad command line exits with 2; its output in a log, on a terminal and
 * as JSON.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  CONFORMANCE_CHECKS,
  conformanceMain,
  type ConformanceReport,
  runConformance,
} from "../conformance.ts";
import { CALLS_PER_RUN } from "../src/conformance/checks.ts";
import { startStubServer, type StubServer, type StubServerOptions } from "../testing.ts";
import { sanitize } from "./_helpers.ts";

const command = fileURLToPath(new URL("../conformance.ts", import.meta.url));
const AUTH_CHECKS = ["auth: key accepted", "auth: wrong key refused", "auth: no key refused"];

/** Runs the command as a user does; its exit status and what it printed. */
async function runCommand(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", command, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const text = new TextDecoder();
  return {
    code: output.code,
    stdout: text.decode(output.stdout),
    stderr: text.decode(output.stderr),
  };
}

async function withStub<T>(options: StubServerOptions, fn: (server: StubServer) => Promise<T>) {
  const server = await startStubServer({ tokenDelayMs: 1, ...options });
  try {
    return await fn(server);
  } finally {
    await server.close();
  }
}

const byName = (report: ConformanceReport, name: string) =>
  report.checks.find((check) => check.name === name)!;

/**
 * A WebSocket proxy in front of `target` that hands every frame the server sends to `change`:
 * a server that differs from the real one where the test says. `change` returns the frame to
 * pass on, or undefined to drop it.
 */
function proxy(target: string, change: (frame: string) => string | undefined) {
  const sockets = new Set<WebSocket>();
  const closes: Promise<void>[] = [];
  const track = (socket: WebSocket) => {
    sockets.add(socket);
    closes.push(new Promise((resolve) => socket.addEventListener("close", () => resolve())));
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const { socket: client, response } = Deno.upgradeWebSocket(request);
    const upstream = new WebSocket(target);
    upstream.binaryType = "arraybuffer";
    track(client);
    track(upstream);
    const early: (string | ArrayBuffer)[] = [];
    client.onmessage = (event) => {
      if (upstream.readyState === WebSocket.OPEN) upstream.send(event.data);
      else early.push(event.data);
    };
    upstream.onopen = () => early.splice(0).forEach((data) => upstream.send(data));
    upstream.onmessage = (event) => {
      const frame = change(event.data);
      if (frame !== undefined && client.readyState === WebSocket.OPEN) client.send(frame);
    };
    const closeBoth = () => {
      for (const socket of [client, upstream]) {
        if (socket.readyState === WebSocket.OPEN) socket.close();
      }
    };
    client.onclose = closeBoth;
    upstream.onclose = closeBoth;
    client.onerror = (event) => event.preventDefault();
    upstream.onerror = (event) => event.preventDefault();
    return response;
  });
  return {
    url: `ws://127.0.0.1:${server.addr.port}`,
    async close() {
      for (const socket of sockets) {
        if (socket.readyState === WebSocket.OPEN) socket.close();
      }
      await Promise.all(closes);
      await server.shutdown();
    },
  };
}

Deno.test({
  name: "against the open stub every check passes; the auth and rate-limit checks say why not",
  ...sanitize,
  fn: () =>
    withStub({}, async (server) => {
      const report = await runConformance({ url: server.url });
      assert.deepEqual(report.checks.map((check) => check.name), CONFORMANCE_CHECKS);
      assert.deepEqual(
        report.checks.filter((check) => check.status === "fail"),
        [],
      );
      assert.deepEqual(
        report.checks.filter((check) => check.status === "skip").map((check) => check.name),
        [...AUTH_CHECKS, "rate limit"],
      );
      assert.equal(
        byName(report, AUTH_CHECKS[0]).detail,
        "needs an auth-enabled server; this one is open",
      );
      assert.match(byName(report, "rate limit").detail, /pass --rate-limit/);
      assert.equal(report.mode, "open");
      assert.equal(report.version, "0.1.0");
    }),
});

Deno.test({
  name: "against an authenticated stub with a rate limit every check passes, none skipped",
  ...sanitize,
  fn: () =>
    withStub({
      apiKeys: { "sk-conformance": "tenant-c" },
      rateLimit: { perMinute: 600, burst: 60 },
    }, async (server) => {
      const report = await runConformance({
        url: server.url,
        apiKey: "sk-conformance",
        rateLimit: true,
      });
      assert.deepEqual(
        report.checks.filter((check) => check.status !== "pass"),
        [],
      );
      assert.equal(report.passed, CONFORMANCE_CHECKS.length);
      assert.equal(report.mode, "authenticated");
      assert.match(
        byName(report, "rate limit").detail,
        /Rate limit exceeded\. Try again in \d+ seconds/,
      );
      assert.match(byName(report, "auth: key accepted").detail, /tenant tenant-c/);
    }),
});

Deno.test({
  name: "a run makes as many calls as a rate-limited failure says it does",
  ...sanitize,
  fn: () =>
    withStub({ apiKeys: { "sk-conformance": "tenant-c" } }, async (server) => {
      const report = await runConformance({ url: server.url, apiKey: "sk-conformance" });
      assert.equal(report.failed, 0);
      assert.equal(server.callCount, CALLS_PER_RUN);
    }),
});

Deno.test({
  name: "a key whose rate limit is too tight for a run: the failures say so",
  ...sanitize,
  fn: () =>
    withStub({
      apiKeys: { "sk-conformance": "tenant-c" },
      rateLimit: { perMinute: 1, burst: 10 },
    }, async (server) => {
      const report = await runConformance({ url: server.url, apiKey: "sk-conformance" });
      const failed = report.checks.filter((check) => check.status === "fail");
      assert.ok(failed.length > 0);
      assert.match(failed.at(-1)!.detail, /RATE_LIMIT_EXCEEDED.*about \d+ calls/);
    }),
});

Deno.test({
  name: "an authenticated server without --api-key: the key check fails, the calls are skipped",
  ...sanitize,
  fn: () =>
    withStub({ apiKeys: { "sk-conformance": "tenant-c" } }, async (server) => {
      const report = await runConformance({ url: server.url });
      assert.deepEqual(
        report.checks.filter((check) => check.status === "fail").map((check) => check.name),
        ["auth: key accepted"],
      );
      assert.match(byName(report, "auth: key accepted").detail, /pass --api-key KEY/);
      assert.equal(byName(report, "health").status, "skip");
      assert.match(byName(report, "health").detail, /needs --api-key/);
      // The refusals need no key of their own.
      assert.equal(byName(report, "auth: wrong key refused").status, "pass");
      assert.equal(byName(report, "auth: no key refused").status, "pass");
    }),
});

/** Frames a server can get wrong, each with the check that must catch it. */
const PLANTED: { what: string; check: string; change: (frame: string) => string | undefined }[] = [
  {
    what: "a stream's token in `token` (the SDK README's guess), not `text`",
    check: "stream frames",
    change: (frame) =>
      frame.includes('"status":"streaming"') ? frame.replace('"text":', '"token":') : frame,
  },
  {
    what: "an unknown function answered as if it ran",
    check: "unknown function",
    change: (frame) =>
      frame.includes("Unknown function")
        ? frame.replace(/"status":"error","error":\{[^}]*\}/, '"status":"complete","data":{}')
        : frame,
  },
  {
    what: 'an unparseable frame\'s error sent with another id than "unknown"',
    check: "unparseable frame",
    change: (frame) => frame.replace('"id":"unknown"', '"id":"0"'),
  },
  {
    what: "a health status other than healthy",
    check: "health",
    change: (frame) => frame.replace('"status":"healthy"', '"status":"degraded"'),
  },
  {
    what: "a stream whose complete frame miscounts its tokens",
    check: "stream frames",
    change: (frame) => frame.replace('"tokens_generated":4}', '"tokens_generated":5}'),
  },
];

for (const planted of PLANTED) {
  Deno.test({
    name: `a server with ${planted.what} fails "${planted.check}"`,
    ...sanitize,
    fn: () =>
      withStub({}, async (server) => {
        const differing = proxy(server.url, planted.change);
        try {
          const report = await runConformance({ url: differing.url, timeout: 2000 });
          const check = byName(report, planted.check);
          assert.equal(check.status, "fail", `${planted.check}: ${check.detail}`);
          assert.ok(report.failed >= 1);
        } finally {
          await differing.close();
        }
      }),
  });
}

Deno.test({
  name: "the command exits with 1 when a check fails, and its table names the failure",
  ...sanitize,
  fn: () =>
    withStub({}, async (server) => {
      const differing = proxy(server.url, PLANTED[1].change);
      try {
        const { code, stdout, stderr } = await runCommand([differing.url, "--timeout", "2000"]);
        assert.equal(code, 1);
        assert.equal(stderr, "");
        assert.match(
          stdout,
          /^unknown function +fail +\d+ ms +an unknown function: expected an error frame for id/m,
        );
        assert.match(stdout, /\n19 checks: 14 passed, 1 failed, 4 skipped \(/);
      } finally {
        await differing.close();
      }
    }),
});

Deno.test({
  name: "the command exits with 0 against the stub, and --fail-on-skip turns skips into a 1",
  ...sanitize,
  fn: () =>
    withStub({}, async (server) => {
      const passed = await runCommand([server.url]);
      assert.equal(passed.code, 0);
      assert.match(passed.stdout, /19 checks: 15 passed, 0 failed, 4 skipped/);
      const strict = await runCommand([server.url, "--fail-on-skip"]);
      assert.equal(strict.code, 1);
    }),
});

Deno.test("no server at the address: the first check fails, the others are skipped, exit 1", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const { code, stdout } = await runCommand([`ws://127.0.0.1:${port}`, "--json"]);
  assert.equal(code, 1);
  const report = JSON.parse(stdout) as ConformanceReport;
  assert.equal(report.mode, null);
  assert.equal(report.checks[0].status, "fail");
  assert.match(report.checks[0].detail, /cannot open a WebSocket|closed/);
  assert.ok(report.checks.slice(1).every((check) => check.status === "skip"));
});

Deno.test("bad command lines exit with 2 and say what to fix, before anything is sent", async (t) => {
  const cases: [string[], RegExp][] = [
    [[], /the server's URL is missing/],
    [["http://127.0.0.1:8080"], /expected a ws:\/\/ or wss:\/\/ URL/],
    [["not a url"], /not a URL/],
    [["ws://127.0.0.1:1", "--timeout", "abc"], /--timeout expects a whole number/],
    [["ws://127.0.0.1:1", "--connections", "0"], /--connections expects a whole number from 1/],
    [["ws://127.0.0.1:1", "--api-key"], /--api-key needs a value/],
    [["ws://127.0.0.1:1", "--nope"], /unknown option: --nope/],
    [["ws://127.0.0.1:1", "ws://127.0.0.1:2"], /one server at a time/],
    [
      ["ws://realm.example.com", "--api-key", "k"],
      /over plain ws:\/\/.*pass --allow-insecure-auth/,
    ],
  ];
  for (const [args, message] of cases) {
    await t.step(args.join(" ") || "(no arguments)", async () => {
      const { code, stdout, stderr } = await runCommand(args);
      assert.equal(code, 2);
      assert.equal(stdout, "");
      assert.match(stderr, message);
    });
  }
});

Deno.test("--help prints the usage and exits with 0", async () => {
  const { code, stdout, stderr } = await runCommand(["--help"]);
  assert.equal(code, 0);
  assert.equal(stderr, "");
  assert.match(stdout, /^usage: deno task conformance <url> \[options\]/);
  assert.match(stdout, /--rate-limit/);
});

/** Runs the command in-process with an output that records what it printed. */
async function printed(args: string[], isTerminal: boolean) {
  let out = "";
  let err = "";
  const status = await conformanceMain(args, {
    write: (text) => (out += text),
    writeError: (text) => (err += text),
    isTerminal,
  });
  return { status, out, err };
}

Deno.test({
  name: "in a log each check is one plain line; on a terminal a progress line runs under them",
  ...sanitize,
  fn: () =>
    withStub({}, async (server) => {
      const log = await printed([server.url], false);
      assert.equal(log.status, 0);
      assert.equal(log.err, "");
      assert.ok(!log.out.includes("\r") && !log.out.includes("\x1b"), "no control characters");
      const rows = log.out.split("\n").filter((line) => /^\S.* (pass|fail|skip) /.test(line));
      assert.deepEqual(rows.map((row) => row.split(/ {2,}/)[0]), CONFORMANCE_CHECKS);
      const terminal = await printed([server.url], true);
      assert.equal(terminal.status, 0);
      assert.ok(terminal.out.includes("  running 1/19: welcome frame …\r\x1b[2K"), "progress");
      // Once the run is over, no progress line is left behind.
      assert.ok(!terminal.out.split("\r\x1b[2K").at(-1)!.includes("running"));
      assert.match(terminal.out, /\n19 checks: 15 passed, 0 failed, 4 skipped \(\d+ ms\)\n$/);
    }),
});

Deno.test({
  name: "--json prints one report with every check, and nothing else",
  ...sanitize,
  fn: () =>
    withStub({}, async (server) => {
      const { status, out } = await printed([server.url, "--json"], true);
      assert.equal(status, 0);
      const report = JSON.parse(out) as ConformanceReport;
      assert.equal(report.url, server.url);
      assert.deepEqual(report.checks.map((check) => check.name), CONFORMANCE_CHECKS);
      assert.equal(report.passed + report.skipped, CONFORMANCE_CHECKS.length);
      for (const check of report.checks) {
        assert.equal(typeof check.ms, "number");
        assert.equal(typeof check.detail, "string");
      }
    }),
});
