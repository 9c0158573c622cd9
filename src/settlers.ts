/**
 * Promises made through one shared executor. `new Promise((resolve, reject) => …)` makes a closure
 * for every promise, and the client makes one promise per call and one per token a `for await`
 * waits for; the executor runs before `new` returns, so one function can hand the two over.
 *
 * @module
 */

/**
 * The functions of the promise {@linkcode newPromise} made last, until it makes another (set by
 * the first one).
 */
export const settlers = {} as {
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
};

function capture(resolve: (value: unknown) => void, reject: (error: unknown) => void): void {
  settlers.resolve = resolve;
  settlers.reject = reject;
}

/** A pending promise; take its functions from {@linkcode settlers} before making another. */
export function newPromise<T>(): Promise<T> {
  return new Promise<T>(capture as (resolve: (value: T) => void) => void);
}
