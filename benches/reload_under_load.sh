#!/usr/bin/env bash
# Reload under load: while wrk drives rule-answered traffic, rewrite a rule file
# RELOADS (100) times with a changing reply and check that every reload was applied and
# seen by the next request, and that no request failed.
#
# The edits alternate between an in-place write and an editor-style write to a temporary
# file renamed over the original; the watcher picks both up. After each edit the script
# waits for /admin/rules to show a new version (at most 5 s), then asks the question and
# checks the new reply. wrk's non-2xx responses and socket errors are the failed
# requests. Exit status 1 when any reload was missed or any request failed.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh

RELOADS=${RELOADS:-100}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-40s}

prepare
dir=$(mktemp -d)
cp -r rules/. "$dir"
file="$dir/presale.kefu"
original="我们的T恤经过预缩处理，正常洗涤不会明显缩水，建议冷水手洗。"
grep -q "$original" "$file"
log=$(mktemp)
start_kefu "$log" --rules "$dir" --log-level warn
out=$(mktemp)
trap 'stop_kefu; rm -rf "$dir" "$log" "$out"' EXIT
check_rule_answered

version() { curl -s "http://$KEFU_ADDR/admin/rules" | sed -n 's/.*"version":"\([0-9a-f]*\)".*/\1/p'; }

wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s benches/chat.lua "http://$KEFU_ADDR" >"$out" &
wrk_pid=$!
sleep 1

applied=0 seen=0 missed=0
started=$(date +%s.%N)
for i in $(seq "$RELOADS"); do
  before=$(version)
  reply="我们的T恤经过预缩处理，正常洗涤不会明显缩水（第${i}版）。"
  if [ $((i % 2)) = 0 ]; then
    sed "s/$original/$reply/" "$dir/.presale.orig" >"$file"
  else
    [ -f "$dir/.presale.orig" ] || cp "$file" "$dir/.presale.orig"
    sed "s/$original/$reply/" "$dir/.presale.orig" >"$dir/.presale.kefu.tmp"
    mv "$dir/.presale.kefu.tmp" "$file"
  fi
  ok=0
  for _ in $(seq 250); do
    now=$(version)
    if [ -n "$now" ] && [ "$now" != "$before" ]; then ok=1; break; fi
    sleep 0.02
  done
  if [ $ok = 1 ]; then
    applied=$((applied + 1))
    answer=$(curl -s -X POST "http://$KEFU_ADDR/v1/chat" -H 'content-type: application/json' \
      -d "{\"session_id\":\"reload-check-$i\",\"message\":\"这件T恤洗了会缩水吗\"}")
    if grep -q "第${i}版" <<<"$answer"; then seen=$((seen + 1)); fi
  else
    missed=$((missed + 1))
    echo "reload $i not applied within 5 s" >&2
  fi
done
elapsed=$(awk -v a="$(date +%s.%N)" -v b="$started" 'BEGIN { printf "%.1f", a - b }')
wait "$wrk_pid"
cat "$out"

rejected=$(curl -s "http://$KEFU_ADDR/metrics" | awk '/^kefu_rule_reloads_total\{outcome="rejected"\}/ {print $2}')
reloads=$(curl -s "http://$KEFU_ADDR/metrics" | awk '/^kefu_rule_reloads_total\{outcome="applied"\}/ {print $2}')
non2xx=$(awk '/Non-2xx or 3xx responses/ {print $NF}' "$out")
sockerr=$(grep -c 'Socket errors' "$out" || true)
echo
echo "edits: $RELOADS in ${elapsed} s; applied (new version seen): $applied; new reply on the next request: $seen; missed: $missed"
echo "reloads counted by kefu: applied ${reloads:-0}, rejected ${rejected:-0} (an in-place write caught half-written is rejected, then applied when complete)"
echo "load during the edits: $(wrk_summary "$out")"
if [ "$missed" != 0 ] || [ "$seen" != "$RELOADS" ] || [ -n "$non2xx" ] || [ "$sockerr" != 0 ]; then
  echo "FAILED: reloads missed or requests failed"
  exit 1
fi
echo "ok: every reload applied, zero failed requests"
