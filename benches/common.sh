# Shared by the load scripts: build, start and stop a release `kefu serve` on loopback.
# Sourced, not run.

# Installs wrk with apt-get when it is missing (Debian), and builds kefu in release mode.
prepare() {
  if ! command -v wrk >/dev/null; then
    echo "installing wrk"
    SUDO=$([ "$(id -u)" != 0 ] && command -v sudo >/dev/null && echo sudo || true)
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
  fi
  cargo build --release --locked -q
}

# start_kefu LOGFILE ARGS...: starts `kefu serve --addr 127.0.0.1:0 --drain-seconds 0 ARGS`
# (no balancer to drain for: stop_kefu's SIGTERM stops it at once) and sets KEFU_PID and
# KEFU_ADDR. KEFU_BIN picks another build; the array KEFU_UNDER, a command
# to run it under (valgrind); START_WAIT, how many seconds it may take to listen (10).
start_kefu() {
  local log=$1
  shift
  local out
  out=$(mktemp)
  ${KEFU_UNDER[@]+"${KEFU_UNDER[@]}"} "${KEFU_BIN:-target/release/kefu}" serve --addr 127.0.0.1:0 --drain-seconds 0 "$@" >"$out" 2>"$log" &
  KEFU_PID=$!
  for _ in $(seq $((${START_WAIT:-10} * 20))); do
    grep -q '^listening on ' "$out" && break
    kill -0 "$KEFU_PID" 2>/dev/null || break
    sleep 0.05
  done
  KEFU_ADDR=$(sed -n 's/^listening on //p' "$out")
  rm -f "$out"
  if [ -z "$KEFU_ADDR" ]; then
    echo "kefu did not start:" >&2
    cat "$log" >&2
    exit 1
  fi
}

stop_kefu() {
  if [ -n "${KEFU_PID:-}" ]; then
    kill -TERM "$KEFU_PID" 2>/dev/null || true
    wait "$KEFU_PID" 2>/dev/null || true
    KEFU_PID=
  fi
}

# chat_questions: the questions of benches/chat.lua, one per line.
chat_questions() {
  sed -n 's/^  "\(.*\)",$/\1/p' benches/chat.lua
}

# check_rule_answered: every question of benches/chat.lua is answered by a rule or a
# promotion (so the load measures rule-answered turns, not the model or the fallback).
check_rule_answered() {
  local q source
  while IFS= read -r q; do
    source=$(curl -s -X POST "http://$KEFU_ADDR/v1/chat" -H 'content-type: application/json' \
      -d "{\"session_id\":\"check\",\"message\":\"$q\",\"user\":{\"segment\":\"vip\",\"orders\":3}}" |
      sed -n 's/.*"source":"\([a-z]*\)".*/\1/p')
    case "$source" in
      rule | promotion) ;;
      *)
        echo "not rule-answered: $q (source: ${source:-none})" >&2
        exit 1
        ;;
    esac
  done < <(chat_questions)
}

# wrk_summary FILE: the figures a reader wants from wrk's output.
wrk_summary() {
  local f=$1
  local rps p50 p90 p99 non2xx sockerr
  rps=$(awk '/^Requests\/sec/ {print $2}' "$f")
  p50=$(awk '$1 == "50%" {print $2}' "$f")
  p90=$(awk '$1 == "90%" {print $2}' "$f")
  p99=$(awk '$1 == "99%" {print $2}' "$f")
  non2xx=$(awk '/Non-2xx or 3xx responses/ {print $NF}' "$f")
  sockerr=$(grep 'Socket errors' "$f" || true)
  echo "QPS ${rps}  p50 ${p50}  p90 ${p90}  p99 ${p99}  non-2xx ${non2xx:-0}  ${sockerr:-socket errors: none}"
}

# cpu_ticks PID: user + system CPU time of a process so far, in clock ticks.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# user_ticks PID: the user-space part of it (kefu's own code; the rest is the kernel's
# loopback TCP and scheduling).
user_ticks() {
  awk '{print $14}' "/proc/$1/stat"
}

# cpu_per_request TICKS REQUESTS: microseconds of CPU per request.
cpu_per_request() {
  awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a" }'
}
