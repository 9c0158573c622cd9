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
