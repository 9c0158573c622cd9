/**
 * The per-tenant token bucket, as `rate_limiter.rs` of `realm-server` runs it (`TokenBucket`,
 * `RateLimiter::check_rate_limit`): the stub's counterpart of that module.
 *
 * @module
 */

/**
 * The per-tenant token bucket of an authenticated stub server.
 *
 * @example 60 calls a minute with a burst of 100 (the real server's defaults)
 * ```ts
 * import type { StubRateLimit } from "@realm-ai/ws-client/testing";
 *
 * const realDefaults: StubRateLimit = { perMinute: 60, burst: 100 };
 * ```
 */
export interface StubRateLimit {
  /** Tokens added to a tenant's bucket per minute (spread evenly); must be above 0. */
  perMinute: number;
  /** Capacity of the bucket, and its content when the tenant makes its first call. */
  burst: number;
}

interface Bucket {
  tokens: number;
  refilledAt: number;
}

/**
 * A bucket per tenant, created full on first use and refilled continuously.
 *
 * @example
 * ```ts
 * import { RateLimiter } from "./rate_limiter.ts";
 *
 * const limiter = new RateLimiter({ perMinute: 60, burst: 1 });
 * const first = limiter.wait("tenant-a"); // undefined: allowed
 * const second = limiter.wait("tenant-a"); // 0: refused, "Try again in 0 seconds."
 * ```
 */
export class RateLimiter {
  readonly #limit: StubRateLimit;
  readonly #buckets = new Map<string, Bucket>();

  /** Checks the limit; throws a `RangeError` naming a bad value. */
  constructor(limit: StubRateLimit) {
    const { perMinute, burst } = limit;
    if (typeof perMinute !== "number" || !(perMinute > 0) || !Number.isFinite(perMinute)) {
      throw new RangeError(`rateLimit.perMinute must be a finite number > 0, got ${perMinute}`);
    }
    if (
      burst !== undefined && (typeof burst !== "number" || !(burst >= 0) || !Number.isFinite(burst))
    ) {
      throw new RangeError(`rateLimit.burst must be a finite number >= 0, got ${burst}`);
    }
    this.#limit = { perMinute, burst: burst ?? 0 };
  }

  /** Takes a token from the tenant's bucket: undefined if allowed, else whole seconds to wait. */
  wait(tenantId: string): number | undefined {
    const limit = this.#limit;
    const now = performance.now();
    const perSecond = limit.perMinute / 60;
    let bucket = this.#buckets.get(tenantId);
    if (bucket === undefined) {
      this.#buckets.set(tenantId, bucket = { tokens: limit.burst, refilledAt: now });
    }
    const refill = (now - bucket.refilledAt) / 1000 * perSecond;
    bucket.tokens = Math.min(limit.burst, bucket.tokens + refill);
    bucket.refilledAt = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return undefined;
    }
    // Rounded down, as the real limiter's `Duration::as_secs()`: often 0.
    return Math.floor((1 - bucket.tokens) / perSecond);
  }
}
