/**
 * The first `deno task demo` on a fresh machine downloads only what the demo runs. `deno task`
 * fetches every npm package that deno.json maps or that a lockfile it reads records, whichever
 * task runs, so the build scripts' tools (esbuild, TypeScript) stay out of both: the scripts name
 * them inline and pin them with their own lockfile, `scripts/deno.lock`.
 */
import assert from "node:assert/strict";

const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));

Deno.test("deno.json maps no npm package and reads no lockfile", () => {
  const npm = Object.entries(config.imports as Record<string, string>)
    .filter(([, target]) => target.startsWith("npm:"));
  assert.deepEqual(npm, []);
  assert.equal(config.lock, false);
});

Deno.test("the tasks that run the scripts pin their tools with scripts/deno.lock", async () => {
  const lock = JSON.parse(
    await Deno.readTextFile(new URL("../scripts/deno.lock", import.meta.url)),
  );
  assert.deepEqual(Object.keys(lock.specifiers).sort(), [
    "npm:esbuild@0.28.2",
    "npm:typescript@5.9.3",
  ]);
  for (const task of ["check", "build:npm", "size"]) {
    assert.match(config.tasks[task], /--lock=scripts\/deno\.lock /, task);
  }
});
