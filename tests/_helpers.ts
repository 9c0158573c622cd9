/**
 * Small helpers shared by the tests (no std: JSR is out of reach).
 * @module
 */
import assert from "node:assert/strict";
import { type ClientStats, RealmError } from "../mod.ts";

/** Awaits a promise that must reject with a RealmError, and returns the error. */
export async function rejection(promise: Promise<unknown>): Promise<RealmError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof RealmError, `expected a RealmError, got ${error}`);
    return error;
  }
  assert.fail("expected the promise to reject");
}

/** Waits `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` every 5 ms until it is true, failing after `ms`. */
export async function until(check: () => boolean, ms = 3000, what = "condition"): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await delay(5);
  }
}

/** Leak sanitizers on: a leaked timer, op or socket fails the test. */
export const sanitize = { sanitizeOps: true, sanitizeResources: true } as const;

/** The stats of a client that holds nothing but `openConnections` sockets and `listeners`. */
export function idleStats(openConnections = 0, listeners = 0): ClientStats {
  return { pendingCalls: 0, queuedCalls: 0, openConnections, callsOnTheWire: 0, listeners };
}
