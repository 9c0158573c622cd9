/**
 * The first `deno task demo` on a fresh machine downloads only what the demo runs. `deno task`
 * fetches every npm package that deno.json maps or that the lockfile deno.json names records,
 * whichever task runs. So deno.json maps only the packages the demo runs (the AI SDK example's),
 * names no lockfile itself (`"lock": false`), and each task names its own: `deno.lock` for the
 * demo and the tests, `scripts/deno.lock` for the build scripts' tools (esbuild, TypeScript).
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);
const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));

/** The npm packages (name@version) in a module graph, from `deno info --json`. */
async function npmPackagesOf(entry: string): Promise<string[]> {
  const { stdout, success } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--lock=deno.lock", entry],
    cwd: root,
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.ok(success, `deno info ${entry}`);
  const info = JSON.parse(new TextDecoder().decode(stdout));
  return Object.keys(info.npmPackages ?? {}).map((id) => id.replace(/_.*$/, ""));
}

Deno.test("deno.json maps only npm packages the demo runs, and names no lockfile", async () => {
  const mapped = Object.values(config.imports as Record<string, string>)
    .filter((target) => target.startsWith("npm:"))
    .map((target) => target.slice("npm:".length));
  const demo = await npmPackagesOf("examples/demo.ts");
  for (const pkg of mapped) {
    assert.ok(demo.includes(pkg), `${pkg} is mapped but the demo never runs it`);
  }
  assert.equal(config.lock, false);
});

Deno.test("every task pins what it runs with its own lockfile", async () => {
  const benches = Object.keys(config.tasks).filter((task) => task.startsWith("bench"));
  assert.ok(benches.length > 1, "the bench tasks");
  for (const task of ["test", "demo", ...benches]) {
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
