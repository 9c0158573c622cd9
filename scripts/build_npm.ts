/**
 * Builds the npm package into `npm/`: ES modules, CommonJS, `.d.ts`
 * declarations and source maps for each, `package.json`, README, CHANGELOG
 * and both licenses. The version comes from `deno.json`.
 *
 * The sources are copied to a temporary directory with their `.ts` import
 * specifiers rewritten to `.js`, then compiled twice with the TypeScript
 * compiler API: once as ES modules (`npm/esm`), once as CommonJS (`npm/cjs`,
 * marked by its own `{"type":"commonjs"}` package.json).
 *
 * On top of the Deno entries it generates a Node entry (`node.js`) that
 * registers `ws` as the WebSocket for Node versions without a global one;
 * the package's `exports` pick it with the `node` condition only, so a browser
 * bundle never contains `ws`.
 *
 * Usage: `deno task build:npm`
 *
 * @module
 */

import ts from "typescript";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The one runtime dependency, used on Node < 22 only. */
const WS_VERSION = "^8.18.0";
/** Oldest Node the package is tested on (it needs the global `CustomEvent`). */
const NODE_ENGINE = ">=20";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = join(root, "npm");

interface DenoJson {
  name: string;
  version: string;
  license: string;
  exports: Record<string, string>;
}

/** The Node entry: the client, plus `ws` as the fallback WebSocket. */
const NODE_ENTRY = `/**
 * The package's entry on Node: the client, with \`ws\` registered as the
 * WebSocket for Node versions that have no global one (Node 20 and 21).
 * \`ws\` is loaded on first connect and only there.
 *
 * @module
 */
import { setWebSocketFallback } from "./src/websocket.js";
import type { WebSocketConstructor } from "./src/types.js";

setWebSocketFallback(async () => {
  const ws = await import("ws");
  return (ws.WebSocket ?? ws.default) as unknown as WebSocketConstructor;
});

export * from "./mod.js";
`;

/** Types the compiler needs that the shipped declarations never mention. */
const AMBIENT = `declare module "ws" {
  export const WebSocket: unknown;
  const ws: unknown;
  export default ws;
}
`;

/** `.ts` → `.js` for every relative import and export in `source`. */
function rewriteSpecifiers(source: string): { text: string; imports: string[] } {
  const info = ts.preProcessFile(source, true, true);
  const relativeTs = info.importedFiles.filter((ref) =>
    /^\.\.?\//.test(ref.fileName) && ref.fileName.endsWith(".ts")
  );
  let text = source;
  // From the end, so earlier positions stay valid. `pos` is the opening quote's.
  for (const ref of [...relativeTs].sort((a, b) => b.pos - a.pos)) {
    const start = ref.pos + 1;
    const end = start + ref.fileName.length;
    if (text.slice(start, end) !== ref.fileName) throw new Error(`cannot rewrite ${ref.fileName}`);
    text = text.slice(0, start) + ref.fileName.replace(/\.ts$/, ".js") + text.slice(end);
  }
  const bare = info.importedFiles.filter((ref) => !/^\.\.?\//.test(ref.fileName));
  if (bare.length > 0) {
    throw new Error(
      `bare import specifier(s) ${bare.map((ref) => `"${ref.fileName}"`).join(", ")}: ` +
        "the package has no dependencies besides ws (which only the generated Node entry loads)",
    );
  }
  return { text, imports: relativeTs.map((ref) => ref.fileName) };
}

/** Copies the entries and everything they import (statically or dynamically) to `dest`. */
async function copySources(entries: string[], dest: string): Promise<string[]> {
  const seen = new Set<string>();
  const queue = entries.map((entry) => resolve(root, entry));
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const rel = relative(root, file);
    if (rel.startsWith("..")) throw new Error(`${rel}: imported from outside the project`);
    const { text, imports } = rewriteSpecifiers(await Deno.readTextFile(file));
    await Deno.mkdir(dirname(join(dest, rel)), { recursive: true });
    await Deno.writeTextFile(join(dest, rel), text);
    for (const spec of imports) queue.push(resolve(dirname(file), spec));
  }
  return [...seen].map((file) => relative(root, file)).sort();
}

const COMMON_OPTIONS: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  lib: ["lib.esnext.d.ts", "lib.dom.d.ts", "lib.dom.iterable.d.ts", "lib.dom.asynciterable.d.ts"],
  types: [],
  strict: true,
  declaration: true,
  sourceMap: true,
  inlineSources: true,
  skipLibCheck: true,
  isolatedModules: true,
  useDefineForClassFields: true,
  newLine: ts.NewLineKind.LineFeed,
  noEmitOnError: true,
};

/** Compiles `rootNames` into `outDir`; throws with the diagnostics on any error. */
function compile(
  srcDir: string,
  rootNames: string[],
  outDir: string,
  options: ts.CompilerOptions,
): void {
  const program = ts.createProgram({
    rootNames: [...rootNames.map((name) => join(srcDir, name)), join(srcDir, "ambient.d.ts")],
    options: { ...COMMON_OPTIONS, ...options, rootDir: srcDir, outDir },
  });
  const result = program.emit();
  const diagnostics = [...ts.getPreEmitDiagnostics(program), ...result.diagnostics];
  if (diagnostics.length > 0 || result.emitSkipped) {
    const host: ts.FormatDiagnosticsHost = {
      getCanonicalFileName: (name) => name,
      getCurrentDirectory: () => srcDir,
      getNewLine: () => "\n",
    };
    throw new Error(
      `TypeScript (${options.module === ts.ModuleKind.CommonJS ? "CommonJS" : "ESM"}):\n` +
        ts.formatDiagnostics(diagnostics, host),
    );
  }
}

/** A conditional export: declarations first, then the code, for `import` and `require`. */
function dual(name: string): Record<string, { types: string; default: string }> {
  return {
    import: { types: `./esm/${name}.d.ts`, default: `./esm/${name}.js` },
    require: { types: `./cjs/${name}.d.ts`, default: `./cjs/${name}.js` },
  };
}

function packageJson(deno: DenoJson): Record<string, unknown> {
  const entryName = (path: string) => path.replace(/^\.\//, "").replace(/\.ts$/, "");
  const main = entryName(deno.exports["."]);
  const subpaths: Record<string, unknown> = {};
  const typesVersions: Record<string, string[]> = {};
  for (const [subpath, file] of Object.entries(deno.exports)) {
    if (subpath === ".") continue;
    subpaths[subpath] = dual(entryName(file));
    // For TypeScript's old `node10` resolution, which ignores `exports`.
    typesVersions[subpath.replace(/^\.\//, "")] = [`./cjs/${entryName(file)}.d.ts`];
  }
  return {
    name: deno.name,
    version: deno.version,
    description: "WebSocket client for the Realm multi-tenant LLM inference server: " +
      "generate, stream tokens, run pipelines. Runs on Node, Bun, Deno and browsers.",
    license: deno.license,
    repository: { type: "git", url: "git+https://github.com/realm-ai/ws-client.git" },
    homepage: "https://github.com/realm-ai/ws-client#readme",
    bugs: { url: "https://github.com/realm-ai/ws-client/issues" },
    keywords: ["realm", "llm", "inference", "websocket", "client", "streaming", "ai", "sdk"],
    type: "module",
    main: `./cjs/node.js`,
    module: `./esm/${main}.js`,
    types: `./cjs/node.d.ts`,
    exports: {
      ".": {
        // Browsers, Deno and Bun have a global WebSocket: the plain client.
        browser: { types: `./esm/${main}.d.ts`, default: `./esm/${main}.js` },
        // Node: the same client, with `ws` for versions without a global WebSocket.
        node: dual("node"),
        ...dual(main),
      },
      ...subpaths,
      "./package.json": "./package.json",
    },
    ...(Object.keys(typesVersions).length > 0 ? { typesVersions: { "*": typesVersions } } : {}),
    files: ["esm/", "cjs/"],
    // The Node entry registers the ws fallback when it is evaluated: a bundler must keep it.
    sideEffects: ["./esm/node.js", "./cjs/node.js"],
    engines: { node: NODE_ENGINE },
    dependencies: { ws: WS_VERSION },
  };
}

async function copyIfPresent(name: string): Promise<boolean> {
  try {
    await Deno.copyFile(join(root, name), join(outDir, name));
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function main(): Promise<void> {
  const deno = JSON.parse(await Deno.readTextFile(join(root, "deno.json"))) as DenoJson;
  const entries = Object.values(deno.exports);
  const temp = await Deno.makeTempDir({ prefix: "realm-npm-build-" });
  try {
    const sources = await copySources(entries, temp);
    await Deno.writeTextFile(join(temp, "node.ts"), NODE_ENTRY);
    await Deno.writeTextFile(join(temp, "ambient.d.ts"), AMBIENT);
    const rootNames = [...entries, "node.ts"];

    await Deno.remove(outDir, { recursive: true }).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
    compile(temp, rootNames, join(outDir, "esm"), {
      module: ts.ModuleKind.ES2022,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
    });
    compile(temp, rootNames, join(outDir, "cjs"), {
      module: ts.ModuleKind.CommonJS,
      moduleResolution: ts.ModuleResolutionKind.Node10,
      esModuleInterop: true,
    });
    await Deno.writeTextFile(
      join(outDir, "cjs", "package.json"),
      JSON.stringify({ type: "commonjs" }, null, 2) + "\n",
    );
    await Deno.writeTextFile(
      join(outDir, "package.json"),
      JSON.stringify(packageJson(deno), null, 2) + "\n",
    );
    const missing: string[] = [];
    for (const name of ["README.md", "CHANGELOG.md", "LICENSE-MIT", "LICENSE-APACHE"]) {
      if (!await copyIfPresent(name)) missing.push(name);
    }
    console.log(
      `Built ${deno.name}@${deno.version} into npm/ (esm + cjs) from ${sources.length} sources.`,
    );
    if (missing.length > 0) console.warn(`warning: not in the package: ${missing.join(", ")}`);
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
}

if (import.meta.main) await main();
