#!/usr/bin/env bash
# The time `kefu mine` takes over 100,000 logged turns on one core (target: under 10 s;
# docs/testing.md, "Mining").
#
#   benches/mine.sh                      # build (release, no llama.cpp), generate, time
#   TURNS=200000 RUNS=5 benches/mine.sh
#   KEFU_BIN=target/release/kefu benches/mine.sh   # an existing build
#
# The log is made by benches/mine_gen.py (deterministic: the same TURNS and labels file
# give the same log) in a temporary directory. `kefu mine --log DIR --rules rules --json`
# runs RUNS times pinned to CPU 0 (taskset); the median wall and CPU times are printed,
# with those of the same command over an empty log (loading the demo shop and training its
# intent classifier, which `kefu mine` does before it reads a line) so that mining itself
# can be told apart. On a busy machine the wall time includes waiting for the core: read
# the CPU time. The build honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

TURNS=${TURNS:-100000}
RUNS=${RUNS:-3}

bin=${KEFU_BIN:-}
if [ -z "$bin" ]; then
  echo "building kefu (release, --no-default-features)"
  cargo build --release --locked -q --no-default-features --bin kefu
  bin=${CARGO_TARGET_DIR:-target}/release/kefu
fi
pin=()
if command -v taskset >/dev/null; then
  pin=(taskset -c 0)
else
  echo "taskset is missing (util-linux): running unpinned" >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/log" "$work/empty"
python3 benches/mine_gen.py --turns "$TURNS" --out "$work/log/conversations-bench.jsonl"
: >"$work/empty/conversations-empty.jsonl"

# median_seconds LOGDIR: runs kefu mine RUNS times; prints the median wall time and the
# median CPU time (user + system: what the run cost on a machine shared with other work),
# in seconds.
median_seconds() {
  local dir=$1 walls=() cpus=() t
  local TIMEFORMAT='%R %U %S'
  for _ in $(seq "$RUNS"); do
    t=$( { time "${pin[@]}" "$bin" mine --log "$dir" --rules rules --json >"$work/out.json" 2>"$work/err"; } 2>&1)
    read -r real user sys <<<"$t"
    walls+=("$real")
    cpus+=("$(echo "$user + $sys" | bc -l)")
  done
  local median='{ a[NR] = $1 } END { printf "%.2f", a[int((NR + 1) / 2)] }'
  printf '%s %s' "$(printf '%s\n' "${walls[@]}" | sort -g | awk "$median")" \
    "$(printf '%s\n' "${cpus[@]}" | sort -g | awk "$median")"
}

read -r empty_wall empty_cpu <<<"$(median_seconds "$work/empty")"
read -r full_wall full_cpu <<<"$(median_seconds "$work/log")"
summary=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("%d turns, %d misses, %d clusters listed, %d misses unclustered"
      % (r["turns"], r["misses"], len(r["clusters"]), r["unclustered"]))
' "$work/out.json")
echo "kefu mine over $TURNS logged turns ($summary)"
echo "  median of $RUNS runs on one core: ${full_wall} s wall, ${full_cpu} s CPU"
echo "  of which loading the rules (the same command over an empty log): ${empty_wall} s wall, ${empty_cpu} s CPU"
