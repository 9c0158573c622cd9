/**
 * Reconnect and retry timing: exponential delays with full jitter, and a
 * cancellable sleep.
 *
 * @module
 */

/**
 * The delay before reconnect attempt `attempt` (counting from 1): uniformly
 * random between 0 and twice the exponential step `base · 2^(attempt-1)`,
 * so the average is the step itself (full jitter, centred on the step),
 * never more than `cap`.
 *
 * @param attempt Attempt number, 1 for the first retry.
 * @param base The first step in ms (the `reconnectInterval` option).
 * @param cap The longest delay in ms (`maxReconnectInterval`).
 * @param random A source of numbers in [0, 1); injectable for tests.
 */
export function reconnectDelay(
  attempt: number,
  base: number,
  cap: number,
  random: () => number = Math.random,
): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 30);
  const step = Math.min(cap, base * 2 ** exponent);
  return Math.min(cap, Math.round(random() * 2 * step));
}

/** The smallest wait before retrying a rate-limited call, in ms. */
export const MIN_RETRY_DELAY_MS = 100;

/**
 * The wait before retrying a rate-limited call: the server's `retryAfter`
 * plus up to 20 % (at least {@linkcode MIN_RETRY_DELAY_MS}) of jitter, so
 * clients that were limited together do not retry together. The server
 * rounds its wait down to whole seconds and often says 0.
 *
 * @param retryAfterSeconds The error's `retryAfter`.
 * @param random A source of numbers in [0, 1).
 */
export function retryDelay(retryAfterSeconds: number, random: () => number = Math.random): number {
  const base = Math.max(0, retryAfterSeconds) * 1000;
  const jitter = Math.max(MIN_RETRY_DELAY_MS, base * 0.2);
  return Math.round(base + MIN_RETRY_DELAY_MS + random() * jitter);
}

/**
 * Waits `ms`, or rejects with `signal.reason` as soon as `signal` aborts. The
 * timer is always cleared, so nothing outlives the wait.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const done = () => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    };
    const timer = setTimeout(done, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
