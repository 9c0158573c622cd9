/**
 * Builds the npm package into `npm/`: ES modules, CommonJS, `.d.ts`
 * declarations and source maps for each, `package.json`, README, CHANGELOG,
 * both licenses (a missing one fails the build) and the OpenTelemetry recipe
 * (`examples/opentelemetry.ts`, to copy). The version comes from `deno.json`.
 *
 * The sources are copied to `npm/ts` with their `.ts` import specifiers
 * rewritten to `.js`, then compiled twice with the TypeScript compiler API:
 * once as ES modules (`npm/esm`), once as CommonJS (`npm/cjs`, marked by its
 * own `{"type":"commonjs"}` package.json). Both builds' source maps and
 * declaration maps point at that one shipped copy of the sources (rather
 * than inlining them twice), so debuggers and "go to definition" land in
 * the TypeScript. Build-only type stubs live in a temporary directory.
 *
 * Beside each Deno entry it generates a Node entry that registers `ws`: as
 * the client's WebSocket on Node versions without a global one (`node.js`),
 * and for the stub server's Node adapter (`testing_node.js`). The package's
 * `exports` pick them with the `node` condition only, so a browser bundle
 * never contains `ws`.
 *
 * The `./ai-sdk` entry imports `@ai-sdk/provider`, the package's one optional peer dependency:
 * it is compiled against the declarations of the version pinned in `deno.json`.
 *
 * The `./conformance` entry is ES modules only (it runs itself under Deno through
 * `import.meta.main`, which CommonJS cannot hold); its `realm-conformance` bin runs the command
 * on Node and Bun.
 *
 * Usage: `deno task build:npm`
 *
 * @module
 */

// Not in deno.json's imports: every `deno task` (the demo's too) would fetch what is listed
// there. Pinned by scripts/deno.lock, which only the tasks that run scripts use.
// deno-lint-ignore no-import-prefix
import ts from "npm:typescript@5.9.3";
// Loaded so that Deno has the package whose declarations the ./ai-sdk entry compiles against.
// deno-lint-ignore no-import-prefix
import "npm:@ai-sdk/provider@4.0.38";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Files shipped beside the code; the build fails when one is missing. */
const DOCUMENTS = ["README.md", "CHANGELOG.md", "LICENSE-MIT", "LICENSE-APACHE"] as const;

/**
 * Recipes shipped as they are, for a user to copy into an app (no entry imports them): the
 * OpenTelemetry one runs on Node, Deno and Bun alike.
 */
const RECIPES = ["examples/opentelemetry.ts"] as const;

/** The one runtime dependency, used on Node < 22 only. */
const WS_VERSION = "^8.18.0";
/** Oldest Node the package is tested on (it needs the global `CustomEvent`). */
const NODE_ENGINE = ">=20";
/**
 * Packages an entry may import that the package does not install: the AI SDK's specification,
 * for `./ai-sdk` only. Versions 3 and 4 both define `LanguageModelV3`, the one it implements.
 */
const PEER_DEPENDENCIES: Record<string, string> = { "@ai-sdk/provider": "^3.0.0 || ^4.0.0" };

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = join(root, "npm");

interface DenoJson {
  name: string;
  version: string;
  license: string;
  exports: Record<string, string>;
}

/**
 * The package's entries: each Deno entry, and the entry Node (and Bun, which matches the `node`
 * condition too) gets instead, generated here because it imports `ws`. A literal `import("ws")`
 * in the sources would make `deno check` and JSR resolve an npm package.
 */
const ENTRIES = [
  { subpath: ".", deno: "./mod.ts", name: "mod", node: "node" },
  { subpath: "./testing", deno: "./testing.ts", name: "testing", node: "testing_node" },
  // Node 22+ only, like the AI SDK: it needs no ws, so Node gets the plain entry.
  { subpath: "./ai-sdk", deno: "./ai_sdk.ts", name: "ai_sdk", node: "ai_sdk" },
  {
    subpath: "./conformance",
    deno: "./conformance.ts",
    name: "conformance",
    node: "conformance_node",
    esmOnly: true,
  },
] as const;

/** The package's command: the conformance check of a running server. */
const BIN = { command: "realm-conformance", name: "conformance_bin" } as const;

/** Entries built as ES modules only, with their Node entries (and the command's file). */
const ESM_ONLY: readonly string[] = ENTRIES.flatMap((e) =>
  "esmOnly" in e && e.esmOnly ? [e.deno, `${e.node}.ts`, `${BIN.name}.ts`] : []
);

/** The sources of the generated Node entries, by name. */
const NODE_ENTRIES: Record<string, string> = {
  node: `/**
 * The package's entry on Node: the client, with \`ws\` registered as the
 * WebSocket for Node versions that have no global one (Node 20 and 21).
 * \`ws\` is loaded on first connect, and only there.
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
`,
  testing_node: `/**
 * The \`./testing\` entry on Node and Bun: the stub server, with \`ws\`
 * registered for its Node adapter (loaded when a server starts on Node).
 *
 * @module
 */
import { setWsLoader } from "./src/stub/node.js";

setWsLoader(() => import("ws"));

export * from "./testing.js";
`,
  conformance_node: `/**
 * The \`./conformance\` entry on Node and Bun: the conformance check, with \`ws\` registered
 * as the WebSocket (of the client and of the bare sockets) for Node versions without a global one.
 *
 * @module
 */
import { setWebSocketFallback } from "./src/websocket.js";
import type { WebSocketConstructor } from "./src/types.js";

setWebSocketFallback(async () => {
  const ws = await import("ws");
  return (ws.WebSocket ?? ws.default) as unknown as WebSocketConstructor;
});

export * from "./conformance.js";
`,
  [BIN.name]: `#!/usr/bin/env node
/**
 * The \`${BIN.command}\` command: \`${BIN.command} <url> [options]\`, \`--help\` for the options.
 *
 * @module
 */
import { conformanceMain } from "./conformance_node.js";

declare const process: {
  argv: string[];
  stdout: { write(text: string, done: () => void): boolean };
  exit(status: number): never;
};

const status = await conformanceMain(process.argv.slice(2));
// Exit once the output is written: a socket a misbehaving server holds open must not keep the
// command running.
process.stdout.write("", () => process.exit(status));
`,
};

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
  const bare = info.importedFiles.filter((ref) =>
    !/^\.\.?\//.test(ref.fileName) && !(ref.fileName in PEER_DEPENDENCIES)
  );
  if (bare.length > 0) {
    throw new Error(
      `bare import specifier(s) ${bare.map((ref) => `"${ref.fileName}"`).join(", ")}: ` +
        "the package has no dependencies besides ws (which only the generated Node entry loads) " +
        "and the optional peer dependencies in PEER_DEPENDENCIES",
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
  declarationMap: true,
  skipLibCheck: true,
  isolatedModules: true,
  useDefineForClassFields: true,
  newLine: ts.NewLineKind.LineFeed,
};

/**
 * Files written against the `Deno` namespace, which the compiler here has no types for. `deno
 * check` type-checks them; here only their syntax is checked, and the build makes sure no Deno
 * type leaks into the declarations.
 */
const DENO_TYPED = new Set(["src/stub/deno.ts"]);

/**
 * Where the compiler finds each peer dependency's declarations: in Deno's npm cache, beside the
 * module that `deno.json` maps its name to.
 */
function peerDeclarations(): Record<string, string[]> {
  return Object.fromEntries(
    Object.keys(PEER_DEPENDENCIES).map((name) => {
      const code = fileURLToPath(import.meta.resolve(name));
      return [name, [code.replace(/\.m?js$/, ".d.ts")]];
    }),
  );
}

/** Compiles `rootNames` into `outDir`; throws with the diagnostics on any error. */
function compile(
  srcDir: string,
  rootNames: string[],
  ambient: string,
  outDir: string,
  options: ts.CompilerOptions,
): void {
  const program = ts.createProgram({
    rootNames: [...rootNames.map((name) => join(srcDir, name)), ambient],
    options: { ...COMMON_OPTIONS, ...options, rootDir: srcDir, outDir },
  });
  const denoTyped = (diagnostic: ts.Diagnostic) =>
    diagnostic.file !== undefined &&
    DENO_TYPED.has(relative(srcDir, diagnostic.file.fileName).replaceAll("\\", "/")) &&
    diagnostic.category === ts.DiagnosticCategory.Error &&
    !program.getSyntacticDiagnostics(diagnostic.file).includes(
      diagnostic as ts.DiagnosticWithLocation,
    );
  const diagnostics = ts.getPreEmitDiagnostics(program).filter((d) => !denoTyped(d));
  const result = diagnostics.length > 0 ? undefined : program.emit();
  diagnostics.push(...result?.diagnostics ?? []);
  if (diagnostics.length > 0 || result?.emitSkipped) {
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

/** Fails when a declaration mentions a runtime's own types (`Deno.…`, `Bun.…`). */
async function checkDeclarations(dir: string): Promise<void> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) await checkDeclarations(path);
    else if (entry.name.endsWith(".d.ts")) {
      // Comments may name them; code may not.
      const text = (await Deno.readTextFile(path)).replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
      const leak = text.match(/\b(Deno|Bun)\.[A-Za-z]/);
      if (leak) throw new Error(`${relative(outDir, path)} mentions ${leak[0]}…: not portable`);
    }
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
  const exports: Record<string, unknown> = {};
  const typesVersions: Record<string, string[]> = {};
  for (const entry of ENTRIES) {
    exports[entry.subpath] = {
      // Browsers have a global WebSocket and no use for ws: the plain entry.
      browser: { types: `./esm/${entry.name}.d.ts`, default: `./esm/${entry.name}.js` },
      // Node (and Bun): the same exports, with ws registered where it may be needed.
      node: dual(entry.node),
      ...dual(entry.name),
    };
    if ("esmOnly" in entry && entry.esmOnly) {
      exports[entry.subpath] = {
        node: { import: { types: `./esm/${entry.node}.d.ts`, default: `./esm/${entry.node}.js` } },
        import: { types: `./esm/${entry.name}.d.ts`, default: `./esm/${entry.name}.js` },
      };
    }
    if (entry.subpath !== ".") {
      // For TypeScript's old `node10` resolution, which ignores `exports`.
      typesVersions[entry.subpath.slice(2)] = [
        `./${"esmOnly" in entry && entry.esmOnly ? "esm" : "cjs"}/${entry.name}.d.ts`,
      ];
    }
  }
  exports["./package.json"] = "./package.json";
  const nodeFiles = ENTRIES.filter((e) => e.node !== e.name)
    .flatMap((e) => [`./esm/${e.node}.js`, `./cjs/${e.node}.js`])
    .filter((file) => !ESM_ONLY.some((name) => file === `./cjs/${name.replace(/\.ts$/, ".js")}`));
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
    bin: { [BIN.command]: `./esm/${BIN.name}.js` },
    main: "./cjs/node.js",
    module: "./esm/mod.js",
    types: "./cjs/node.d.ts",
    exports,
    typesVersions: { "*": typesVersions },
    // npm adds a README by itself but a license only when named exactly LICENSE: list them all.
    files: ["esm/", "cjs/", "ts/", ...DOCUMENTS, ...RECIPES],
    // The Node entries register ws when they are evaluated: a bundler must keep them.
    sideEffects: nodeFiles,
    engines: { node: NODE_ENGINE },
    dependencies: { ws: WS_VERSION },
    peerDependencies: PEER_DEPENDENCIES,
    peerDependenciesMeta: Object.fromEntries(
      Object.keys(PEER_DEPENDENCIES).map((name) => [name, { optional: true }]),
    ),
  };
}

async function main(): Promise<void> {
  const deno = JSON.parse(await Deno.readTextFile(join(root, "deno.json"))) as DenoJson;
  const expected = Object.fromEntries(ENTRIES.map((e) => [e.subpath, e.deno]));
  if (JSON.stringify(deno.exports) !== JSON.stringify(expected)) {
    throw new Error(
      `deno.json's exports ${JSON.stringify(deno.exports)} differ from ENTRIES in ` +
        "scripts/build_npm.ts: add the new entry there (and its Node entry, if it needs ws).",
    );
  }
  const entries = ENTRIES.map((e) => e.deno);
  const temp = await Deno.makeTempDir({ prefix: "realm-npm-build-" });
  try {
    await Deno.remove(outDir, { recursive: true }).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
    const srcDir = join(outDir, "ts");
    const sources = await copySources(entries, srcDir);
    for (const [name, source] of Object.entries(NODE_ENTRIES)) {
      await Deno.writeTextFile(join(srcDir, `${name}.ts`), source);
    }
    const ambient = join(temp, "ambient.d.ts");
    await Deno.writeTextFile(ambient, AMBIENT);
    const rootNames = [...entries, ...Object.keys(NODE_ENTRIES).map((name) => `${name}.ts`)];
    const paths = peerDeclarations();

    compile(srcDir, rootNames, ambient, join(outDir, "esm"), {
      module: ts.ModuleKind.ES2022,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      paths,
    });
    const cjsRootNames = rootNames.filter((name) =>
      !ESM_ONLY.includes(name) && !ESM_ONLY.includes(`./${name}`)
    );
    compile(srcDir, cjsRootNames, ambient, join(outDir, "cjs"), {
      module: ts.ModuleKind.CommonJS,
      moduleResolution: ts.ModuleResolutionKind.Node10,
      esModuleInterop: true,
      paths,
    });
    await checkDeclarations(outDir);
    await Deno.writeTextFile(
      join(outDir, "cjs", "package.json"),
      JSON.stringify({ type: "commonjs" }, null, 2) + "\n",
    );
    await Deno.writeTextFile(
      join(outDir, "package.json"),
      JSON.stringify(packageJson(deno), null, 2) + "\n",
    );
    for (const name of [...DOCUMENTS, ...RECIPES]) {
      await Deno.mkdir(dirname(join(outDir, name)), { recursive: true });
      await Deno.copyFile(join(root, name), join(outDir, name));
    }
    console.log(
      `Built ${deno.name}@${deno.version} into npm/ (esm + cjs) from ${sources.length} sources.`,
    );
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
}

if (import.meta.main) await main();
