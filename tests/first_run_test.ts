/**
 * The first `deno task demo` on a fresh machine downloads only what the demo runs. `deno task`
 * fetches every npm package that deno.json maps, and `deno run --lock=FILE` every one that FILE
 * records, whichever task runs. So deno.json maps only the packages the demo runs (the AI SDK
 * example's), names no lockfile itself (`"lock": false`), and each task names its own:
 * `examples/deno.lock` for the demo (exactly the demo's packages), `deno.lock` for the tests and
 * the benches (which add OpenTelemetry and esbuild), `scripts/deno.lock` for the build scripts'
 * tools (esbuild, TypeScript).
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);
const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));

/** The npm packages (name@version) in a module graph, from `deno info --json`. */
async function npmPackagesOf(entry: string, lock: string): Promise<string[]> {
  const { stdout, success } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", `--lock=${lock}`, "--frozen", entry],
    cwd: root,
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.ok(success, `deno info ${entry} with ${lock}, frozen`);
  const info = JSON.parse(new TextDecoder().decode(stdout));
  return Object.keys(info.npmPackages ?? {});
}

/** The npm packages (name@version) a lockfile records. */
async function lockedPackages(lock: string): Promise<string[]> {
  return Object.keys(JSON.parse(await Deno.readTextFile(new URL(lock, root))).npm ?? {});
}

const versionless = (ids: string[]) => ids.map((id) => id.replace(/_.*$/, ""));

Deno.test("deno.json maps only npm packages the demo runs, and names no lockfile", async () => {
  const mapped = Object.values(config.imports as Record<string, string>)
    .filter((target) => target.startsWith("npm:"))
    .map((target) => target.slice("npm:".length));
  const demo = versionless(await npmPackagesOf("examples/demo.ts", "examples/deno.lock"));
  for (const pkg of mapped) {
    assert.ok(demo.includes(pkg), `${pkg} is mapped but the demo never runs it`);
  }
  assert.equal(config.lock, false);
});

Deno.test("the demo's lockfile records exactly the npm packages the demo runs", async () => {
  assert.match(config.tasks.demo, /--lock=examples\/deno\.lock /);
  const runs = await npmPackagesOf("examples/demo.ts", "examples/deno.lock");
  assert.deepEqual((await lockedPackages("examples/deno.lock")).sort(), runs.sort());
  // What the other tasks bring is not in it.
  const demo = versionless(runs);
  for (const other of ["esbuild@0.28.2", "@opentelemetry/api@1.9.1", "typescript@5.9.3"]) {
    assert.ok(!demo.includes(other), other);
  }
});

Deno.test("every task pins what it runs with its own lockfile", async () => {
  const benches = Object.keys(config.tasks).filter((task) => task.startsWith("bench"));
  assert.ok(benches.length > 1, "the bench tasks");
  for (const task of ["test", ...benches]) {
    assert.match(config.tasks[task], /--lock=deno\.lock /, task);
  }
  for (const task of ["build:npm", "size"]) {
    assert.match(config.tasks[task], /--lock=scripts\/deno\.lock /, task);
  }
  const lock = JSON.parse(await Deno.readTextFile(new URL("scripts/deno.lock", root)));
  assert.deepEqual(Object.keys(lock.specifiers).sort(), [
    "npm:@ai-sdk/provider@4.0.38",
    "npm:esbuild@0.28.2",
    "npm:typescript@5.9.3",
  ]);
});

Deno.test("deno task test prints the test names and the summary, not a line per file checked", () => {
  // --quiet drops the type checker's `Check <file>` lines (and a test's own console output:
  // `deno test -A <file>` shows it when needed).
  assert.match(config.tasks.test, /^DENO_JOBS=\d+ deno test --quiet /);
});
