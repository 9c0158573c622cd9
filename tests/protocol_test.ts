import assert from "node:assert/strict";
import { decodeFrame, encodeCall, readToken, TENANT_ID_PATTERN } from "../src/protocol.ts";
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

Deno.test("encodeCall always sends params and the tenant id", () => {
  assert.deepEqual(JSON.parse(encodeCall("7", "health", "{}", "acme")), {
    id: "7",
    function: "health",
    params: {},
    tenant_id: "acme",
  });
});

Deno.test("TENANT_ID_PATTERN is the server's rule and accepts a UUID", () => {
  assert.ok(TENANT_ID_PATTERN.test(crypto.randomUUID()));
  assert.ok(TENANT_ID_PATTERN.test("a_b"));
  assert.ok(!TENANT_ID_PATTERN.test("ab"));
  assert.ok(!TENANT_ID_PATTERN.test("a".repeat(65)));
  assert.ok(!TENANT_ID_PATTERN.test("has space"));
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
