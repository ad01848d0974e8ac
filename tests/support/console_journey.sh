#!/usr/bin/env bash
# The console's browser tests: drive Debian's chromium through the whole editor journey
# (console/tests/journey.mjs), the agent inbox with a customer's chat page
# (console/tests/inbox.mjs) and the web widget on a shop's page of another origin
# (console/tests/widget.mjs), each against its own `kefu serve` started from KEFU_BIN.
#
#   tests/support/console_journey.sh target/debug/kefu
#
# `make test` runs it after the cargo tests; the binary must embed the console (`make
# console` first: build.rs embeds console/dist/). Knobs, all optional:
#   CHROMIUM=/usr/bin/chromium   the browser (never downloaded)
#   KEFU_SCREENSHOTS=1           write the screenshots into docs/console/ and docs/channels/
#   KEFU_JOURNEY_KEEP=1          keep the temporary rules, state and server log and print where
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ $# -ne 1 ]; then
  echo "usage: $0 KEFU_BIN" >&2
  exit 2
fi
KEFU_BIN=$(realpath "$1")
export KEFU_BIN
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export CHROMIUM
[ -x "$KEFU_BIN" ] || { echo "$0: $KEFU_BIN is not an executable" >&2; exit 2; }
[ -x "$CHROMIUM" ] || { echo "$0: no chromium at $CHROMIUM (make deps installs Debian's)" >&2; exit 2; }
[ -d console/node_modules/playwright-core ] \
  || { echo "$0: console/node_modules is missing: run \`make console\` first" >&2; exit 2; }

cd console
# One after the other: two browsers and two servers at once are too much for a small CI box.
node --test --test-reporter=spec tests/journey.mjs
node --test --test-reporter=spec tests/inbox.mjs
exec node --test --test-reporter=spec tests/widget.mjs
