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

/**
 * The wait before retrying a rate-limited call for the `limit`-th time (from 1). The server
 * rounds its wait down to whole seconds ("Try again in 0 seconds" means under a second), so
 * `N` seconds means a token is due somewhere in `[N, N + 1)` s: the first retry waits a random
 * time in `[N + 0.5, N + 1]` s, and each further limit of the same call adds that random half
 * second to a second again (`[N + 0.5k, N + k]` s for the k-th), so that calls limited together
 * spread out instead of coming back together.
 *
 * @param retryAfterSeconds The error's `retryAfter`.
 * @param limit How many times this call has been limited, counting this one.
 * @param random A source of numbers in [0, 1).
 */
export function retryDelay(
  retryAfterSeconds: number,
  limit = 1,
  random: () => number = Math.random,
): number {
  return Math.round(Math.max(0, retryAfterSeconds) * 1000 + (500 + random() * 500) * limit);
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
