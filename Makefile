# TestArena: build, check, test and demo.
#
#   make demo    install what is missing, build, run the server and a demo queue against
#                examples/demo-firmware; the server keeps running (make stop ends it)
#   make test    install what is missing, lint, then run every test: the benchmark harness in
#                tiny mode, the browser tests, the API fuzzer, unit, integration and end-to-end
#                tests
#
# Other targets: deps, build, lint, api-fuzz, stop, bench, clean, help.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
FIRMWARE_DIR := examples/demo-firmware

.PHONY: help deps test-deps build lint test unit-test postgres-up browser-test api-fuzz bench-tiny demo stop bench clean

help:
	@echo "make demo    build, start the server on 127.0.0.1:8080 and run a demo queue (server keeps running)"
	@echo "make test    install test tools, lint, bench --tiny, browser tests, API fuzzer, cargo test --workspace"
	@echo "make deps    install the Xtensa cross compiler, QEMU, curl, rustfmt and clippy if missing"
	@echo "make build   cargo build --release (target/release/testarena) and build the demo firmware"
	@echo "make lint    cargo fmt --check and cargo clippy -D warnings"
	@echo "make api-fuzz  fuzz the REST API from its OpenAPI document (Schemathesis, about 2 minutes)"
	@echo "make stop    stop the server 'make demo' started"
	@echo "make bench   run the benchmarks (bench/run; see bench/README.md for what they need)"
	@echo "make clean   cargo clean and remove the demo firmware's build/"

deps:
	@bash scripts/install-deps.sh

build:
	$(CARGO) build --release --locked
	$(MAKE) --no-print-directory -C $(FIRMWARE_DIR)

# Both checks run even if the first fails, so one run shows every problem.
lint:
	@status=0; \
	echo "$(CARGO) fmt --all -- --check"; \
	$(CARGO) fmt --all -- --check || status=1; \
	echo "$(CARGO) clippy --workspace --all-targets --locked -- -D warnings"; \
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings || status=1; \
	exit $$status

test-deps: deps
	@bash scripts/install-deps.sh --test

# Everything, in one run: lint, the benchmark harness in its tiny mode (so it cannot rot; it
# asserts nothing about time), the browser tests against a real `testarena up`, the API fuzzer
# against a real `testarena serve`, then the cargo suite (unit, integration, end-to-end with
# real git, the Xtensa cross compiler and QEMU) last, so its `test result:` lines close the
# output. Every step runs even if an earlier one failed;
# the exit status says whether all passed.
test: test-deps
	@status=0; mkdir -p test-output; \
	$(MAKE) --no-print-directory lint || status=1; \
	$(MAKE) --no-print-directory bench-tiny || status=1; \
	$(MAKE) --no-print-directory browser-test 2>&1 | tee test-output/browser-test.log || status=1; \
	$(MAKE) --no-print-directory api-fuzz 2>&1 | tee test-output/api-fuzz.log || status=1; \
	$(MAKE) --no-print-directory unit-test 2>&1 | tee test-output/cargo-test.log || status=1; \
	bash scripts/test-summary.sh test-output/cargo-test.log test-output/browser-test.log; \
	if [ $$status -ne 0 ]; then echo "make test: some step failed (see above)"; fi; \
	exit $$status

# --no-fail-fast: every test binary runs, so every `test result:` line is printed. The store's
# tests and the PostgreSQL end-to-end tests need PostgreSQL: start it first (they fail, never
# skip, without it).
unit-test: postgres-up
	$(CARGO) test --workspace --locked --no-fail-fast

# Starts PostgreSQL if it is installed and down (as .ci/run does); nothing fails if it is absent.
postgres-up:
	@if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then \
	    for version in $$(ls /etc/postgresql); do \
	        [ -d "/etc/postgresql/$$version/main" ] || continue; \
	        if ! pg_ctlcluster "$$version" main status >/dev/null 2>&1; then \
	            echo "make: starting PostgreSQL $$version/main"; \
	            pg_ctlcluster --skip-systemctl-redirect "$$version" main start || \
	                echo "make: warning: PostgreSQL $$version/main did not start" >&2; \
	        fi; \
	    done; \
	fi

# Headless Chromium (Debian's) driven by playwright-core against a real `testarena up`.
browser-test:
	$(CARGO) build -p testarena --locked
	cd tests/browser && npm ci --no-audit --no-fund
	cd tests/browser && TESTARENA_BIN=$(CURDIR)/target/debug/testarena node --test dashboard.test.mjs auth.test.mjs bisect.test.mjs history.test.mjs

# Schemathesis (installed by test-deps) sends schema-generated requests to a real `testarena
# serve` and fails on any status code, content type, header or body the OpenAPI document does
# not describe, and on any 5xx. TESTARENA_FUZZ_TOKEN: a token to send (see tests/api-fuzz/run.sh).
api-fuzz:
	bash tests/api-fuzz/run.sh

bench-tiny:
	bash bench/run --tiny --quiet

demo: deps build
	@bash scripts/demo.sh

stop:
	@bash scripts/stop.sh

# bench/run builds what it needs itself; BENCH_ARGS passes options (e.g. BENCH_ARGS=--tiny).
bench: test-deps
	bash bench/run $(BENCH_ARGS)

clean:
	$(CARGO) clean
	$(MAKE) --no-print-directory -C $(FIRMWARE_DIR) clean
