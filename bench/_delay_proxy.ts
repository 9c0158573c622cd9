/**
 * A TCP proxy that delays every chunk by a fixed latency each way, for the benchmarks: a stand-in
 * for a network between the client and a server (the kernel's `netem` is not available here). It
 * runs in its own process, so that its timers never share the measured client's event loop.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 bench/_delay_proxy.ts TARGET_PORT LATENCY_MS
 * ```
 *
 * Listens on a free port of 127.0.0.1, prints `ws://127.0.0.1:PORT` on one line, and forwards each
 * connection to `127.0.0.1:TARGET_PORT`: a chunk read at time t is written at t + LATENCY_MS, in
 * order, so a round trip costs twice the latency and the bandwidth is not limited. When either side
 * closes, the other is closed once what it was sent has been delivered; a target that refuses the
 * connection closes the client's at once. Exits when its standard input closes.
 *
 * @module
 */

const targetPort = Number(Deno.args[0]);
const latency = Number(Deno.args[1] ?? 0);
if (!Number.isInteger(targetPort) || !(latency >= 0)) {
  console.error("usage: _delay_proxy.ts TARGET_PORT LATENCY_MS");
  Deno.exit(2);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Copies `from` to `to`, each chunk `latency` ms after it was read; resolves when `from` ends. */
async function delayedCopy(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const pending: { at: number; bytes: Uint8Array }[] = [];
  let reading = true;
  let wake: (() => void) | undefined;
  const reader = (async () => {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await from.read(buffer);
        if (n === null) break;
        pending.push({ at: performance.now() + latency, bytes: buffer.slice(0, n) });
        wake?.();
      }
    } catch { /* reset: treated as the end */ }
    reading = false;
    wake?.();
  })();
  try {
    while (reading || pending.length > 0) {
      if (pending.length === 0) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      const wait = pending[0].at - performance.now();
      if (wait > 0) await sleep(wait);
      let bytes = pending.shift()!.bytes;
      while (bytes.length > 0) bytes = bytes.subarray(await to.write(bytes));
    }
  } catch { /* the other side is gone */ }
  await reader;
}

async function serve(client: Deno.TcpConn): Promise<void> {
  let server: Deno.TcpConn;
  try {
    server = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
  } catch {
    client.close();
    return;
  }
  client.setNoDelay(true);
  server.setNoDelay(true);
  const close = () => {
    for (const conn of [client, server]) {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  // Whichever direction ends first ends the connection, as a dropped link would.
  await Promise.race([delayedCopy(client, server), delayedCopy(server, client)]);
  close();
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(`ws://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`);
void (async () => {
  for await (const _ of Deno.stdin.readable) { /* until it closes */ }
  Deno.exit(0);
})();
for await (const client of listener) void serve(client);
