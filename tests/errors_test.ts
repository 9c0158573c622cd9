import assert from "node:assert/strict";
import { parseRetryAfter, RealmError } from "../mod.ts";

Deno.test("parseRetryAfter reads the number from the real server's message", () => {
  assert.equal(parseRetryAfter({ message: "Rate limit exceeded. Try again in 3 seconds." }), 3);
  assert.equal(parseRetryAfter({ message: "Rate limit exceeded. Try again in 0 seconds." }), 0);
  assert.equal(parseRetryAfter({ message: "Rate limit exceeded. Try again in 1 second." }), 1);
});

Deno.test("parseRetryAfter prefers retry_after, then details.retry_after, over the message", () => {
  assert.equal(parseRetryAfter({ retry_after: 7, message: "Try again in 3 seconds." }), 7);
  assert.equal(
    parseRetryAfter({ details: { retry_after: "5" }, message: "Try again in 3 seconds." }),
    5,
  );
  assert.equal(parseRetryAfter({ retry_after: -1, details: { retry_after: 2 } }), 2);
});

Deno.test("parseRetryAfter returns undefined when nothing says how long", () => {
  assert.equal(parseRetryAfter({ message: "Rate limit exceeded." }), undefined);
  assert.equal(parseRetryAfter({}), undefined);
});

Deno.test("RealmError carries code, request id, retryAfter, details, sent and cause", () => {
  const cause = new Error("root");
  const error = new RealmError("TIMEOUT", "late", {
    requestId: "9",
    retryAfter: 1,
    details: { a: 1 },
    sent: false,
    cause,
  });
  assert.ok(error instanceof Error);
  assert.equal(error.name, "RealmError");
  assert.equal(error.code, "TIMEOUT");
  assert.equal(error.requestId, "9");
  assert.equal(error.retryAfter, 1);
  assert.deepEqual(error.details, { a: 1 });
  assert.equal(error.sent, false);
  assert.equal(error.cause, cause);
  assert.equal(new RealmError("X", "y").retryAfter, undefined);
});

Deno.test("parseRetryAfter reads fractional seconds from the message", () => {
  assert.equal(parseRetryAfter({ message: "Try again in 1.25 seconds." }), 1.25);
  assert.equal(parseRetryAfter({ message: "try again in 2.5 SECONDS" }), 2.5);
});

Deno.test("parseRetryAfter: a retry_after that is not a number of seconds ≥ 0 is skipped", () => {
  const message = "Rate limit exceeded. Try again in 7 seconds.";
  // Each of these falls through to the message's 7.
  for (const retry_after of [null, "", "  ", "soon", "-5", -1, Infinity, NaN, true, {}]) {
    assert.equal(parseRetryAfter({ retry_after, message }), 7, String(retry_after));
    assert.equal(parseRetryAfter({ details: { retry_after }, message }), 7, String(retry_after));
  }
  // Zero is a real wait (less than a second), in both forms.
  assert.equal(parseRetryAfter({ retry_after: 0, message }), 0);
  assert.equal(parseRetryAfter({ retry_after: "0", message }), 0);
  assert.equal(parseRetryAfter({ retry_after: " 4 ", message }), 4);
});

Deno.test("parseRetryAfter: details that are not an object, and a message that is not a string", () => {
  const message = "Try again in 3 seconds.";
  assert.equal(parseRetryAfter({ details: null, message }), 3);
  assert.equal(parseRetryAfter({ details: "retry_after: 9", message }), 3);
  assert.equal(parseRetryAfter({ details: {}, message }), 3);
  assert.equal(parseRetryAfter({ message: ["Try again in 5 seconds."] }), undefined);
});

Deno.test("RealmError without a cause has no cause property", () => {
  assert.equal("cause" in new RealmError("X", "m"), false);
  assert.equal("cause" in new RealmError("X", "m", { requestId: "1" }), false);
  assert.equal(new RealmError("X", "m", { cause: 0 }).cause, 0);
});
