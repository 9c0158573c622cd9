import assert from "node:assert/strict";
import {
  callBody,
  callFrame,
  callTail,
  decodeFrame,
  encodeAuth,
  readToken,
  TENANT_ID_PATTERN,
} from "../src/protocol.ts";
import { readTokenFrame } from "../src/token_frame.ts";

Deno.test("decodeFrame recognises the handshake frames", () => {
  assert.deepEqual(decodeFrame('{"status":"connected","version":"0.1.0","tenant_id":null}'), {
    kind: "welcome",
    version: "0.1.0",
    tenantId: null,
  });
  assert.deepEqual(
    decodeFrame('{"type":"auth_required","message":"Please send authentication message"}'),
    { kind: "auth_required", message: "Please send authentication message" },
  );
  assert.deepEqual(decodeFrame('{"type":"auth_success","tenant_id":"acme"}'), {
    kind: "auth_success",
    tenantId: "acme",
  });
  assert.deepEqual(decodeFrame('{"type":"auth_failed","error":"Invalid API key"}'), {
    kind: "auth_failed",
    reason: "Invalid API key",
  });
});

Deno.test("decodeFrame recognises response frames by status", () => {
  assert.deepEqual(
    decodeFrame(
      '{"id":"1","status":"streaming","data":{"text":"Paris ","index":0,"is_final":false}}',
    ),
    { kind: "streaming", id: "1", data: { text: "Paris ", index: 0, is_final: false } },
  );
  assert.deepEqual(decodeFrame('{"id":"2","status":"complete","data":{"status":"healthy"}}'), {
    kind: "complete",
    id: "2",
    data: { status: "healthy" },
  });
  assert.deepEqual(
    decodeFrame(
      '{"id":"3","status":"error","error":{"code":"RATE_LIMIT_EXCEEDED","message":"Try again in 2 seconds."}}',
    ),
    {
      kind: "error",
      id: "3",
      error: {
        code: "RATE_LIMIT_EXCEEDED",
        message: "Try again in 2 seconds.",
        details: undefined,
        retry_after: undefined,
      },
    },
  );
  assert.deepEqual(decodeFrame('{"id":"4","status":"cancelled"}'), { kind: "cancelled", id: "4" });
});

Deno.test("decodeFrame never throws: garbage and the binary reply come back as kinds", () => {
  assert.equal(decodeFrame("{oops").kind, "invalid");
  assert.equal(decodeFrame("[1,2]").kind, "invalid");
  assert.equal(decodeFrame("null").kind, "invalid");
  assert.equal(decodeFrame('{"id":"1","status":"weird"}').kind, "invalid");
  assert.deepEqual(decodeFrame('{"error":"Binary messages not supported"}'), {
    kind: "bare_error",
    message: "Binary messages not supported",
  });
});

Deno.test("readToken reads `text` (the server) and `token` (the old README)", () => {
  assert.equal(readToken({ text: "Paris ", index: 0, is_final: false }), "Paris ");
  assert.equal(readToken({ token: "Hi", is_final: true }), "Hi");
  assert.equal(readToken({ is_final: true }), "");
  assert.equal(readToken(null), undefined);
});

Deno.test("a call frame always sends params and the tenant id", () => {
  assert.deepEqual(JSON.parse(callFrame("7", callBody("health", "{}"), callTail("acme"))), {
    id: "7",
    function: "health",
    params: {},
    tenant_id: "acme",
  });
});

Deno.test("a call frame built in parts is the JSON of its call, for every function", () => {
  const fns = ["generate", "health", "metadata", "pipeline"] as const;
  const params = [
    "{}",
    '{"prompt":"say \\"hi\\"\\n","max_tokens":3}',
    '{"pipeline":"p","input":[1,{}]}',
  ];
  for (const fn of fns) {
    for (const json of params) {
      for (const id of ["1", "4294967296", "heartbeat-12"]) {
        const text = callFrame(id, callBody(fn, json), callTail("tenant_a-1"));
        assert.equal(
          text,
          JSON.stringify({ id, function: fn, params: JSON.parse(json), tenant_id: "tenant_a-1" }),
        );
      }
    }
  }
});

Deno.test("TENANT_ID_PATTERN is the server's rule and accepts a UUID", () => {
  assert.ok(TENANT_ID_PATTERN.test(crypto.randomUUID()));
  assert.ok(TENANT_ID_PATTERN.test("a_b"));
  assert.ok(!TENANT_ID_PATTERN.test("ab"));
  assert.ok(!TENANT_ID_PATTERN.test("a".repeat(65)));
  assert.ok(!TENANT_ID_PATTERN.test("has space"));
});

Deno.test("decodeFrame fills in what a handshake frame leaves out", () => {
  assert.deepStrictEqual(decodeFrame('{"status":"connected"}'), {
    kind: "welcome",
    version: "unknown",
    tenantId: null,
  });
  assert.deepStrictEqual(decodeFrame('{"status":"connected","version":1,"tenant_id":"acme"}'), {
    kind: "welcome",
    version: "unknown",
    tenantId: "acme",
  });
  assert.deepStrictEqual(decodeFrame('{"status":"connected","tenant_id":7}').kind, "welcome");
  assert.equal(
    (decodeFrame('{"status":"connected","tenant_id":7}') as { tenantId: unknown })
      .tenantId,
    null,
  );
  assert.deepStrictEqual(decodeFrame('{"type":"auth_required"}'), {
    kind: "auth_required",
    message: "",
  });
  assert.deepStrictEqual(decodeFrame('{"type":"auth_failed"}'), {
    kind: "auth_failed",
    reason: "Authentication failed",
  });
  assert.deepStrictEqual(decodeFrame('{"type":"auth_success"}'), {
    kind: "invalid",
    reason: 'auth_success without tenant_id: {"type":"auth_success"}',
  });
  assert.deepStrictEqual(decodeFrame('{"type":"hello"}'), {
    kind: "invalid",
    reason: 'unknown frame type: {"type":"hello"}',
  });
  assert.deepStrictEqual(decodeFrame('{"status":"ready"}'), {
    kind: "invalid",
    reason: 'unrecognised frame: {"status":"ready"}',
  });
});

Deno.test("decodeFrame: error frames of every shape become a code and a message", () => {
  assert.deepStrictEqual(decodeFrame('{"id":"5","status":"error","error":"boom"}'), {
    kind: "error",
    id: "5",
    error: { code: "INTERNAL_ERROR", message: "boom" },
  });
  assert.deepStrictEqual(decodeFrame('{"id":"5","status":"error","error":null}'), {
    kind: "error",
    id: "5",
    error: { code: "INTERNAL_ERROR", message: "The server reported an error" },
  });
  assert.deepStrictEqual(decodeFrame('{"id":"5","status":"error"}'), {
    kind: "error",
    id: "5",
    error: { code: "INTERNAL_ERROR", message: "The server reported an error" },
  });
  assert.deepStrictEqual(decodeFrame('{"id":"5","status":"error","error":{}}'), {
    kind: "error",
    id: "5",
    error: {
      code: "INTERNAL_ERROR",
      message: "The server reported an error",
      details: undefined,
      retry_after: undefined,
    },
  });
  assert.deepStrictEqual(
    decodeFrame(
      '{"id":"6","status":"error","retry_after":3,"error":{"code":"X","message":"m","details":{"a":1}}}',
    ),
    {
      kind: "error",
      id: "6",
      error: { code: "X", message: "m", details: { a: 1 }, retry_after: 3 },
    },
  );
  assert.deepStrictEqual(
    decodeFrame(
      '{"id":"6","status":"error","retry_after":3,"error":{"code":"X","message":"m","retry_after":4}}',
    ),
    {
      kind: "error",
      id: "6",
      error: { code: "X", message: "m", details: undefined, retry_after: 4 },
    },
  );
  assert.deepStrictEqual(decodeFrame('{"id":"7","status":"complete"}'), {
    kind: "complete",
    id: "7",
    data: undefined,
  });
});

Deno.test("decodeFrame's reasons show the frame, cut at 120 characters", () => {
  assert.deepStrictEqual(decodeFrame(new Uint8Array([1, 2])), {
    kind: "invalid",
    reason: "binary frame from the server",
  });
  assert.deepStrictEqual(decodeFrame("{oops"), { kind: "invalid", reason: "not JSON: {oops" });
  assert.deepStrictEqual(decodeFrame("[1,2]"), {
    kind: "invalid",
    reason: "not a JSON object: [1,2]",
  });
  assert.deepStrictEqual(decodeFrame("null"), {
    kind: "invalid",
    reason: "not a JSON object: null",
  });
  assert.deepStrictEqual(decodeFrame("42"), { kind: "invalid", reason: "not a JSON object: 42" });
  assert.deepStrictEqual(decodeFrame('{"id":"1","status":"weird"}'), {
    kind: "invalid",
    reason: 'unknown status in frame: {"id":"1","status":"weird"}',
  });
  const long = "x".repeat(200);
  assert.deepStrictEqual(decodeFrame(long), {
    kind: "invalid",
    reason: `not JSON: ${"x".repeat(120)}…`,
  });
  const exact = "y".repeat(120);
  assert.deepStrictEqual(decodeFrame(exact), { kind: "invalid", reason: `not JSON: ${exact}` });
});

Deno.test("readToken: `text` first, then `token`, and only strings", () => {
  assert.equal(readToken({ text: "a", token: "b" }), "a");
  assert.equal(readToken({ token: "b" }), "b");
  assert.equal(readToken({ text: "" }), "");
  // A bare marker carries the empty token; a token that is not a string is unusable.
  assert.equal(readToken({ is_final: true }), "");
  assert.equal(readToken({ text: 5, token: "b" }), undefined);
  assert.equal(readToken({ text: null }), undefined);
  assert.equal(readToken({ token: 5 }), undefined);
  assert.equal(readToken("text"), undefined);
  assert.equal(readToken(undefined), undefined);
});

Deno.test("encodeAuth sends the key in the server's auth frame", () => {
  assert.equal(encodeAuth("sk-1"), '{"type":"auth","api_key":"sk-1"}');
});

Deno.test("TENANT_ID_PATTERN: 3 to 64 characters, the whole id", () => {
  assert.ok(TENANT_ID_PATTERN.test("abc"));
  assert.ok(TENANT_ID_PATTERN.test("a".repeat(64)));
  assert.ok(TENANT_ID_PATTERN.test("A-Z_09"));
  for (const bad of ["!!abc", "abc!!", "a.b.c", "", "ab\n"]) {
    assert.ok(!TENANT_ID_PATTERN.test(bad), JSON.stringify(bad));
  }
});

Deno.test("TENANT_ID_PATTERN: letters and digits of any script, as the server takes them", () => {
  // The real server serves these tenants (a key's tenant "équipe-1" included).
  for (const good of ["équipe-1", "ünï", "日本語", "a\u0663b", "é".repeat(32)]) {
    assert.ok(TENANT_ID_PATTERN.test(good), good);
  }
  for (const bad of ["a b", "a😀b", "x\u0301y", "ab", "a".repeat(65)]) {
    assert.ok(!TENANT_ID_PATTERN.test(bad), bad);
  }
});

Deno.test("decodeFrame reads fixed-layout tokens without JSON.parse, and only those", () => {
  const parse = JSON.parse;
  let parses = 0;
  JSON.parse = (...args: Parameters<typeof parse>) => (parses++, parse(...args));
  /** The frame decoded, and whether it went through JSON.parse. */
  const decode = (text: string) => {
    const before = parses;
    return { frame: decodeFrame(text), parsed: parses > before };
  };
  try {
    // Ids of any length: the check looks just past the id's closing quote.
    for (const id of ["", "7", "12345678901234567890", "a b", "é😀", "heartbeat-3"]) {
      for (
        const text of [
          `{"id":"${id}","status":"streaming","data":{"index":0,"is_final":false,"text":"Hi"}}`,
          `{"id":"${id}","status":"streaming","data":{"text":"Hi","index":3,"is_final":true}}`,
        ]
      ) {
        const { frame, parsed } = decode(text);
        assert.equal(parsed, false, text);
        assert.deepEqual(frame, readTokenFrame(text));
        assert.deepEqual(frame, { kind: "streaming", id, data: parse(text).data });
      }
      // Answers go through JSON.parse, as before.
      assert.deepEqual(decode(`{"id":"${id}","status":"complete","data":{"ok":1}}`), {
        frame: { kind: "complete", id, data: { ok: 1 } },
        parsed: true,
      });
    }
    // A status that starts like "streaming" but is not still reaches JSON.parse and is refused.
    const stalled = decode('{"id":"1","status":"stalled","data":{}}');
    assert.equal(stalled.frame.kind, "invalid");
    assert.equal(stalled.parsed, true);
    // A token frame outside the fixed layout (spaces) is read by JSON.parse, not lost.
    assert.deepEqual(decode('{"id": "1", "status": "streaming", "data": {"text": "x"}}'), {
      frame: { kind: "streaming", id: "1", data: { text: "x" } },
      parsed: true,
    });
  } finally {
    JSON.parse = parse;
  }
});
