/**
 * Prints the size of the client entry as a browser app would ship it:
 * `mod.ts` bundled for the browser with esbuild, minified, then gzipped,
 * with each module's share, and checks it against the budget: exits with 1
 * when the gzipped size is over {@linkcode BUDGET} (CI runs it).
 *
 * Usage: `deno task size` (add `--json` for one machine-readable line;
 * `--limit=<bytes>` checks another limit instead of the budget).
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

/**
 * The client entry's budget, minified and gzipped: 16 KiB, the most it may ever take. It was 9.5
 * KiB before the lifecycle state machine, several servers and tracing (14.5 KiB); the connection
 * run in its own module, failover with its retry budget and `pipelining`, and the checks of unknown
 * keys and credentials in URLs took it to 16 KiB, paid for in part by shorter messages (see
 * docs/performance.md#size). A size is the same on every run, so unlike a time it can fail CI.
 */
export const BUDGET = 16 * 1024;

function kb(bytes: number): string {
  return `${(bytes / 1024).toFixed(2)} KiB`;
}

if (import.meta.main) {
  const size = await measure(join(root, "mod.ts"));
  const limitArg = Deno.args.find((arg) => arg.startsWith("--limit="));
  const limit = limitArg ? Number(limitArg.slice("--limit=".length)) : BUDGET;
  if (Deno.args.includes("--json")) {
    console.log(JSON.stringify({ minified: size.minified, gzipped: size.gzipped, limit }));
  } else {
    console.log("mod.ts, bundled for the browser and minified (esbuild), by module:");
    for (const input of size.inputs) {
      const share = (100 * input.bytes / size.minified).toFixed(1).padStart(5);
      // gzip compresses the whole bundle at once; a module's share of it is about its share here.
      const gzipShare = Math.round(size.gzipped * input.bytes / size.minified);
      console.log(
        `  ${input.path.padEnd(24)} ${String(input.bytes).padStart(6)} B ${share} %` +
          `  ≈ ${String(gzipShare).padStart(5)} B gzipped`,
      );
    }
    console.log(`minified: ${size.minified} B (${kb(size.minified)})`);
    console.log(`minified + gzip: ${size.gzipped} B (${kb(size.gzipped)})`);
    console.log(
      `budget: ${limit} B (${kb(limit)}), ${
        size.gzipped <= limit ? `${limit - size.gzipped} B to spare` : "EXCEEDED"
      }`,
    );
  }
  if (size.gzipped > limit) {
    console.error(
      `over the budget: ${size.gzipped} B > ${limit} B minified + gzip. Find the module that ` +
        "grew in the list above, and cut it back (or move the feature out of the client entry).",
    );
    Deno.exit(1);
  }
}
