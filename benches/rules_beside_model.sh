#!/usr/bin/env bash
# Rule-answered latency while the model generates on the same cores, in pairs: each pair
# runs benches/load.sh once idle (rule-answered traffic only) and once with the real
# default model answering MODEL_STREAMS conversations meanwhile (MODEL_LOAD=real), and
# reports the p99 ratio of the two. The goal (docs/model.md, "Threads"): the ratio at
# most 2. Pairs alternate which run goes first, so that a neighbour's burst does not
# always land on the same side; the median ratio and every pair are printed.
#
#   benches/rules_beside_model.sh                      # target/release/kefu, 4 pairs
#   BINS="old=/tmp/kefu-old new=target/release/kefu" benches/rules_beside_model.sh
#
# Environment: BINS (label=path ..., default "kefu=target/release/kefu"), PAIRS (4),
# DURATION (30s per run: in shorter runs no model answer finishes, so the tokens column,
# the model answers' completion tokens, cannot show the model's progress), KEFU_ARGS
# (more `kefu serve` flags for every run), and load.sh's own (CONNECTIONS, MODEL_STREAMS...). With several binaries, each pair runs
# every binary's two runs back to back, binaries in turn.
set -euo pipefail
cd "$(dirname "$0")/.."
BINS=${BINS:-kefu=target/release/kefu}
PAIRS=${PAIRS:-4}
export DURATION=${DURATION:-30s}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# One load.sh run: prints "p99_ms qps completion_tokens".
run() {
  local bin=$1 load=$2 f
  f=$(mktemp -p "$out")
  KEFU_BIN=$bin MODEL_LOAD=$load benches/load.sh >"$f" 2>&1 || { cat "$f" >&2; exit 1; }
  awk '
    /^rule-answered turns:/ {
      for (i = 1; i <= NF; i++) {
        if ($i == "QPS") qps = $(i + 1)
        if ($i == "p99") p99 = $(i + 1)
      }
    }
    /^kefu_llm_tokens_total\{kind="completion"\}/ { tokens = $2 }
    END {
      v = p99 + 0
      if (p99 ~ /us$/) v /= 1000; else if (p99 ~ /ms$/) v += 0; else if (p99 ~ /s$/) v *= 1000
      printf "%.2f %s %d\n", v, qps, tokens + 0
    }' "$f"
}

for p in $(seq "$PAIRS"); do
  for spec in $BINS; do
    label=${spec%%=*}
    bin=${spec#*=}
    if [ $((p % 2)) = 1 ]; then order="0 real"; else order="real 0"; fi
    for load in $order; do
      echo "pair $p/$PAIRS $label model=$load" >&2
      echo "$label $p $load $(run "$bin" "$load")" >>"$out/runs"
    done
  done
done

python3 - "$out/runs" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    label, pair, load, p99, qps, tokens = line.split()
    runs[label][(int(pair), load)] = (float(p99), float(qps), int(tokens))
print(f"{'binary':<10} {'pair':>4} {'idle p99':>9} {'model p99':>10} {'ratio':>6} {'idle QPS':>9} {'model QPS':>10} {'tokens':>7}")
for label, r in runs.items():
    ratios = []
    for pair in sorted({p for p, _ in r}):
        idle, busy = r[(pair, "0")], r[(pair, "real")]
        ratio = busy[0] / idle[0]
        ratios.append(ratio)
        print(f"{label:<10} {pair:>4} {idle[0]:>7.2f}ms {busy[0]:>8.2f}ms {ratio:>6.2f} {idle[1]:>9.0f} {busy[1]:>10.0f} {busy[2]:>7}")
    above = sum(r > 2 for r in ratios)
    print(f"{label:<10} median p99 ratio {statistics.median(ratios):.2f}, {above} of {len(ratios)} pairs above 2")
PY
