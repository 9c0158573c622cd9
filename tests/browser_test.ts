/**
 * The browser hooks: with a `window` and a `document`, `offline` drops the sockets and `online` or
 * `pageshow` reopens them at once, whatever the backoff; `disconnect()` stops listening.
 */
import assert from "node:assert/strict";
import { RealmWebSocketClient } from "../mod.ts";
import {
  attemptUnderWay,
  ejectedServers,
  FAST,
  sanitize,
  until,
  within,
  withRandom,
  withStub,
} from "./_helpers.ts";

/**
 * Stands in for a browser's `window` and `document` (the client watches their network and page
 * events only where both exist) until disposed.
 */
function fakeBrowser() {
  const listeners = new Map<string, () => void>();
  const target = (prefix: string) => ({
    addEventListener: (type: string, listener: () => void) =>
      listeners.set(prefix + type, listener),
    removeEventListener: (type: string, listener: () => void) => {
      if (listeners.get(prefix + type) === listener) listeners.delete(prefix + type);
    },
  });
  const document = { visibilityState: "visible", ...target("document:") };
  (globalThis as { window?: unknown }).window = { ...target("window:"), document };
  return {
    listeners,
    fire(name: string) {
      const listener = listeners.get(name);
      assert.ok(listener, `the client listens to ${name}`);
      listener();
    },
    [Symbol.dispose]() {
      delete (globalThis as { window?: unknown }).window;
    },
  };
}

Deno.test({
  name:
    "in a browser, offline drops the sockets, and online or the page coming back reconnects now",
  ...sanitize,
  fn: () =>
    withStub(async (server) => {
      using browser = fakeBrowser();
      // A backoff this long means that only the browser's events can bring the socket back in time.
      const client = new RealmWebSocketClient({
        ...FAST,
        url: server.url,
        model: "m",
        reconnectInterval: 60_000,
        maxReconnectInterval: 60_000,
      });
      const dropped: { code: number; reason: string }[] = [];
      client.on("disconnected", ({ code, reason }) => dropped.push({ code, reason }));
      try {
        await within(5000, client.connect(), "connect()");
        assert.deepEqual([...browser.listeners.keys()].sort(), [
          "document:visibilitychange",
          "window:offline",
          "window:online",
          "window:pageshow",
        ]);
        browser.fire("window:offline");
        await until(() => client.state === "reconnecting", 3000, "reconnecting after offline");
        assert.deepEqual(dropped, [{ code: 1001, reason: "browser offline" }]);
        browser.fire("window:online");
        await until(() => client.state === "open", 3000, "open again after online");

        browser.fire("window:offline");
        await until(() => client.state === "reconnecting", 3000, "reconnecting after offline");
        browser.fire("window:pageshow");
        await until(() => client.state === "open", 3000, "open again after pageshow");
      } finally {
        await within(5000, client.disconnect(), "disconnect()");
      }
      assert.equal(browser.listeners.size, 0, "disconnect() stops watching the browser");
    }),
});

Deno.test({
  name: "in a browser, online tries every server now, ejected ones included, never after the " +
    "backoff",
  ...sanitize,
  fn: () =>
    withRandom(0.5, async () => {
      using browser = fakeBrowser();
      await using fixture = await ejectedServers();
      // The backoff and the ejections last 60 s: only trying at once opens within seconds.
      browser.fire("window:online");
      await until(() => fixture.client.state === "open", 3000, "open again after online");
      await until(() => fixture.a.connectionCount === 3, 3000, "a's three sockets back");
    }),
});

Deno.test({
  name: "in a browser, online while an attempt is under way is not lost when the attempt fails",
  ...sanitize,
  fn: () =>
    withRandom(0.5, async () => {
      using browser = fakeBrowser();
      await using fixture = await attemptUnderWay();
      fixture.serverBack();
      browser.fire("window:online");
      await fixture.failAttempt();
      // The next attempt would be 60 s away: only the online event's "try now" opens in time.
      await until(() => fixture.client.state === "open", 3000, "open again after online");
      assert.equal(fixture.server.connectionCount, 1);
    }),
});
