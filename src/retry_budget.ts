/**
 * One budget for the retries that add load to a server: re-sending a call a
 * dropped server may have been running, and retrying a rate-limited call.
 * (Re-sending a call the server never read is free: it adds nothing.)
 *
 * The rule is gRPC's retry throttling: a token count that every such failure
 * drains by one and every successful call refills by a fraction; once a
 * failure takes it below half its cap, retries are withheld and calls fail
 * with their own error. With {@linkcode RETRY_BUDGET_CAP} 20 and
 * {@linkcode RETRY_BUDGET_REFILL} 0.2, a client retries at most 10 failures
 * in a burst, then about one for every five calls that succeed: a fleet
 * that is going down gets at most about a fifth more calls than it is
 * asked for, never twice its load.
 *
 * @module
 */

/** The most tokens the budget holds, and where it starts. */
export const RETRY_BUDGET_CAP = 20;
/** What a successful call gives back. */
export const RETRY_BUDGET_REFILL = 0.2;

/** The client-wide retry budget. */
export class RetryBudget {
  /** Tokens, in tenths: whole numbers, so that refills add up exactly. */
  #tenths = RETRY_BUDGET_CAP * 10;

  /** Tokens left, from 0 to {@linkcode RETRY_BUDGET_CAP}. */
  get tokens(): number {
    return this.#tenths / 10;
  }

  /**
   * A failure that a retry could mend: it drains a token, and the answer is
   * whether the retry may go (false: it is withheld).
   */
  spend(): boolean {
    this.#tenths = Math.max(0, this.#tenths - 10);
    return this.#tenths >= RETRY_BUDGET_CAP * 5;
  }

  /** A call succeeded: the budget refills a little. */
  succeeded(): void {
    this.#tenths = Math.min(RETRY_BUDGET_CAP * 10, this.#tenths + RETRY_BUDGET_REFILL * 10);
  }
}
