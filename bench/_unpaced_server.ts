/**
 * A minimal Realm-protocol server for measuring a reader's own cost per token, run as its own
 * process by the benchmarks (`bench/run.ts`, `bench/npm.ts`).
 *
 * The stub paces a 0-delay stream with a timer every 100 tokens (about 2 ms each on Deno), so a
 * 10,000-token stream from the stub takes about 220 ms whoever reads it, and the reader idles
 * between bursts. This server writes the real server's frames byte for byte (serde's key order,
 * `{"id":…,"status":"streaming","data":{"index":…,"is_final":…,"text":…}}`) straight into the
 * TCP connection, many per write, with hand-made WebSocket framing: it outpaces any reader, so a
 * stream takes as long as its reader needs.
 *
 * It speaks just enough of RFC 6455 for a client on loopback: the upgrade, unmasked text frames
 * out, masked text, ping and close frames in. It answers `generate` with `stream: true` and
 * anything else like `health`.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 bench/_unpaced_server.ts
 * ```
 *
 * Prints its URL on one line, and exits when its standard input closes.
 *
 * @module
 */

const WORDS = "The capital of France is Paris. This is a simulated response to:".split(" ");
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const FRAMES_PER_WRITE = 500;
const utf8 = new TextEncoder();
const decoder = new TextDecoder();

const connections = new Set<Deno.Conn>();

/** One unmasked frame (server to client) with the given opcode. */
function frame(opcode: number, payload: Uint8Array): Uint8Array {
  const length = payload.length;
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const out = new Uint8Array(header + length);
  out[0] = 0x80 | opcode;
  if (length < 126) out[1] = length;
  else if (length < 65536) {
    out[1] = 126;
    new DataView(out.buffer).setUint16(2, length);
  } else {
    out[1] = 127;
    new DataView(out.buffer).setBigUint64(2, BigInt(length));
  }
  out.set(payload, header);
  return out;
}

function join(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

const text = (json: unknown) => frame(0x1, utf8.encode(JSON.stringify(json)));

/**
 * Each stream frame without its id: `{"id":"` + id + the tail kept here. Built once per stream
 * shape, so that a stream costs this server a few copies per frame.
 */
const tails = new Map<string, Uint8Array[]>();

function streamTails(total: number, prompt: string): Uint8Array[] {
  const key = `${total}|${prompt}`;
  let cached = tails.get(key);
  if (cached) return cached;
  const words = [...WORDS, prompt.split(" ")[0]];
  cached = [];
  for (let index = 0; index < total; index++) {
    // serde_json writes a map's keys sorted: index, is_final, text.
    const data = { index, is_final: index === total - 1, text: `${words[index % words.length]} ` };
    const json = JSON.stringify({ id: "", status: "streaming", data });
    cached.push(utf8.encode(json.slice('{"id":"'.length)));
  }
  tails.set(key, cached);
  return cached;
}

async function answer(conn: Deno.Conn, call: Record<string, unknown>): Promise<void> {
  const id = call.id;
  const params = (call.params ?? {}) as Record<string, unknown>;
  if (call.function !== "generate" || params.stream !== true) {
    const data = { status: "healthy", version: "0.1.0", uptime_seconds: 0 };
    return writeAll(conn, text({ id, status: "complete", data }));
  }
  const total = Number(params.max_tokens ?? 100);
  // `{"id":"12"}` less its closing `"}`, then the tail's `","status":...`.
  const prefix = utf8.encode(JSON.stringify({ id }).slice(0, -2));
  const streamTail = streamTails(total, String(params.prompt ?? ""));
  for (let start = 0; start < total; start += FRAMES_PER_WRITE) {
    const batch: Uint8Array[] = [];
    for (let index = start; index < Math.min(total, start + FRAMES_PER_WRITE); index++) {
      batch.push(prefix, streamTail[index]);
    }
    await writeAll(conn, framesOf(batch));
  }
  const data = { status: "complete", tokens_generated: total };
  await writeAll(conn, text({ id, status: "complete", data }));
}

/** Text frames from (prefix, tail) pairs: each frame's payload is the two joined. */
function framesOf(pairs: Uint8Array[]): Uint8Array {
  let size = 0;
  for (let i = 0; i < pairs.length; i += 2) {
    const length = pairs[i].length + pairs[i + 1].length;
    size += (length < 126 ? 2 : 4) + length;
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (let i = 0; i < pairs.length; i += 2) {
    const length = pairs[i].length + pairs[i + 1].length;
    out[at++] = 0x81;
    if (length < 126) out[at++] = length;
    else {
      out[at++] = 126;
      out[at++] = length >> 8;
      out[at++] = length & 0xff;
    }
    out.set(pairs[i], at);
    out.set(pairs[i + 1], at + pairs[i].length);
    at += length;
  }
  return out;
}

async function serve(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(1 << 16);
  let pending: Uint8Array = new Uint8Array(0);
  const read = async (): Promise<boolean> => {
    const n = await conn.read(buffer);
    if (n === null) return false;
    pending = join([pending, buffer.subarray(0, n)]);
    return true;
  };
  // The upgrade request.
  let end: number;
  while ((end = decoder.decode(pending).indexOf("\r\n\r\n")) < 0) if (!(await read())) return;
  const request = decoder.decode(pending.subarray(0, end));
  pending = pending.subarray(end + 4);
  const key = /^sec-websocket-key:\s*(\S+)/im.exec(request)?.[1] ?? "";
  const digest = await crypto.subtle.digest("SHA-1", utf8.encode(key + GUID));
  const accept = btoa(String.fromCharCode(...new Uint8Array(digest)));
  await writeAll(
    conn,
    utf8.encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    ),
  );
  await writeAll(conn, text({ status: "connected", version: "0.1.0", tenant_id: null }));
  // Client frames: always masked; calls are small, so no fragmentation to handle.
  for (;;) {
    while (pending.length >= 2) {
      const opcode = pending[0] & 0x0f;
      let length = pending[1] & 0x7f;
      let at = 2;
      if (length === 126) {
        if (pending.length < 4) break;
        length = (pending[2] << 8) | pending[3];
        at = 4;
      } else if (length === 127) {
        if (pending.length < 10) break;
        length = Number(new DataView(pending.buffer, pending.byteOffset).getBigUint64(2));
        at = 10;
      }
      if (pending.length < at + 4 + length) break;
      const mask = pending.subarray(at, at + 4);
      const payload = pending.slice(at + 4, at + 4 + length);
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      pending = pending.subarray(at + 4 + length);
      if (opcode === 0x8) {
        await writeAll(conn, frame(0x8, payload.subarray(0, 2)));
        return;
      }
      if (opcode === 0x9) await writeAll(conn, frame(0xa, payload));
      if (opcode === 0x1) await answer(conn, JSON.parse(decoder.decode(payload)));
    }
    if (!(await read())) return;
  }
}

async function accept(tcp: Deno.TcpListener): Promise<void> {
  for await (const conn of tcp) {
    connections.add(conn);
    serve(conn).catch(() => {}).finally(() => {
      connections.delete(conn);
      try {
        conn.close();
      } catch { /* already closed */ }
    });
  }
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
accept(listener).catch(() => {});
console.log(`ws://127.0.0.1:${listener.addr.port}`);
// The parent closes our stdin (or dies): stop.
for await (const _ of Deno.stdin.readable) { /* nothing is sent on stdin */ }
listener.close();
for (const conn of connections) {
  try {
    conn.close();
  } catch { /* already closed */ }
}
Deno.exit(0);
