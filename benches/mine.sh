#!/usr/bin/env bash
# The time `kefu mine` takes over 100,000 logged turns on one core (target: under 10 s;
# docs/testing.md, "Mining").
#
#   benches/mine.sh                      # build (release, no llama.cpp), generate, time
#   TURNS=200000 RUNS=5 benches/mine.sh
#   KEFU_BIN=target/release/kefu benches/mine.sh   # an existing build
#
# The log is made by benches/mine_gen.py (deterministic: the same TURNS give the same
# file) in a temporary directory. `kefu mine --log DIR --rules rules --json` runs RUNS
# times pinned to CPU 0 (taskset) and the median wall time is printed, with the time of
# the same command over an empty log (loading the demo shop and training its intent
# classifier, which `kefu mine` does before it reads a line) so that mining itself can be
# told apart. The build honours CARGO_TARGET_DIR.
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

# median_seconds LOGDIR: runs kefu mine RUNS times, prints the median wall time in seconds.
median_seconds() {
  local dir=$1 times=() start end
  for _ in $(seq "$RUNS"); do
    start=$(date +%s.%N)
    "${pin[@]}" "$bin" mine --log "$dir" --rules rules --json >"$work/out.json"
    end=$(date +%s.%N)
    times+=("$(echo "$end - $start" | bc -l)")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f", a[int((NR + 1) / 2)] }'
}

empty=$(median_seconds "$work/empty")
full=$(median_seconds "$work/log")
summary=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r[\"turns\"]} turns, {r[\"misses\"]} misses, {len(r[\"clusters\"])} clusters listed, {r[\"unclustered\"]} misses unclustered")
' "$work/out.json")
echo "kefu mine over $TURNS logged turns ($summary)"
echo "  median of $RUNS runs on one core: ${full} s (of which loading the rules: ${empty} s, the same command over an empty log)"
