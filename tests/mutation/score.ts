/**
 * Reads Stryker's JSON report(s) and prints the mutation score per file and in total, then every
 * surviving mutant as `file:line  Mutator  original → replacement`, the list docs/mutation.md
 * accounts for. Usage: `deno run --allow-read tests/mutation/score.ts [report.json ...]`
 * (default: reports/mutation/mutation.json).
 *
 * @module
 */

interface Mutant {
  id: string;
  mutatorName: string;
  replacement?: string;
  status: string;
  location: { start: { line: number; column: number }; end: { line: number; column: number } };
}

interface Report {
  files: Record<string, { source: string; mutants: Mutant[] }>;
}

/** Killed and timed-out mutants are detected; errors that keep a mutant from running are not counted. */
const DETECTED = new Set(["Killed", "Timeout"]);
const UNCOUNTED = new Set(["CompileError", "RuntimeError", "Ignored"]);

const paths = Deno.args.length > 0 ? Deno.args : ["reports/mutation/mutation.json"];
const files = new Map<string, { source: string; mutants: Mutant[] }>();
for (const path of paths) {
  const report = JSON.parse(Deno.readTextFileSync(path)) as Report;
  for (const [name, file] of Object.entries(report.files)) files.set(name, file);
}

let detected = 0;
let counted = 0;
const survivors: string[] = [];
const rows: string[] = [];
for (const [name, file] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
  const lines = file.source.split("\n");
  let fileDetected = 0;
  let fileCounted = 0;
  for (const mutant of file.mutants) {
    if (UNCOUNTED.has(mutant.status)) continue;
    fileCounted++;
    if (DETECTED.has(mutant.status)) {
      fileDetected++;
      continue;
    }
    const { start, end } = mutant.location;
    const original = start.line === end.line
      ? lines[start.line - 1].slice(start.column - 1, end.column - 1)
      : `${lines[start.line - 1].slice(start.column - 1)} …`;
    survivors.push(
      `${name}:${start.line}  ${mutant.mutatorName}  ${oneLine(original)} → ${
        oneLine(mutant.replacement ?? "")
      }  (${mutant.status})`,
    );
  }
  detected += fileDetected;
  counted += fileCounted;
  rows.push(
    `${name.padEnd(22)} ${percent(fileDetected, fileCounted)}  ${fileDetected}/${fileCounted}`,
  );
}

console.log(rows.join("\n"));
console.log(
  `${"all files".padEnd(22)} ${percent(detected, counted)}  ${detected}/${counted} detected`,
);
console.log(`\n${survivors.length} surviving mutants:`);
for (const line of survivors) console.log(`  ${line}`);

function percent(part: number, whole: number): string {
  return `${(whole === 0 ? 100 : (100 * part) / whole).toFixed(2).padStart(6)} %`;
}

function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > 70 ? `${flat.slice(0, 70)}…` : flat;
}
