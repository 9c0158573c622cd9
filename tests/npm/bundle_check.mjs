/**
 * Bundles the installed package for the browser with esbuild, the way an app's bundler resolves
 * `@realm-ai/ws-client` (the `browser` condition of its `exports`), and for Node. The browser
 * bundle must contain no `ws` and not the Node entry; the Node bundle must use the Node entry.
 * Prints the browser bundle's minified and gzipped sizes.
 *
 * Usage: `node bundle_check.mjs` from a project that has the package and esbuild installed.
 *
 * @module
 */
import { createRequire } from "node:module";
import process from "node:process";
import { gzipSync } from "node:zlib";

// Required, not imported: `deno check tests/` walks this file, and the project's deno.json maps
// no esbuild (a mapping would make every `deno task` fetch it).
const { build } = createRequire(import.meta.url)("esbuild");

async function bundle(platform) {
  const result = await build({
    stdin: {
      contents: 'export * from "@realm-ai/ws-client";',
      resolveDir: process.cwd(),
      loader: "js",
    },
    bundle: true,
    minify: true,
    format: "esm",
    platform,
    target: "es2022",
    write: false,
    metafile: true,
    logLevel: "silent",
    // On Node, ws stays an import; only which entry is picked matters here.
    external: platform === "node" ? ["ws"] : [],
  });
  const [output] = Object.values(result.metafile.outputs);
  return {
    code: result.outputFiles[0].contents,
    inputs: Object.keys(result.metafile.inputs),
    // What the bundle still imports at run time (externals, dynamic imports it could not follow).
    imports: output.imports.map((i) => i.path),
  };
}

let passed = 0;
let failed = 0;
const check = (ok, name) => {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "ok" : "not ok"} ${passed + failed} - ${name}`);
};

const browser = await bundle("browser");
const packageFiles = browser.inputs.filter((path) => path.includes("@realm-ai/ws-client"));
check(packageFiles.length > 0, `browser bundle has the package (${packageFiles.length} files)`);
check(!browser.inputs.some((path) => /node_modules\/ws\//.test(path)), "browser bundle has no ws");
check(!browser.inputs.some((path) => path.endsWith("/node.js")), "browser bundle: no Node entry");
check(browser.imports.length === 0, `browser bundle imports nothing: ${browser.imports}`);
// The tracing channels are looked up at run time (process.getBuiltinModule), never imported.
check(
  !/(import|require)\s*\(\s*["'](node:)?diagnostics_channel/.test(
    new TextDecoder().decode(browser.code),
  ),
  "browser bundle neither imports nor requires diagnostics_channel",
);
const node = await bundle("node");
check(node.inputs.some((path) => /\/esm\/node\.js$/.test(path)), "Node bundle uses the Node entry");
check(node.imports.includes("ws"), "Node bundle loads ws (on first connect)");
const gzipped = gzipSync(browser.code, { level: 9 }).length;
console.log(
  `# browser bundle of the installed package: ${browser.code.length} B minified, ` +
    `${gzipped} B minified + gzip`,
);
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
