#!/usr/bin/env bash
# CI guards: read a suite's log and refuse the green-but-broken cases (no summary line, a
# non-zero failed count behind a zero exit code, an ignored test without a reason, a count
# below the floor). Sourced by .ci/run; tests/ci_guards_test.ts feeds them fake logs:
#   bash .ci/guards.sh deno-counts < log      -> "PASSED FAILED IGNORED", or fails
#   bash .ci/guards.sh unexplained-ignores < log
#   bash .ci/guards.sh npm-counts < log       -> "PASSED FAILED", or fails
#   bash .ci/guards.sh floor NAME COUNT FLOORFILE
# Each prints what is wrong on stderr and returns 1 when a guard refuses.

# An ignored test must say why in its name: "... (ignored: <reason>)".
IGNORE_REASON='\(ignored: [^ ].*\)'

strip_colours() { sed 's/\x1b\[[0-9;]*m//g'; }

# The counts of `deno test`'s closing line, e.g. "ok | 212 passed (3 steps) | 0 failed | 1 ignored".
deno_counts() {
  local line
  line=$(strip_colours | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -1)
  if [ -z "$line" ]; then
    echo "deno test printed no summary line (ok|FAILED | N passed | N failed)" >&2
    return 1
  fi
  local passed failed ignored
  passed=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+')
  failed=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || true)
  ignored=$(grep -oE '[0-9]+ ignored' <<<"$line" | grep -oE '[0-9]+' || true)
  if [ -z "$failed" ]; then
    echo "deno test's summary line has no failed count: $line" >&2
    return 1
  fi
  echo "$passed $failed ${ignored:-0}"
}

# Ignored or skipped tests whose names give no reason; fails when there is any.
unexplained_ignores() {
  local bad
  bad=$(strip_colours | grep -E ' \.\.\. (ignored|skipped)( \(|$)' |
    sed -E 's/ \.\.\. (ignored|skipped).*$//' | grep -vE "$IGNORE_REASON" || true)
  if [ -n "$bad" ]; then
    echo "ignored or skipped without a reason in the name (add \"(ignored: why)\"):" >&2
    sed 's/^/  /' <<<"$bad" >&2
    return 1
  fi
}

# The npm suites' counts. scripts/test_npm.ts runs each suite as a step between "=== NAME" and
# "=== NAME: ok|FAILED (S s)"; every runtime suite must print its own "N passed, N failed"
# (the conformance command's "N passed, N failed, N skipped (T ms)" counts too) with 0 failed, and the closing "npm package, all runtimes ...: N passed, N failed" must be there.
npm_counts() {
  local log
  log=$(strip_colours)
  local closing
  closing=$(grep -E '^npm package, all runtimes.*: [0-9]+ passed, [0-9]+ failed$' <<<"$log" |
    tail -1)
  if [ -z "$closing" ]; then
    echo "the npm suites printed no closing line (npm package, all runtimes ...: N passed, N failed)" >&2
    return 1
  fi
  local bad
  bad=$(awk '
    /^=== .*: (ok|FAILED) \([0-9.]+ s\)$/ {
      if (name != "" && suite) {
        if (counts == "") print name ": no \"N passed, N failed\" line";
        else {
          split(counts, c, " ");
          if (c[3] != "0") print name ": " counts;
        }
      }
      name = ""; next
    }
    /^=== / { name = substr($0, 5); counts = ""; suite = (name ~ /ESM|CJS|Bun|stub server|Chromium/); next }
    name != "" && /(^|[] ])[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped \([0-9.]+ m?s\))?$/ {
      match($0, /[0-9]+ passed, [0-9]+ failed/); counts = substr($0, RSTART, RLENGTH)
    }
  ' <<<"$log")
  local sections
  sections=$(grep -cE '^=== .*(ESM|CJS|Bun|stub server|Chromium).*: (ok|FAILED) \(' <<<"$log" || true)
  if [ "$sections" -lt "${NPM_MIN_SUITES:-9}" ]; then
    bad+=$'\n'"only $sections runtime suites ran, want ${NPM_MIN_SUITES:-9}"
  fi
  if [ -n "${bad//[$'\n']/}" ]; then
    echo "npm suites that failed or printed no counts:" >&2
    grep -v '^$' <<<"$bad" | sed 's/^/  /' >&2
    return 1
  fi
  local passed failed
  passed=$(grep -oE '[0-9]+ passed' <<<"$closing" | grep -oE '[0-9]+')
  failed=$(grep -oE '[0-9]+ failed' <<<"$closing" | grep -oE '[0-9]+')
  echo "$passed $failed"
}

# Fails when COUNT is below the floor kept for NAME in FLOORFILE ("NAME NUMBER" lines).
floor() {
  local name=$1 count=$2 file=$3 min
  min=$(awk -v n="$name" '$1 == n { print $2 }' "$file")
  if [ -z "$min" ]; then
    echo "no floor for $name in $file" >&2
    return 1
  fi
  if [ "$count" -lt "$min" ]; then
    echo "$name: $count tests passed, below the floor of $min in $file" >&2
    return 1
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -uo pipefail
  case "${1:-}" in
    deno-counts) deno_counts ;;
    unexplained-ignores) unexplained_ignores ;;
    npm-counts) npm_counts ;;
    floor) floor "$2" "$3" "$4" ;;
    *)
      echo "usage: guards.sh deno-counts|unexplained-ignores|npm-counts|floor NAME COUNT FILE" >&2
      exit 2
      ;;
  esac
fi
