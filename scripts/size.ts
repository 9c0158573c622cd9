/**
 * Prints the size of the client entry as a browser app would ship it:
 * `mod.ts` bundled for the browser with esbuild, minified, then gzipped.
 * Also lists the largest inputs, to show where the bytes go.
 *
 * Usage: `deno task size` (add `--json` for one machine-readable line;
 * `--limit=<bytes>` exits with 1 when the gzipped size is over the limit).
 *
 * @module
 */

// Not in deno.json's imports: every `deno task` (the demo's too) would fetch what is listed
// there. Pinned by scripts/deno.lock, which only the tasks that run scripts use.
// deno-lint-ignore no-import-prefix
import * as esbuild from "npm:esbuild@0.28.2";
import { gzipSync } from "node:zlib";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Sizes in bytes of the minified bundle and of its gzip (level 9). */
export interface BundleSize {
  minified: number;
  gzipped: number;
  /** Minified bytes each input contributes, largest first. */
  inputs: { path: string; bytes: number }[];
}

/** Bundles `entry` for the browser, minified, and measures it. */
export async function measure(entry: string): Promise<BundleSize> {
  try {
    const result = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      minify: true,
      format: "esm",
      platform: "browser",
      target: "es2022",
      write: false,
      metafile: true,
      logLevel: "silent",
    });
    const output = result.outputFiles[0].contents;
    const meta = Object.values(result.metafile.outputs)[0];
    const inputs = Object.entries(meta.inputs)
      .map(([path, info]) => ({ path, bytes: info.bytesInOutput }))
      .sort((a, b) => b.bytes - a.bytes);
    return { minified: output.length, gzipped: gzipSync(output, { level: 9 }).length, inputs };
  } finally {
    await esbuild.stop();
  }
}

function kb(bytes: number): string {
  return `${(bytes / 1024).toFixed(2)} KiB`;
}

if (import.meta.main) {
  const size = await measure(join(root, "mod.ts"));
  const limitArg = Deno.args.find((arg) => arg.startsWith("--limit="));
  const limit = limitArg ? Number(limitArg.slice("--limit=".length)) : undefined;
  if (Deno.args.includes("--json")) {
    console.log(JSON.stringify({ minified: size.minified, gzipped: size.gzipped }));
  } else {
    console.log("mod.ts, bundled for the browser and minified (esbuild), largest inputs:");
    for (const input of size.inputs) {
      console.log(`  ${input.path.padEnd(24)} ${String(input.bytes).padStart(6)} B`);
    }
    console.log(`minified: ${size.minified} B (${kb(size.minified)})`);
    console.log(`minified + gzip: ${size.gzipped} B (${kb(size.gzipped)})`);
  }
  if (limit !== undefined && size.gzipped > limit) {
    console.error(`over the limit: ${size.gzipped} B > ${limit} B`);
    Deno.exit(1);
  }
}
