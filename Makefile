# TestArena: build, check, test and demo.
#
#   make demo    install what is missing, build, run the server and a demo queue against
#                examples/demo-firmware; the server keeps running (make stop ends it)
#   make test    install what is missing, lint, then run every test (unit, integration, end-to-end)
#
# Other targets: deps, build, lint, stop, bench, clean, help.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
FIRMWARE_DIR := examples/demo-firmware

.PHONY: help deps build lint test demo stop bench clean

help:
	@echo "make demo    build, start the server on 127.0.0.1:8080 and run a demo queue (server keeps running)"
	@echo "make test    lint, then cargo test --workspace (needs the Xtensa compiler and QEMU: make deps)"
	@echo "make deps    install the Xtensa cross compiler, QEMU, curl, rustfmt and clippy if missing"
	@echo "make build   cargo build --release (target/release/testarena) and build the demo firmware"
	@echo "make lint    cargo fmt --check and cargo clippy -D warnings"
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

# The integration and end-to-end tests (crates/cli/tests/) build the demo firmware and boot it
# in QEMU themselves. --no-fail-fast: every test binary runs, so every `test result:` line is
# printed even when an earlier binary fails. Nothing is printed after cargo's own output.
test: deps
	@$(MAKE) --no-print-directory lint
	$(CARGO) test --workspace --locked --no-fail-fast

demo: deps build
	@bash scripts/demo.sh

stop:
	@bash scripts/stop.sh

# bench/run builds what it needs itself; BENCH_ARGS passes options (e.g. BENCH_ARGS=--tiny).
bench:
	bench/run $(BENCH_ARGS)

clean:
	$(CARGO) clean
	$(MAKE) --no-print-directory -C $(FIRMWARE_DIR) clean
