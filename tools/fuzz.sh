#!/usr/bin/env bash
# Runs every native Go fuzz target of the workspace for FUZZTIME each (make fuzz; CI runs it for a
# few seconds so the corpora and targets stay green). A failing input is written by go test under
# the package's testdata/fuzz/<Target>/: commit it, it becomes a seed that every go test runs.
#
# -fuzzminimizetime is bounded: with the default (60s per new input) the fuzzer spends long stretches
# minimising inputs it found interesting and reports 0 execs/sec meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-2m}"
MODULES=(${MODULES:-shared services/config services/executor services/callback})
ONLY="${FUZZ_ONLY:-}"
summary=()
status=0
# last_execs prints the last execs count go test reported, or ? when it reported none: a short
# FUZZTIME can end while the baseline corpus is still being run, before any execs line (with
# pipefail a grep without a match would otherwise end the script right there).
last_execs() { local n; n=$(grep -oE 'execs: [0-9]+' <<<"$1" | tail -1 | awk '{print $2}' || true); echo "${n:-?}"; }
# files counts the inputs kept under a corpus directory (0 when there is none yet).
files() { if [[ -d $1 ]]; then find "$1" -type f | wc -l; else echo 0; fi; }
for m in "${MODULES[@]}"; do
  # go test -list prints a package's matching test names, then "ok <package>".
  list=$(cd "$m" && go test -list '^Fuzz' ./...) || { echo "go test -list failed in $m" >&2; exit 1; }
  mapfile -t lines < <(grep -E '^(Fuzz|ok )' <<<"$list")
  names=()
  for line in "${lines[@]}"; do
    if [[ $line == Fuzz* ]]; then names+=("$line"); continue; fi
    pkg=$(awk '{print $2}' <<<"$line")
    for name in "${names[@]}"; do
      if [[ -n $ONLY && $name != "$ONLY" ]]; then continue; fi
      echo "== fuzz $pkg $name for $FUZZTIME"
      start=$(date +%s)
      corpus="$(cd "$m" && go list -f '{{.Dir}}' "$pkg")/testdata/fuzz/$name"
      before=$(files "$corpus")
      if out=$(cd "$m" && go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 200x "$pkg" 2>&1); then
        execs=$(last_execs "$out")
        summary+=("ok    $name ($pkg): ${execs} execs in $(( $(date +%s) - start ))s")
      elif [[ $(files "$corpus") -eq $before ]] && grep -q '^    context deadline exceeded$' <<<"$out"; then
        # Go 1.26's fuzz coordinator can report its own -fuzztime deadline as a failure when a
        # worker is mid-input at that moment (go.dev/issue/75804, fixed in Go 1.27). No input was
        # written, so nothing failed: the run counts, and says so.
        execs=$(last_execs "$out")
        summary+=("ok    $name ($pkg): ${execs} execs in $(( $(date +%s) - start ))s (stopped by go.dev/issue/75804, no failing input)")
      else
        echo "$out" | tail -40
        summary+=("FAIL  $name ($pkg): the failing input is in $corpus/")
        status=1
      fi
    done
    names=()
  done
done
printf '%s\n' "== fuzz summary (FUZZTIME=$FUZZTIME)" "${summary[@]}"
exit $status
