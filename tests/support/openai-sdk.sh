#!/usr/bin/env bash
# Runs examples/openai_client.py (the official openai Python SDK) against a kefu server
# started here on a free loopback port. When python3 cannot import openai, the SDK is
# installed from PyPI into target/python (pip --target: no virtualenv needed, nothing
# added to the system's Python, which Debian marks externally managed) and used from
# there. A machine without PyPI fails here rather than skipping: a skipped check is how
# a fresh machine's missing SDK once went unnoticed.
set -euo pipefail
kefu=${1:-target/debug/kefu}
deps=target/python
if ! python3 -c 'import openai' 2>/dev/null; then
  export PYTHONPATH="$deps${PYTHONPATH:+:$PYTHONPATH}"
  if ! python3 -c 'import openai' 2>/dev/null; then
    echo "installing the openai SDK into $deps (once)"
    # --no-warn-conflicts: packages installed elsewhere are not imported from here, so
    # the resolver's complaints about them are noise.
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts \
      --root-user-action=ignore --target "$deps" 'openai>=1' || {
      echo "cannot install the openai SDK (pip install --target $deps openai failed)" >&2
      exit 1
    }
  fi
fi
out=$(mktemp)
"$kefu" serve --rules rules --addr 127.0.0.1:0 --no-watch --drain-seconds 0 --log-level warn >"$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 200); do
  grep -q '^listening on ' "$out" && break
  sleep 0.05
done
addr=$(sed -n 's/^listening on //p' "$out")
[ -n "$addr" ] || { echo "kefu did not start" >&2; exit 1; }
python3 examples/openai_client.py "http://$addr/v1"
