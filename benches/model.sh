#!/usr/bin/env bash
# The model backend measured against llama.cpp's own tools, side by side in one run, on
# the same GGUF and thread count (docs/model.md records the figures):
#   1. one stream:  kefu generate --parallel 1   vs  llama-bench -p 0 -n N
#   2. 8 streams:   kefu generate --parallel 8   vs  llama-batched-bench -npl 8
#   3. time to first token of a prompt whose ~450-token system prefix is cached, vs cold.
# Rounds alternate kefu and llama.cpp so that a noisy neighbour hurts both; medians are
# reported. Environment: MODEL (models/default.gguf), THREADS (all cores), N (tokens per
# stream, 128), ROUNDS (3), KEFU_FLAGS (more `kefu generate` flags, e.g. --fixed-threads),
# KEFU_BIN (another kefu build), LLAMA_TOOLS (another directory of the tools).
#
# Each side runs at its own defaults, the speed its users get: llama.cpp's tools as
# built by llama.cpp's CMake (OpenMP, its threads spinning a while after each parallel
# region: OMP_WAIT_POLICY unset), kefu as it serves (ggml's own thread pool, each
# decode's threads sized to the free cores, src/llm/cores.rs). Set OMP_WAIT_POLICY in
# the environment to run the tools otherwise; the settings are printed with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-models/default.gguf}
THREADS=${THREADS:-$(nproc)}
N=${N:-128}
ROUNDS=${ROUNDS:-3}
read -r -a KEFU_FLAGS <<<"${KEFU_FLAGS:-}"

models/fetch.sh >/dev/null
benches/llama_tools.sh >/dev/null
cargo build --release --locked --quiet
kefu=${KEFU_BIN:-target/release/kefu}
tools=${LLAMA_TOOLS:-target/llama-tools/bin}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# kefu's prompt for the throughput runs (chat template + short system + question) is
# about this many tokens; llama-batched-bench gets prompts of the same length.
PP=$($kefu generate --model "$MODEL" --threads "$THREADS" --parallel 1 --max-tokens 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["prompt_tokens"])')
CTX=$(( 8 * (PP + N + 16) ))

for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  $tools/llama-bench -m "$MODEL" -t "$THREADS" -p 0 -n "$N" -r 1 -o json 2>/dev/null > "$out/bench.$r.json"
  $kefu generate --model "$MODEL" --threads "$THREADS" ${KEFU_FLAGS[@]+"${KEFU_FLAGS[@]}"} --parallel 1 --max-tokens "$N" --ignore-eos > "$out/kefu1.$r.json"
  $tools/llama-batched-bench -m "$MODEL" -t "$THREADS" -c "$CTX" -b 2048 -ub 512 -npp "$PP" -ntg "$N" -npl 8 \
    --output-format jsonl 2>/dev/null > "$out/batched.$r.jsonl"
  # The same decode size as llama-batched-bench's -b 2048: all eight prompts go in one
  # step, so the generation window holds no prompt evaluation, as in its S_TG.
  $kefu generate --model "$MODEL" --threads "$THREADS" ${KEFU_FLAGS[@]+"${KEFU_FLAGS[@]}"} --parallel 8 --ctx $(( PP + N + 16 )) --batch 2048 \
    --max-tokens "$N" --ignore-eos > "$out/kefu8.$r.json"
  $kefu generate --model "$MODEL" --threads "$THREADS" ${KEFU_FLAGS[@]+"${KEFU_FLAGS[@]}"} --parallel 1 --max-tokens 1 --warm \
    --system "$(cat benches/data/long_system.txt)" > "$out/ttft.$r.json"
done

python3 - "$out" "$ROUNDS" "$MODEL" "$THREADS" "${OMP_WAIT_POLICY:-unset (spin: the llama.cpp default)}" "${KEFU_FLAGS[*]:-none (adaptive threads)}" <<'PY'
import json, statistics, sys, pathlib
out, rounds, model, threads = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
omp, kefu_flags = sys.argv[5], sys.argv[6]
def load(name): return json.loads((out / name).read_text())
def jsonl(name): return [json.loads(l) for l in (out / name).read_text().splitlines() if l.strip().startswith("{")]
bench = [load(f"bench.{r}.json")[0]["avg_ts"] for r in range(1, rounds + 1)]
kefu1 = [load(f"kefu1.{r}.json")["tokens_per_s"] for r in range(1, rounds + 1)]
batched = [jsonl(f"batched.{r}.jsonl")[-1]["speed_tg"] for r in range(1, rounds + 1)]
kefu8 = [load(f"kefu8.{r}.json")["tokens_per_s"] for r in range(1, rounds + 1)]
ttft = [load(f"ttft.{r}.json") for r in range(1, rounds + 1)]
cold = [t["cold_prompt_ms"] for t in ttft]
warm = [t["streams"][0]["queue_ms"] + t["prompt_ms"] for t in ttft]
prefix = ttft[0]["streams"][0]
m = statistics.median
print(f"model {model}, {threads} threads, {rounds} rounds, medians (all rounds: see lists)")
print(f"settings: llama.cpp tools OMP_WAIT_POLICY={omp}; kefu flags: {kefu_flags}")
print(f"1 stream   kefu {m(kefu1):7.1f} t/s   llama-bench         {m(bench):7.1f} t/s   ratio {m(kefu1)/m(bench):.3f}   {kefu1} vs {bench}")
print(f"8 streams  kefu {m(kefu8):7.1f} t/s   llama-batched-bench {m(batched):7.1f} t/s   ratio {m(kefu8)/m(batched):.3f}   {kefu8} vs {batched}")
print(f"           8 streams / 1 stream (kefu): {m(kefu8)/m(kefu1):.2f}x")
print(f"first token, {prefix['prompt_tokens']}-token prompt, {prefix['cached_tokens']} cached: "
      f"{m(warm):.0f} ms vs cold {m(cold):.0f} ms, ratio {m(warm)/m(cold):.3f}   {warm} vs {cold}")
PY
