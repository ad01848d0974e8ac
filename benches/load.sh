#!/usr/bin/env bash
# Rule-answered turns over HTTP on loopback: QPS and latency percentiles with wrk.
#
#   benches/load.sh                       # idle: only rule-answered traffic
#   MODEL_LOAD=1 benches/load.sh          # the same while a (mock) model is generating
#   MODEL_LOAD=real benches/load.sh       # ... while the real default model generates
#   CONVERSATION_LOG=/tmp/c benches/load.sh  # with the conversation log on (docs/data.md)
#   KEFU_ARGS="--workers 1" benches/load.sh   # more `kefu serve` flags
#   KEFU_BIN=/tmp/kefu-old benches/load.sh    # another build, for side-by-side runs
#
# Starts a release `kefu serve` on the demo shop, checks that every question of
# benches/chat.lua is answered by a rule, then runs wrk (2 threads, 64 connections,
# 20 s by default: THREADS, CONNECTIONS, DURATION). wrk shares the machine with kefu, so
# the figures are for both on the same cores.
#
# MODEL_LOAD=1 also keeps MODEL_STREAMS (8) conversations busy with a scripted model
# that produces a token every 20 ms (benches/slow_model.yaml) through the fallback's
# `otherwise llm`: half of them streamed (turns on the blocking pool), half plain JSON
# (the model call leaves its worker through block_in_place). It is a mock: it holds threads and connections as a slow model does
# but uses no CPU, so it shows that model turns in flight do not starve rule-answered
# turns of the runtime; it does not measure a real model competing for the cores.
# MODEL_LOAD=real does: the same conversations are answered by models/default.gguf in
# process (llama.cpp on the same cores; its answers mostly end in the fallback, which
# does not matter here: the model generates all the same).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh

THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-20s}
LOG_LEVEL=${LOG_LEVEL:-info}
MODEL_LOAD=${MODEL_LOAD:-0}
MODEL_STREAMS=${MODEL_STREAMS:-8}

prepare
log=$(mktemp)
args=(--rules rules --no-watch --log-level "$LOG_LEVEL")
case "$MODEL_LOAD" in
  1) args+=(--mock-llm benches/slow_model.yaml) ;;
  real) args+=(--model models/default.gguf) ;;
  *) args+=(--model none) ;;
esac
[ -n "${CONVERSATION_LOG:-}" ] && args+=(--conversation-log "$CONVERSATION_LOG")
read -r -a extra <<<"${KEFU_ARGS:-}"
args+=("${extra[@]}")
start_kefu "$log" "${args[@]}"
trap 'stop_kefu; rm -f "$log"' EXIT
check_rule_answered

model_pids=()
if [ "$MODEL_LOAD" != 0 ]; then
  # Each loop asks for model answers back to back on its own conversation.
  for s in $(seq "$MODEL_STREAMS"); do
    (
      end=$((SECONDS + ${DURATION%s} + 5))
      while [ $SECONDS -lt $end ]; do
        curl -s -N -X POST "http://$KEFU_ADDR/v1/chat" -H 'content-type: application/json' \
          -d "{\"session_id\":\"model-$s\",\"message\":\"你们老板是谁呀\",\"stream\":$([ $((s % 2)) = 0 ] && echo true || echo false)}" >/dev/null || true
      done
    ) &
    model_pids+=($!)
  done
  sleep 1
fi

out=$(mktemp)
echo "kefu on $KEFU_ADDR (log level $LOG_LEVEL, model load: $MODEL_LOAD); wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
before=$(cpu_ticks "$KEFU_PID")
user_before=$(user_ticks "$KEFU_PID")
TIMEFORMAT="%U %S"
{ time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s benches/chat.lua "http://$KEFU_ADDR" >"$out"; } 2>"$out.time"
kefu_ticks=$(($(cpu_ticks "$KEFU_PID") - before))
kefu_user_ticks=$(($(user_ticks "$KEFU_PID") - user_before))
cat "$out"
if [ "$MODEL_LOAD" != 0 ]; then
  llm=$(curl -s "http://$KEFU_ADDR/metrics" | awk '/^kefu_answers_total\{source="llm"\}/ {print $2}')
  echo "model answers shown during the run: ${llm:-0}"
  curl -s "http://$KEFU_ADDR/metrics" | grep '^kefu_llm_tokens_total' || true
  kill "${model_pids[@]}" 2>/dev/null || true
fi
requests=$(awk '/requests in/ {print $1}' "$out")
wrk_us=$(awk -v n="$requests" '{ if (n > 0) printf "%.1f", ($1 + $2) * 1e6 / n }' "$out.time")
echo
echo "rule-answered turns: $(wrk_summary "$out")"
# CPU per request does not depend on what else the machine is running, unlike QPS: on
# an otherwise idle machine, QPS is about (cores * 1e6) / (kefu + wrk microseconds).
echo "CPU per request: kefu $(cpu_per_request "$kefu_ticks" "$requests") us (user $(cpu_per_request "$kefu_user_ticks" "$requests")), wrk ${wrk_us} us; load average $(cut -d' ' -f1-3 /proc/loadavg)"
# chat.lua repeats a few questions, as shoppers do: after the first turns each one is
# found in the understanding memo. Shown so that a run on other traffic can be compared.
curl -s "http://$KEFU_ADDR/metrics" | awk '/^kefu_nlu_memo_(hits|misses)_total/ { sub("kefu_nlu_memo_", ""); sub("_total", ""); m = m " " $1 " " $2 } END { print "understanding memo:" m }'
rm -f "$out" "$out.time"
if [ -n "${CONVERSATION_LOG:-}" ]; then
  curl -s "http://$KEFU_ADDR/metrics" | grep '^kefu_conversation_log' || true
fi
