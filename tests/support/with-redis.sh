#!/usr/bin/env bash
# Runs a command with a throwaway redis-server on a free loopback port and
# KEFU_TEST_REDIS pointing at it; stops the server afterwards. `make test` runs the
# #[ignore]d Redis tests by name in it (two kefu nodes sharing one Redis, the session
# races of tests/sessions.rs) and the fleet test.
set -euo pipefail
command -v redis-server >/dev/null || { echo "redis-server not found: make deps installs it" >&2; exit 1; }
port=""
for p in $(seq 16379 16479); do
  # Connection refused means nothing listens there.
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "no free port for redis-server in 16379-16479" >&2; exit 1; }
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.05
done
redis-cli -p "$port" ping >/dev/null || { cat "$dir/redis.log" >&2; exit 1; }
echo "redis-server on 127.0.0.1:$port for the tests"
export KEFU_TEST_REDIS="redis://127.0.0.1:$port/0"
"$@"
