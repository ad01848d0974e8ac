#!/usr/bin/env bash
# Runs examples/openai_client.py (the official openai Python SDK) against a kefu server
# started here on a free loopback port. Skips, saying so, when python3 or the openai
# package is missing; the Rust tests check the same framing either way.
set -euo pipefail
kefu=${1:-target/debug/kefu}
if ! python3 -c 'import openai' 2>/dev/null; then
  echo "skipped: the openai SDK check (python3 with 'pip install openai' runs it)"
  exit 0
fi
out=$(mktemp)
"$kefu" serve --rules rules --addr 127.0.0.1:0 --no-watch --log-level warn >"$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 200); do
  grep -q '^listening on ' "$out" && break
  sleep 0.05
done
addr=$(sed -n 's/^listening on //p' "$out")
[ -n "$addr" ] || { echo "kefu did not start" >&2; exit 1; }
python3 examples/openai_client.py "http://$addr/v1"
