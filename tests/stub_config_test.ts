/**
 * The stub refuses, when it starts, a configuration the real server would refuse: an API key
 * whose tenant breaks the server's tenant rule would pass authentication and then fail every
 * call, so it fails here, at once, naming the key, the tenant and the rule.
 */
import assert from "node:assert/strict";
import { startStubServer } from "../testing.ts";

async function startError(apiKeys: Record<string, string>): Promise<Error> {
  try {
    const server = await startStubServer({ apiKeys });
    await server.close();
  } catch (error) {
    assert.ok(error instanceof RangeError, `expected a RangeError, got ${error}`);
    return error;
  }
  assert.fail("the stub started");
}

Deno.test("a tenant of one character is refused at start, naming the key and the rule", async () => {
  const error = await startError({ "good-key": "tenant-a", "short-key": "a" });
  assert.equal(
    error.message,
    'API key "short-key" maps to tenant "a", which the real server refuses on every call: ' +
      "Tenant ID must be between 3 and 64 characters, got 1.",
  );
});

Deno.test("tenants too long, or with other characters, are refused with the server's words", async () => {
  assert.match(
    (await startError({ k: "t".repeat(65) })).message,
    /tenant "t{65}".*between 3 and 64 characters, got 65\.$/,
  );
  assert.match(
    (await startError({ k: "acme corp" })).message,
    /tenant "acme corp".*only alphanumeric characters, hyphens, and underscores\.$/,
  );
  // The rule counts UTF-8 bytes and allows Unicode letters, as the server's does.
  const server = await startStubServer({ apiKeys: { k1: "été", k2: "a_b-c" } });
  await server.close();
});

Deno.test("setApiKey() on a running stub refuses such a tenant too", async () => {
  const server = await startStubServer({ apiKeys: { k1: "tenant-a" } });
  try {
    assert.throws(
      () => server.setApiKey("k2", "ab"),
      (error: unknown) =>
        error instanceof RangeError && /API key "k2" maps to tenant "ab"/.test(error.message),
    );
    server.setApiKey("k3", "tenant-c");
  } finally {
    await server.close();
  }
});
