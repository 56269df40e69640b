# SPDX-License-Identifier: GPL-2.0-only
# Front door. `make test` is the project's test command (README, .ci/run).

CARGO ?= cargo

.PHONY: all test host-test clippy fmt-check bench long-test

all: test

# Host side: unit, behaviour, random-sequence, concurrency and failure-injection tests of the
# kernel-free core crates, then lints. Prints each runner's summary and a final total.
test:
	@bash scripts/host-test.sh

host-test: test

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt-check:
	$(CARGO) fmt --all --check

bench:
	$(CARGO) run --release -p bench

# The 10^6-operation random run (ignored by default).
long-test:
	$(CARGO) test --workspace -- --ignored
