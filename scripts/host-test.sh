#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Host tests of the core crates: cargo test + clippy + rustfmt.
# Prints every test binary's summary line, then "N passed, M failed" last.
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

cargo test --workspace 2>&1 | tee "$log" || status=1

sum() { grep -E '^test result:' "$log" | sed -E "s/.* ([0-9]+) $1.*/\1/" | awk '{s += $1} END {print s + 0}'; }
passed=$(sum passed)
failed=$(sum failed)

echo "== clippy"
if cargo clippy --workspace --all-targets -- -D warnings; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)); status=1
fi
echo "== rustfmt (workspace, and the kernel module crate src/, edition 2021 as Kbuild builds it)"
if cargo fmt --all --check && rustfmt --edition 2021 --check src/tdx_kvm_main.rs; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)); status=1
fi

if [ "$passed" -eq 0 ]; then
    echo "no test ran"; status=1
fi
echo "$passed passed, $failed failed"
exit $status
