#!/usr/bin/env bash
# `deno task mutate`: mutation testing of src/ (not src/stub) with Stryker and its command test
# runner driving a fast subset of the Deno suite. Stryker is installed from npm into .mutation/
# (git-ignored) on the first run; the report goes to reports/mutation/ (git-ignored too).
# Extra arguments go to `stryker run`, e.g. `deno task mutate --mutate src/errors.ts`.
# Incremental: a re-run tests only the mutants in code (or tests) changed since the last report.
set -euo pipefail
cd "$(dirname "$0")/../.."
STRYKER_VERSION=9.5.1
dir=.mutation
if [ "$(cat "$dir/version" 2>/dev/null)" != "$STRYKER_VERSION" ]; then
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error \
    "@stryker-mutator/core@$STRYKER_VERSION"
  echo "$STRYKER_VERSION" >"$dir/version"
fi
# The deno binary itself: `npx -y deno@2` costs about 1.7 s a start, and every mutant starts one.
DENO=$(npx -y deno@2 eval 'console.log(Deno.execPath())')
export DENO
started=$(date +%s)
status=0
"$dir/node_modules/.bin/stryker" run tests/mutation/stryker.config.json "$@" || status=$?
echo "mutation run took $(( ($(date +%s) - started) / 60 )) min; report: reports/mutation/index.html"
[ -f reports/mutation/mutation.json ] && "$DENO" run --allow-read tests/mutation/score.ts
exit "$status"
