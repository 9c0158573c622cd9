/**
 * The retry budget's arithmetic: what drains it, what refills it, when it withholds, and its
 * bounds (never below 0, never above its cap).
 */
import assert from "node:assert/strict";
import { RETRY_BUDGET_CAP, RETRY_BUDGET_REFILL, RetryBudget } from "../src/retry_budget.ts";

Deno.test("retry budget: a full budget lets 10 failures in a row retry, then withholds", () => {
  const budget = new RetryBudget();
  assert.equal(budget.tokens, RETRY_BUDGET_CAP);
  const answers = Array.from({ length: 12 }, () => budget.spend());
  assert.deepEqual(answers, [...Array(10).fill(true), false, false]);
  assert.equal(budget.tokens, RETRY_BUDGET_CAP - 12);
});

Deno.test("retry budget: successes refill it, five for one retry, and never above the cap", () => {
  const budget = new RetryBudget();
  for (let i = 0; i < 11; i++) budget.spend();
  assert.equal(budget.spend(), false, "drained: withheld");
  assert.equal(budget.tokens, 8);
  for (let i = 0; i < 5; i++) budget.succeeded();
  assert.equal(budget.tokens, 9, "five successes give back one");
  assert.equal(budget.spend(), false, "9 - 1 = 8: still below half");
  for (let i = 0; i < 15; i++) budget.succeeded();
  assert.equal(budget.tokens, 11, "exactly: no rounding error piles up");
  assert.equal(budget.spend(), true, "11 - 1 = 10: at half, the retry goes");
  for (let i = 0; i < 1000; i++) budget.succeeded();
  assert.equal(budget.tokens, RETRY_BUDGET_CAP, "never above the cap");
});

Deno.test("retry budget: never below zero, however many failures", () => {
  const budget = new RetryBudget();
  for (let i = 0; i < 100; i++) budget.spend();
  assert.equal(budget.tokens, 0);
  budget.succeeded();
  assert.equal(budget.tokens, RETRY_BUDGET_REFILL, "refills from zero");
});
