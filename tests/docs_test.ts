/**
 * The README, CONTRIBUTING, the CHANGELOG and the pages of `docs/` stay usable: every relative link
 * leads to a file that exists (and to a heading that exists when it names one, by GitHub's anchors),
 * every page of `docs/` is reachable from the README or CONTRIBUTING, the README stays short enough
 * to read on JSR and npm, and the docs state today's facts without dates (history belongs in the
 * CHANGELOG).
 */
import assert from "node:assert/strict";
import { type RealmEventMap, STATE_EDGES } from "../mod.ts";

const root = new URL("../", import.meta.url);

/** The pages of `docs/`, as paths from the repository's root. */
const pages: string[] = [];
for await (const entry of Deno.readDir(new URL("docs/", root))) {
  if (entry.isFile && entry.name.endsWith(".md")) pages.push(`docs/${entry.name}`);
}
pages.sort();

/** Every document a reader browses, as paths from the repository's root. */
const documents = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md", ...pages];
/** The documents that describe the package as it is today: no dates, no "this release". */
const undated = documents.filter((path) => path !== "CHANGELOG.md");

const texts = new Map<string, string>();
for (const path of documents) texts.set(path, await Deno.readTextFile(new URL(path, root)));

/** The longest the README may be: it is the page JSR and npm show. */
const README_MAX_LINES = 450;
/** The widest a line of prose may be; tables and lines holding a URL are exempt. */
const MAX_LINE_WIDTH = 120;

/** The text with fenced code blocks blanked (newlines kept, so offsets still give line numbers). */
function withoutCodeBlocks(markdown: string): string {
  let fence: string | undefined;
  return markdown.split("\n").map((line) => {
    const marker = line.match(/^ {0,3}(`{3,}|~{3,})/)?.[1];
    if (fence === undefined) {
      if (marker === undefined) return line;
      fence = marker;
      return "";
    }
    if (marker !== undefined && marker[0] === fence[0] && marker.length >= fence.length) {
      fence = undefined;
    }
    return "";
  }).join("\n");
}

/**
 * The text with code blocks and inline code spans blanked: a link inside code is an example, not a
 * link. A span becomes as many `x`s, so offsets still give line numbers.
 */
function withoutCode(markdown: string): string {
  return withoutCodeBlocks(markdown).replace(
    /(?<!`)(`+)(?!`)([\s\S]*?[^`])\1(?!`)/g,
    (span) => span.replace(/[^\n]/g, "x"),
  );
}

function lineOf(text: string, offset: number): number {
  return text.slice(0, offset).split("\n").length;
}

/** GitHub's anchor for a heading's text: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1") // a link or image: its text
    .replace(/[`*~]/g, "")
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, "")
    .replace(/ /g, "-");
}

/**
 * The anchors a document's headings get on GitHub (a repeated heading gets `-1`, `-2`, …). Inline
 * code stays: a heading's code span is part of its anchor.
 */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const line of withoutCodeBlocks(markdown).split("\n")) {
    const text = line.match(/^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$/)?.[1];
    if (text === undefined) continue;
    const base = slug(text);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    result.add(count === 0 ? base : `${base}-${count}`);
  }
  for (const match of markdown.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) result.add(match[1]);
  return result;
}

interface Link {
  /** The document the link is in. */
  from: string;
  line: number;
  target: string;
}

/** The inline links and images, and the reference definitions, of a document. */
function links(path: string, markdown: string): Link[] {
  const text = withoutCode(markdown);
  const found: Link[] = [];
  for (const match of text.matchAll(/\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)/g)) {
    found.push({ from: path, line: lineOf(text, match.index), target: match[1] });
  }
  for (const match of text.matchAll(/^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/gm)) {
    found.push({ from: path, line: lineOf(text, match.index), target: match[1] });
  }
  return found;
}

/** A link's file (from the root) and anchor, or undefined for a link to another site. */
function resolve(link: Link): { path: string; anchor?: string } | undefined {
  if (/^[a-z][a-z0-9+.-]*:/i.test(link.target) || link.target.startsWith("//")) return undefined;
  const [file, anchor] = link.target.split("#", 2);
  const url = file === "" ? new URL(link.from, root) : new URL(file, new URL(link.from, root));
  const path = decodeURIComponent(url.pathname.slice(root.pathname.length)).replace(/\/$/, "");
  return { path, anchor: anchor === undefined ? undefined : decodeURIComponent(anchor) };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(new URL(path, root));
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

const allLinks = documents.flatMap((path) => links(path, texts.get(path)!));

Deno.test("anchors are GitHub's: code and punctuation dropped, a repeated heading numbered", () => {
  assert.equal(slug("`new RealmWebSocketClient(options)`"), "new-realmwebsocketclientoptions");
  assert.equal(
    slug("Differences from the server's protocol"),
    "differences-from-the-servers-protocol",
  );
  assert.equal(slug("`realm:call`"), "realmcall");
  assert.equal(slug("[Unreleased]"), "unreleased");
  assert.equal(slug("Use with the AI SDK"), "use-with-the-ai-sdk");
  assert.deepEqual(
    anchors("# Errors\n\n```md\n# Not a heading\n```\n\n## Errors\n"),
    new Set(["errors", "errors-1"]),
  );
});

Deno.test("links are found in prose, never in code", () => {
  const markdown = "See [a](a.md) and `[b](b.md)`.\n\n```md\n[c](c.md)\n```\n\n[d]: d.md\n";
  assert.deepEqual(links("x.md", markdown).map((link) => link.target), ["a.md", "d.md"]);
});

Deno.test("every relative link in the docs leads to a file that exists, and to its heading", async () => {
  const broken: string[] = [];
  for (const link of allLinks) {
    const resolved = resolve(link);
    if (resolved === undefined) continue;
    const where = `${link.from}:${link.line}: ${link.target}`;
    if (!await exists(resolved.path)) {
      broken.push(`${where} (no file ${resolved.path})`);
      continue;
    }
    if (resolved.anchor === undefined || !resolved.path.endsWith(".md")) continue;
    const target = texts.get(resolved.path) ??
      await Deno.readTextFile(new URL(resolved.path, root));
    if (!anchors(target).has(resolved.anchor)) {
      broken.push(`${where} (no heading #${resolved.anchor} in ${resolved.path})`);
    }
  }
  assert.deepEqual(broken, [], `broken links:\n${broken.join("\n")}`);
});

Deno.test("every page of docs/ is linked from the README or CONTRIBUTING", () => {
  assert.ok(pages.length > 0, "docs/ has pages");
  const linked = new Set(
    allLinks
      .filter((link) => link.from === "README.md" || link.from === "CONTRIBUTING.md")
      .map((link) => resolve(link)?.path),
  );
  const unlinked = pages.filter((page) => !linked.has(page));
  assert.deepEqual(unlinked, [], `pages nobody links to: ${unlinked.join(", ")}`);
});

Deno.test(`the README is at most ${README_MAX_LINES} lines, none wider than ${MAX_LINE_WIDTH}`, () => {
  const lines = texts.get("README.md")!.trimEnd().split("\n");
  assert.ok(lines.length <= README_MAX_LINES, `README.md has ${lines.length} lines`);
  const wide = lines
    .map((line, index) => ({ line, number: index + 1 }))
    .filter(({ line }) => [...line].length > MAX_LINE_WIDTH)
    .filter(({ line }) => !line.trimStart().startsWith("|") && !line.includes("://"))
    .map(({ number, line }) => `README.md:${number}: ${[...line].length} characters`);
  assert.deepEqual(wide, []);
});

/** Phrases that date a statement: "this release", and calendar dates. */
const DATED = [
  /\bthis release\b/i,
  /\b(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b/,
  /\b(?:January|February|March|April|May|June|July|August|September|October|November|December)\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}\b/,
  /\b\d{1,2}\s+(?:January|February|March|April|May|June|July|August|September|October|November|December)\s+\d{4}\b/,
];

Deno.test("the README, CONTRIBUTING and docs/ carry no dates and no 'this release'", () => {
  assert.ok(DATED.some((pattern) => pattern.test("Measured on 2026-11-26 on 2 cores")));
  assert.ok(DATED.some((pattern) => pattern.test("after this release's pass")));
  const dated: string[] = [];
  for (const path of undated) {
    texts.get(path)!.split("\n").forEach((line, index) => {
      if (DATED.some((pattern) => pattern.test(line))) dated.push(`${path}:${index + 1}: ${line}`);
    });
  }
  assert.deepEqual(
    dated,
    [],
    `dated statements (history goes in CHANGELOG.md):\n${dated.join("\n")}`,
  );
});

/** The public entries, whose `deno doc` is the API reference on JSR. */
const ENTRIES = ["mod.ts", "testing.ts", "ai_sdk.ts", "conformance.ts"];

/** A function or method as `deno doc --json` describes it, with the JSDoc of its declaration. */
interface Documented {
  where: string;
  params: { name?: string; kind: string }[];
  typeParams: { name: string }[];
  templates: string[];
}

/** Every function, method and constructor of the public entries, with its JSDoc's `@typeParam`s. */
async function documentedFunctions(): Promise<Documented[]> {
  const { stdout, success } = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--json", ...ENTRIES],
    cwd: root,
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.ok(success, "deno doc --json ran");
  const found: Documented[] = [];
  const walk = (node: unknown, where: string, jsDoc: unknown): void => {
    if (Array.isArray(node)) return node.forEach((item) => walk(item, where, jsDoc));
    if (typeof node !== "object" || node === null) return;
    const record = node as Record<string, unknown>;
    const name = typeof record.name === "string" ? `${where}.${record.name}` : where;
    const doc = record.jsDoc ?? jsDoc;
    const fn = (record.functionDef ?? (record.kind === "function" ? record.def : undefined)) as
      | Record<string, unknown>
      | undefined;
    if (fn && Array.isArray(fn.params)) {
      const tags = (doc as { tags?: { kind: string; name?: string }[] })?.tags ?? [];
      found.push({
        where: name,
        params: fn.params as Documented["params"],
        typeParams: (fn.typeParams ?? []) as Documented["typeParams"],
        templates: tags.filter((tag) => tag.kind === "template").map((tag) => tag.name!),
      });
    }
    for (const [key, value] of Object.entries(record)) {
      if (key !== "jsDoc") {
        walk(value, name, key === "functionDef" || key === "def" ? doc : undefined);
      }
    }
  };
  walk(JSON.parse(new TextDecoder().decode(stdout)).nodes, "", undefined);
  return found;
}

Deno.test("the API docs name each parameter in the user's words and explain each type parameter", async () => {
  const functions = await documentedFunctions();
  assert.ok(functions.some((fn) => fn.where.endsWith("RealmWebSocketClient.on")), "on() is found");
  const underscored = functions.flatMap((fn) =>
    fn.params.filter((param) => param.name?.startsWith("_")).map((p) => `${fn.where}(${p.name})`)
  );
  assert.deepEqual(underscored, [], "parameters named like unused variables");
  const unexplained = functions.flatMap((fn) =>
    fn.typeParams.filter((param) => !fn.templates.includes(param.name))
      .map((param) => `${fn.where}<${param.name}>`)
  );
  assert.deepEqual(
    unexplained,
    [],
    "type parameters without @typeParam (deno doc hides their bounds)",
  );
});

Deno.test({
  name: "the doc examples that deno task test runs print nothing",
  // The examples start stub servers of their own; the run below owns and closes them.
  sanitizeResources: false,
  fn: async () => {
    const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
    // The task's permissions, on every file with examples but the test files (which print none).
    const permissions = (config.tasks.test as string).split(" ").filter((arg) =>
      arg.startsWith("--allow-") || arg.startsWith("--lock=")
    );
    const { stdout, stderr, success } = await new Deno.Command(Deno.execPath(), {
      // Not --quiet, as the task is: it would hide what the examples print.
      args: [
        "test",
        "--doc",
        "--parallel",
        ...permissions,
        ...ENTRIES,
        "src/",
        "examples/",
        "README.md",
        "docs/",
      ],
      cwd: root,
      env: { DENO_JOBS: "2", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const output = new TextDecoder().decode(stdout);
    assert.ok(success, output.slice(-2000) + new TextDecoder().decode(stderr).slice(-2000));
    const printed = [...output.matchAll(/post-test output -+\n([\s\S]*?)-+ post-test output end/g)]
      .map((match) => match[1]);
    assert.deepEqual(printed, [], "examples that print when the suite runs them");
    assert.match(output, /^ok \| \d+ passed \| 0 failed/m);
  },
});

/** Number words as the docs write counts. */
const NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

Deno.test("the migration guide's count of events is the events it lists, and the client's", () => {
  // The compiler fails this object when an event is added or removed.
  const events: Record<keyof RealmEventMap, true> = {
    statechange: true,
    connecting: true,
    connected: true,
    disconnected: true,
    reconnecting: true,
    error: true,
  };
  const row = texts.get("docs/migration.md")!.split("\n").find((line) =>
    /\| \w+ events: /i.test(line)
  );
  assert.ok(row, "the migration guide's row about events");
  const [, count, list] = /\| (\w+) events: ([^;]*);/i.exec(row)!;
  const listed = [...list.matchAll(/`(\w+)`/g)].map((match) => match[1]);
  assert.deepEqual(listed.sort(), Object.keys(events).sort());
  assert.equal(NUMBERS.indexOf(count.toLowerCase()), listed.length, `"${count} events"`);
  for (const [, word] of row.matchAll(/one of the (\w+)/gi)) {
    assert.equal(NUMBERS.indexOf(word.toLowerCase()), listed.length, `"One of the ${word}"`);
  }
});

Deno.test("the README and CONTRIBUTING name the examples the demo runs, and only those", async () => {
  const demo = await Deno.readTextFile(new URL("examples/demo.ts", root));
  const runs = [...demo.matchAll(/from "\.\/([\w-]+)\.ts"/g)].map((match) => match[1]).sort();
  assert.ok(runs.length > 1, "demo.ts imports the examples it runs");
  const readme = texts.get("README.md")!;
  // The sentence ends at a full stop followed by a space or a line's end.
  const sentence = /The demo runs ([\s\S]*?)\.\s/.exec(readme)?.[1];
  assert.ok(sentence, "the README says which examples the demo runs");
  const named = [...sentence.matchAll(/\(examples\/([\w-]+)\.ts\)/g)].map((match) => match[1]);
  assert.deepEqual(named.sort(), runs);
  // Where a count is given: "runs four examples".
  for (const path of ["README.md", "CONTRIBUTING.md"]) {
    const counted = /runs (\w+) examples/.exec(texts.get(path)!);
    assert.ok(counted, `${path} says how many examples the demo runs`);
    assert.equal(NUMBERS.indexOf(counted[1]), runs.length, `${path}: "${counted[0]}"`);
  }
});

/** Commands that install the package from a registry, or run it from one. */
const REGISTRY_COMMAND =
  /\b(?:(?:npm|pnpm|yarn|bun) (?:install|i|add)|npx(?: -y)? -p|deno (?:add|install|run)[^`\n]*?) (?:jsr:|npm:)?@realm-ai\/ws-client\b/;

Deno.test("while the package is unpublished, no document offers a registry command for it", () => {
  assert.match("npm install @realm-ai/ws-client", REGISTRY_COMMAND);
  assert.match("deno run --allow-net jsr:@realm-ai/ws-client/conformance", REGISTRY_COMMAND);
  assert.doesNotMatch(
    "npx -p ./npm/realm-ai-ws-client-0.1.0.tgz realm-conformance",
    REGISTRY_COMMAND,
  );
  if (!texts.get("README.md")!.includes("**Not published yet.**")) return;
  const offered: string[] = [];
  for (const path of documents) {
    if (path === "CHANGELOG.md") continue;
    texts.get(path)!.split("\n").forEach((line, index) => {
      if (REGISTRY_COMMAND.test(line)) offered.push(`${path}:${index + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(offered, [], "registry commands that fail today");
});

Deno.test("the README's state table lists the moves of each state as STATE_EDGES does", () => {
  const readme = texts.get("README.md")!;
  const section = readme.slice(readme.indexOf("### Connection states"));
  const moves = new Map<string, string[]>();
  for (const line of section.slice(0, section.indexOf("What each method does")).split("\n")) {
    const cells = line.split("|").slice(1, -1).map((cell) => cell.trim());
    const state = cells[0]?.match(/^`(\w+)`$/)?.[1];
    if (state) moves.set(state, [...cells[2].matchAll(/`(\w+)`/g)].map((m) => m[1]).sort());
  }
  const edges = Object.entries(STATE_EDGES).map(([from, to]) => [from, [...to].sort()]);
  assert.deepEqual(Object.fromEntries(moves), Object.fromEntries(edges));
});
