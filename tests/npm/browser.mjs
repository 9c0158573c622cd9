/**
 * Runs the behaviour suite in a real headless Chromium. This Node process starts both stub
 * servers (through the installed `@realm-ai/ws-client/testing`) and a tiny static server on
 * 127.0.0.1 that serves the page, the suite and the installed package's files. The page loads
 * the package's ESM build through an import map that points the bare name at the file the
 * package's `exports` name for the `browser` condition. Every request the page makes is
 * recorded: none may reach `ws` or the Node entry.
 *
 * Usage: `node browser.mjs` from a project that has the package and `playwright-core`
 * installed. `CHROMIUM` overrides the browser (default `/usr/bin/chromium`).
 *
 * @module
 */
import { createServer } from "node:http";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve, sep } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { startStubServer } from "@realm-ai/ws-client/testing";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
// Required, not imported: `deno check tests/` walks this file and knows no playwright-core.
const { chromium } = require("playwright-core");
const packageDir = dirname(require.resolve("@realm-ai/ws-client/package.json"));
const packageJson = JSON.parse(await readFile(join(packageDir, "package.json"), "utf8"));
const browserEntry = packageJson.exports["."].browser.default.replace(/^\.\//, "");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

const apiKey = "sk-test-browser";
const tenantId = "tenant-browser";
// The behaviour suite runs the built-in rag-pipeline: the stub's orchestrator, a test extra.
const open = await startStubServer({ tokenDelayMs: 5, orchestrator: true });
const auth = await startStubServer({ apiKeys: { [apiKey]: tenantId }, tokenDelayMs: 5 });

const page = `<!doctype html>
<meta charset="utf-8">
<title>@realm-ai/ws-client in the browser</title>
<script type="importmap">
{ "imports": { "@realm-ai/ws-client": "/pkg/${browserEntry}" } }
</script>
<script type="module">
import { RealmError, RealmWebSocketClient } from "@realm-ai/ws-client";
import { runBehaviour } from "/behaviour.mjs";
const config = await (await fetch("/config")).json();
try {
  window.realmResult = await runBehaviour({
    RealmWebSocketClient,
    RealmError,
    ...config,
    expectedSource: "global",
    dropConnections: async () => void await fetch("/drop", { method: "POST" }),
  });
} catch (error) {
  console.log("suite crashed: " + (error && error.stack || error));
  window.realmResult = { passed: 0, failed: 1, failures: [String(error)] };
}
</script>
`;

/** The lifecycle page: one client on the open server, its states recorded, left to the driver. */
const lifecyclePage = `<!doctype html>
<meta charset="utf-8">
<script type="importmap">
{ "imports": { "@realm-ai/ws-client": "/pkg/${browserEntry}" } }
</script>
<script type="module">
import { RealmWebSocketClient } from "@realm-ai/ws-client";
const config = await (await fetch("/config")).json();
// A 60 s backoff: only the browser's own events can bring the socket back quickly.
const client = new RealmWebSocketClient({
  url: config.openUrl,
  model: "llama-2-7b",
  reconnectInterval: 60000,
  maxReconnectInterval: 60000,
});
window.states = [];
client.on("statechange", ({ to }) => window.states.push(to));
await client.connect();
window.client = client;
</script>
`;

const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json" };
/** Every path the page asked the static server for. */
const requested = [];

const http = createServer(async (request, response) => {
  const path = decodeURIComponent(new URL(request.url, "http://localhost").pathname);
  requested.push(path);
  const send = (status, type, body) => {
    response.writeHead(status, { "content-type": type, "cache-control": "no-store" });
    response.end(body);
  };
  try {
    if (path === "/") return send(200, "text/html; charset=utf-8", page);
    if (path === "/lifecycle") return send(200, "text/html; charset=utf-8", lifecyclePage);
    if (path === "/favicon.ico") return send(204, "image/x-icon", "");
    if (path === "/config") {
      const config = { openUrl: open.url, authUrl: auth.url, apiKey, tenantId };
      return send(200, TYPES[".json"], JSON.stringify(config));
    }
    if (path === "/drop" && request.method === "POST") {
      open.faults.dropAfterFrames(0);
      open.faults.clear();
      return send(204, "text/plain", "");
    }
    if (path === "/behaviour.mjs") {
      return send(200, TYPES[".mjs"], await readFile(join(here, "behaviour.mjs")));
    }
    if (path.startsWith("/pkg/")) {
      const file = resolve(packageDir, "." + path.slice("/pkg".length));
      if (file.startsWith(packageDir + sep)) {
        const type = TYPES[extname(file)] ?? "application/octet-stream";
        return send(200, type, await readFile(file));
      }
    }
    send(404, "text/plain", "not found");
  } catch {
    send(404, "text/plain", "not found");
  }
});
await new Promise((done) => http.listen(0, "127.0.0.1", done));
const origin = `http://127.0.0.1:${http.address().port}`;

/**
 * The browser's network and page events: offline drops the sockets, online reconnects at once
 * (despite a 60 s backoff), a page shown again checks its socket with a heartbeat, and after
 * `disconnect()` none of these does anything.
 */
async function lifecycleChecks(context, tab) {
  const outcome = { passed: 0, failed: 0 };
  const check = async (name, fn) => {
    try {
      await fn();
      outcome.passed++;
      console.log(`ok - browser lifecycle: ${name}`);
    } catch (error) {
      outcome.failed++;
      console.log(`not ok - browser lifecycle: ${name}: ${error?.message ?? error}`);
    }
  };
  const state = () => tab.evaluate(() => globalThis.client.state);
  const until = async (what, test, ms = 5000) => {
    const deadline = Date.now() + ms;
    while (!(await test())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const heartbeats = () =>
    open.receivedFrames().filter((frame) => frame.includes('"id":"heartbeat-')).length;
  await tab.goto(origin + "/lifecycle");
  await tab.waitForFunction(() => globalThis.client?.state === "open", null, { timeout: 10_000 });
  await check("offline drops the sockets", async () => {
    await context.setOffline(true);
    await until("reconnecting", async () => (await state()) === "reconnecting");
    await new Promise((resolve) => setTimeout(resolve, 300));
    if ((await state()) !== "reconnecting") throw new Error(`state ${await state()} offline`);
  });
  await check("online reconnects at once despite a 60 s backoff", async () => {
    await context.setOffline(false);
    await until("open", async () => (await state()) === "open", 3000);
  });
  await check("a page shown again checks its socket at once", async () => {
    const before = heartbeats();
    await tab.evaluate(() =>
      globalThis.dispatchEvent(new PageTransitionEvent("pageshow", { persisted: true }))
    );
    await until("a heartbeat", () => heartbeats() === before + 1, 3000);
    await until("its answer", async () => (await state()) === "open");
    await tab.evaluate(() => document.dispatchEvent(new Event("visibilitychange")));
    await until("a second heartbeat", () => heartbeats() === before + 2, 3000);
  });
  await check("disconnect() removes the listeners", async () => {
    await tab.evaluate(() => globalThis.client.disconnect());
    const before = heartbeats();
    await context.setOffline(true);
    await context.setOffline(false);
    await tab.evaluate(() => globalThis.dispatchEvent(new Event("pageshow")));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const states = await tab.evaluate(() => globalThis.states.join(" "));
    if (states !== "connecting open reconnecting open idle") throw new Error(`states ${states}`);
    if (heartbeats() !== before) throw new Error("a heartbeat after disconnect()");
    if (open.connectionCount !== 0) throw new Error(`${open.connectionCount} sockets left`);
  });
  return outcome;
}

const profile = await mkdtemp(join(tmpdir(), "realm-chromium-"));
let context;
let result;
let lifecycle;
const problems = [];
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const tab = context.pages()[0] ?? await context.newPage();
  const version = context.browser()?.version() ?? "(version unknown)";
  console.log(`# Chromium ${version}, ESM build ${browserEntry} via an import map`);
  tab.on("console", (message) => console.log(message.text()));
  tab.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  tab.on("request", (request) => {
    if (!request.url().startsWith(origin + "/")) problems.push(`request outside: ${request.url()}`);
  });
  await tab.goto(origin + "/");
  await tab.waitForFunction(() => globalThis.realmResult !== undefined, null, {
    timeout: 180_000,
    polling: 100,
  });
  result = await tab.evaluate(() => globalThis.realmResult);
  lifecycle = await lifecycleChecks(context, await context.newPage());
} finally {
  await context?.close();
  await rm(profile, { recursive: true, force: true });
  await new Promise((done) => http.close(done));
  await Promise.all([open.close(), auth.close()]);
}

// The browser build must never ask for ws, nor for the Node entry that loads it.
const forbidden = requested.filter((path) =>
  /(^|\/)ws(\/|\.|$)/.test(path) || path.includes("node_modules") ||
  path.endsWith(`/${browserEntry.replace(/[^/]+$/, "")}node.js`)
);
for (const path of forbidden) problems.push(`the page requested ${path}`);
const fromPackage = requested.filter((path) => path.startsWith("/pkg/"));
console.log(`# the page loaded ${fromPackage.length} files of the package, none of them ws`);
for (const problem of problems) console.log(`not ok - ${problem}`);
const failed = (result?.failed ?? 1) + (lifecycle?.failed ?? 1) + problems.length;
const passed = (result?.passed ?? 0) + (lifecycle?.passed ?? 0);
console.log(`browser total: ${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
