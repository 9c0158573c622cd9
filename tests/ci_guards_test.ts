/**
 * The CI guards of .ci/run (in .ci/guards.sh), fed fake logs: each green-but-broken case the
 * guards exist for is refused, and a good log passes with its counts.
 */
import assert from "node:assert/strict";

const GUARDS = new URL("../.ci/guards.sh", import.meta.url).pathname;

/** Runs one guard with `log` on its standard input. */
async function guard(
  args: string[],
  log = "",
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command("bash", {
    args: [GUARDS, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(log));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  const text = new TextDecoder();
  return { code, stdout: text.decode(stdout).trim(), stderr: text.decode(stderr) };
}

const ESC = "\x1b";

Deno.test("deno-counts: reads the closing line, colours, steps and ignored included", async () => {
  const log = [
    "running 3 tests from ./tests/a_test.ts",
    `a ... ${ESC}[32mok${ESC}[0m (2ms)`,
    "",
    `${ESC}[0m${ESC}[32mok${ESC}[0m | 212 passed (4 steps) | 0 failed | 1 ignored ${ESC}[0m(1m4s)`,
  ].join("\n");
  assert.deepEqual(await guard(["deno-counts"], log), {
    code: 0,
    stdout: "212 0 1",
    stderr: "",
  });
  const plain = await guard(["deno-counts"], "ok | 5 passed | 0 failed (1s)\n");
  assert.equal(plain.stdout, "5 0 0");
});

Deno.test("deno-counts: a failed count comes through, so CI can refuse it", async () => {
  const result = await guard(["deno-counts"], "FAILED | 9 passed | 2 failed (1s)\n");
  assert.equal(result.code, 0);
  assert.equal(result.stdout, "9 2 0");
});

Deno.test("deno-counts: a log without a summary line (a crash, a type error) is refused", async () => {
  for (
    const log of [
      "",
      "error: TS2322 [ERROR]: Type 'string' is not assignable to type 'number'.\n",
      "running 3 tests from ./tests/a_test.ts\na ... ok (2ms)\n",
    ]
  ) {
    const result = await guard(["deno-counts"], log);
    assert.equal(result.code, 1, log);
    assert.equal(result.stdout, "");
    assert.match(result.stderr, /no summary line/);
  }
});

Deno.test("unexplained-ignores: an ignored or skipped test must give its reason", async () => {
  const explained = "slow thing (ignored: needs a GPU) ... ignored (0ms)\n" +
    `other (ignored: known bug, see issue 9) ... ${ESC}[33mignored${ESC}[0m (0ms)\n` +
    "ok | 1 passed | 0 failed | 2 ignored (1s)\n";
  assert.equal((await guard(["unexplained-ignores"], explained)).code, 0);

  const bare = await guard(
    ["unexplained-ignores"],
    "fine ... ok (1ms)\nflaky one ... ignored (0ms)\nlater ... skipped\n",
  );
  assert.equal(bare.code, 1);
  assert.match(bare.stderr, /flaky one/);
  assert.match(bare.stderr, /later/);
  assert.doesNotMatch(bare.stderr, /fine/);

  // "ignored" in a passing test's name is not an ignored test.
  const named = "the ignored frames are dropped ... ok (1ms)\n";
  assert.equal((await guard(["unexplained-ignores"], named)).code, 0);
});

Deno.test("deno-counts and unexplained-ignores read a --parallel log (lines start with the file)", async () => {
  // As `deno test --parallel` prints them: "<file> => <name> ... <outcome> (<time>)", coloured.
  const line = (file: string, name: string, outcome: string) =>
    `${ESC}[0m${ESC}[38;5;245m./tests/${file} => ${ESC}[0m${name} ... ${ESC}[0m${outcome}${ESC}[0m ` +
    `${ESC}[0m${ESC}[38;5;245m(0ms)${ESC}[0m`;
  const ignored = `${ESC}[33mignored`;
  const summary = (failed: number) =>
    `${ESC}[0m${ESC}[${failed ? "31mFAILED" : "32mok"}${ESC}[0m | ${20 - failed} passed ` +
    `(2 steps) | ${failed} failed | 2 ignored ${ESC}[0m${ESC}[38;5;245m(14s)${ESC}[0m`;
  const explained = [
    line("a_test.ts", "first", `${ESC}[32mok`),
    line("nginx_test.ts", "behind nginx (ignored: needs nginx)", ignored),
    line("b_test.ts", "later (ignored: needs a GPU)", ignored),
    line("a_test.ts", "second", `${ESC}[31mFAILED`),
    "",
    summary(1),
  ].join("\n");
  assert.equal((await guard(["deno-counts"], explained)).stdout, "19 1 2");
  assert.equal((await guard(["unexplained-ignores"], explained)).code, 0);

  const bare = [line("b_test.ts", "flaky one", ignored), summary(0)].join("\n");
  const refused = await guard(["unexplained-ignores"], bare);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /b_test\.ts => flaky one/);
});

/** A fake test:npm log: one section per suite, then the summary and the closing line. */
function npmLog(
  suites: [name: string, counts: string | undefined, ok: boolean][],
  closing = "npm package, all runtimes (3.1 min): 120 passed, 0 failed",
): string {
  const lines: string[] = ["=== npm pack", "=== npm pack: ok (2.0 s)"];
  for (const [name, counts, ok] of suites) {
    lines.push("", `=== ${name}`, `  [${name}] ok 1 - something`);
    if (counts) lines.push(`  [${name}] ${counts}`);
    lines.push(`=== ${name}: ${ok ? "ok" : "FAILED"} (1.5 s)`);
  }
  lines.push("", "=== summary", closing);
  return lines.join("\n");
}

const SUITES: [string, string | undefined, boolean][] = [
  ["Node v20.19.0 ESM (ws)", "14 passed, 0 failed", true],
  ["Node v20.19.0 CJS (ws)", "6 passed, 0 failed", true],
  ["Node v22.1.0 ESM", "14 passed, 0 failed", true],
  ["Node v22.1.0 CJS", "6 passed, 0 failed", true],
  ["Bun 1.2.0", "14 passed, 0 failed", true],
  ["stub server, Node v20.19.0", "10 passed, 0 failed", true],
  ["stub server, Node v22.1.0", "10 passed, 0 failed", true],
  ["stub server, Bun 1.2.0", "10 passed, 0 failed", true],
  ["Chromium", "# 14 passed, 0 failed", true],
];

Deno.test("npm-counts: a good log gives the closing line's counts", async () => {
  assert.deepEqual(await guard(["npm-counts"], npmLog(SUITES)), {
    code: 0,
    stdout: "120 0",
    stderr: "",
  });
});

Deno.test("npm-counts: refuses a missing closing line", async () => {
  const log = npmLog(SUITES).split("\n").slice(0, -1).join("\n");
  const result = await guard(["npm-counts"], log);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /no closing line/);
});

Deno.test("npm-counts: refuses a suite that printed no counts, though it exited 0", async () => {
  const suites = SUITES.map((s): typeof s => s[0] === "Bun 1.2.0" ? [s[0], undefined, true] : s);
  const result = await guard(["npm-counts"], npmLog(suites));
  assert.equal(result.code, 1);
  assert.match(result.stderr, /Bun 1\.2\.0: no "N passed, N failed" line/);
});

Deno.test("npm-counts: refuses a suite with failures, though it says ok", async () => {
  const suites = SUITES.map((s): typeof s =>
    s[0] === "Chromium" ? [s[0], "13 passed, 1 failed", true] : s
  );
  const result = await guard(["npm-counts"], npmLog(suites));
  assert.equal(result.code, 1);
  assert.match(result.stderr, /Chromium: 13 passed, 1 failed/);
});

Deno.test("npm-counts: refuses a run where runtime suites are missing", async () => {
  const result = await guard(["npm-counts"], npmLog(SUITES.slice(0, 5)));
  assert.equal(result.code, 1);
  assert.match(result.stderr, /only 5 runtime suites ran, want 9/);
});

Deno.test("floor: a count below the floor in the file is refused", async () => {
  const file = new URL("../.ci/test-floor", import.meta.url).pathname;
  const floors = Object.fromEntries(
    Deno.readTextFileSync(file).split("\n").filter((l) => /^\w+ \d+$/.test(l)).map((l) => {
      const [name, n] = l.split(" ");
      return [name, Number(n)];
    }),
  );
  assert.deepEqual(Object.keys(floors).sort(), ["deno", "npm", "total"]);
  assert.equal((await guard(["floor", "deno", String(floors.deno), file])).code, 0);
  const below = await guard(["floor", "deno", String(floors.deno - 1), file]);
  assert.equal(below.code, 1);
  assert.match(below.stderr, /below the floor/);
  const unknown = await guard(["floor", "nothing", "5", file]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no floor for nothing/);
});

/** Runs the whole .ci/run with the fake `npx` of tests/fixtures/fake-bin and these fake logs. */
async function ciRun(env: Record<string, string>): Promise<{ code: number; output: string }> {
  const fakeBin = new URL("./fixtures/fake-bin", import.meta.url).pathname;
  const { code, stdout } = await new Deno.Command("bash", {
    // One stream, in order, as CI's log has it.
    args: ["-c", 'exec bash "$0" 2>&1', new URL("../.ci/run", import.meta.url).pathname],
    env: { ...env, PATH: `${fakeBin}:${Deno.env.get("PATH")}` },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code, output: new TextDecoder().decode(stdout) };
}

/** The counts the fake suites report when all is well: at the floors in .ci/test-floor. */
function greenLogs(): Record<string, string> {
  const file = new URL("../.ci/test-floor", import.meta.url).pathname;
  const floor = (name: string) =>
    Number(
      /^(\w+) (\d+)$/m.exec(
        Deno.readTextFileSync(file).split("\n").filter((l) => l.startsWith(`${name} `))[0],
      )![2],
    );
  const npmEach = Math.ceil(floor("npm") / SUITES.length);
  const suites = SUITES.map(([name]): [string, string, boolean] => [
    name,
    `${npmEach} passed, 0 failed`,
    true,
  ]);
  const npmTotal = npmEach * SUITES.length;
  return {
    FAKE_TEST_LOG: `a ... ok (1ms)\nok | ${floor("deno")} passed | 0 failed (1s)`,
    FAKE_NPM_LOG: npmLog(
      suites,
      `npm package, all runtimes (1.0 min): ${npmTotal} passed, 0 failed`,
    ),
    TOTAL: String(floor("deno") + npmTotal),
  };
}

/** The run's last non-empty line. */
const closing = (output: string) => output.trim().split("\n").at(-1);

Deno.test({
  name: ".ci/run end to end: green suites at the floors pass with the closing total",
  fn: async () => {
    const { TOTAL, ...logs } = greenLogs();
    const result = await ciRun(logs);
    assert.equal(result.code, 0, result.output);
    assert.equal(closing(result.output), `total: ${TOTAL} passed, 0 failed`);
    assert.doesNotMatch(result.output, /CI refused/);
  },
});

Deno.test({
  name: ".ci/run end to end: each green-but-broken case fails, still printing the closing line",
  fn: async () => {
    const { TOTAL: _, ...green } = greenLogs();
    const cases: [what: string, env: Record<string, string>, refusal: RegExp][] = [
      [
        "a failed count behind exit code 0",
        { FAKE_TEST_LOG: green.FAKE_TEST_LOG.replace("| 0 failed", "| 2 failed") },
        /total: \d+ passed, [1-9]\d* failed/,
      ],
      ["no Deno summary line", { FAKE_TEST_LOG: "a ... ok (1ms)" }, /printed no summary line/],
      [
        "an ignored test without a reason",
        { FAKE_TEST_LOG: `b ... ignored (0ms)\n${green.FAKE_TEST_LOG}` },
        /ignored without a reason/,
      ],
      [
        "the npm suites printing no counts",
        { FAKE_NPM_LOG: "=== summary\nall good" },
        /npm suites' counts are missing/,
      ],
      [
        "a total below the floor",
        { FAKE_TEST_LOG: "ok | 3 passed | 0 failed (1s)" },
        /below the floor/,
      ],
      ["a suite that exits non-zero", { FAKE_NPM_EXIT: "1" }, /test:npm exited with 1/],
      ["a format check that fails before any suite", { FAKE_FMT_EXIT: "1" }, /^/],
    ];
    for (const [what, env, refusal] of cases) {
      const result = await ciRun({ ...green, ...env });
      assert.notEqual(result.code, 0, `${what}: the run must fail\n${result.output}`);
      assert.match(result.output, refusal, what);
      assert.match(closing(result.output)!, /^total: \d+ passed, [1-9]\d* failed$/, what);
    }
  },
});

Deno.test("npm-counts: a conformance run on a runtime counts by its own summary, skips and all", async () => {
  const withConformance = (summary: string): [string, string | undefined, boolean][] => [
    ...SUITES,
    ["realm-conformance --api-key, Bun 1.2.0", `19 checks: ${summary}`, true],
  ];
  const good = await guard(
    ["npm-counts"],
    npmLog(withConformance("19 passed, 0 failed, 0 skipped (357 ms)")),
  );
  assert.deepEqual(good, { code: 0, stdout: "120 0", stderr: "" });
  const bad = await guard(
    ["npm-counts"],
    npmLog(withConformance("18 passed, 1 failed, 0 skipped (357 ms)")),
  );
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /realm-conformance --api-key, Bun 1\.2\.0: 18 passed, 1 failed/);
});
