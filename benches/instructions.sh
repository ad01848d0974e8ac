#!/usr/bin/env bash
# Instructions per rule-answered request in kefu's own code (user space), counted by
# valgrind's callgrind: the same count for the same build and input whatever else the
# machine is doing, unlike QPS and CPU time on a shared machine. Use it to compare two
# builds of a change to the turn; use benches/load.sh for the figures users see.
#
#   benches/instructions.sh                  # build (see below), count, show the top
#   COUNT=3000 TOP=40 benches/instructions.sh
#   KEFU_BIN=/tmp/kefu-old benches/instructions.sh   # a build made the same way
#   KEEP=/tmp/kefu.callgrind benches/instructions.sh  # keep the dump for callgrind_annotate
#
# valgrind cannot decode the AVX-512 that `target-cpu=native` (.cargo/config.toml) may
# emit, so the build here is for x86-64-v3 (AVX2) in target/callgrind, without the
# llama.cpp feature (rule-answered turns never reach the model). A first build takes
# several minutes; later ones only rebuild kefu.
#
# kefu serve runs under callgrind with one worker; curl, on one kept-alive connection,
# sends WARMUP requests, the counters are zeroed, COUNT more requests are sent (the
# questions of benches/chat.lua on 1,000 sessions) and the counters are dumped. Starting
# up (training the intent classifier) takes a minute or two under callgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh

COUNT=${COUNT:-3000}
WARMUP=${WARMUP:-500}
TOP=${TOP:-25}

for tool in valgrind callgrind_control callgrind_annotate curl; do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool is missing: apt-get install valgrind curl" >&2
    exit 1
  fi
done

bin=${KEFU_BIN:-}
if [ -z "$bin" ]; then
  echo "building kefu for callgrind (target/callgrind, x86-64-v3, no llama.cpp)"
  CARGO_TARGET_DIR=target/callgrind RUSTFLAGS="-C target-cpu=x86-64-v3" \
    cargo build --release --locked -q --no-default-features --bin kefu
  bin=target/callgrind/release/kefu
fi

work=$(mktemp -d)
trap 'stop_kefu; rm -rf "$work"' EXIT
KEFU_UNDER=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out")
KEFU_BIN=$bin START_WAIT=600 start_kefu "$work/log" --rules rules --no-watch --log-level info --model none --workers 1
addr=$KEFU_ADDR

# send N FIRST: N requests on one connection, session ids from FIRST on, cycling over
# 1,000 sessions and the questions of benches/chat.lua.
mapfile -t questions < <(chat_questions)
send() {
  local config="$work/curl.config"
  : >"$config"
  for i in $(seq "$2" $(($2 + $1 - 1))); do
    local s=$((i % 1000))
    # `next` separates transfers; one after the last would start an empty one.
    [ "$i" = "$2" ] || echo next >>"$config"
    printf 'url = "http://%s/v1/chat"\nheader = "content-type: application/json"\ndata = "{\\"session_id\\":\\"count-%d\\",\\"message\\":\\"%s\\",\\"user\\":{\\"segment\\":\\"vip\\",\\"orders\\":3}}"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' \
      "$addr" "$s" "${questions[$((s % ${#questions[@]}))]}" >>"$config"
  done
  curl -s -K "$config" | sort | uniq -c | awk '$2 != 200 { print "status " $2 ": " $1 " requests"; bad = 1 } END { exit bad }'
}
send "$WARMUP" 0
callgrind_control -z "$KEFU_PID" >/dev/null 2>&1
send "$COUNT" "$WARMUP"
callgrind_control -d "$KEFU_PID" >/dev/null 2>&1
stop_kefu

dump=$(ls "$work"/callgrind.out.* | head -1)
total=$(sed -n 's/^summary: //p' "$dump")
[ -n "${KEEP:-}" ] && cp "$dump" "$KEEP"
echo "instructions per request: $((total / COUNT)) ($total over $COUNT requests, $(basename "$bin"))"
echo
echo "inclusive, per request, top $TOP:"
# `head` closes the pipe early; that is not a failure.
set +o pipefail
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null |
  sed -n '/^Ir/,$p' | grep -E '^ *[0-9,]+ \(' | grep -v 'PROGRAM TOTALS' |
  awk -v n="$COUNT" '{ c = $1; gsub(",", "", c); $1 = sprintf("%8d", c / n); print }' |
  sed -E "s#$PWD/##; s#[^ ]*/\.cargo/registry/src/[^/]+/##; s#/rustc/[0-9a-f]+/##" |
  grep -v -E 'tokio-[0-9.]+/src/runtime|clone.S|pthread_create|thread_start|lifecycle.rs' |
  head -"$TOP" | cut -c1-160
