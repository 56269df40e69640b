#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Host tests of the workspace: cargo test + clippy + rustfmt.
#
#   scripts/host-test.sh
#
# Prints every test binary's output and summary line, then "host: N passed, M failed, K ignored"
# last; exits non-zero if anything failed.
#
# Counting, so that the summary cannot lie:
# - `cargo test --no-fail-fast`: one failing binary does not stop the others from running.
# - passed/failed/ignored are summed over every `test result:` line (unit, integration and doc
#   tests).
# - a test binary that produced no `test result:` line (it aborted, was killed by a signal, or
#   exited early) counts as one failure, named below the output;
# - if cargo exits non-zero but nothing above counted a failure (e.g. a build error), that
#   counts as one failure too;
# - clippy, rustfmt, the compile_fail error-code check and scripts/expectations.sh self-test
#   count as one check each (the module crate's unsafe documentation is checked by the kernel's
#   clippy when the guest suite builds it).
# TDXKVM_HARNESS_FAULT=host-fail|host-abort makes a test fail or abort its binary (see
# scripts/harness-selftest.sh, which checks that both are counted).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
cargo_rc=${PIPESTATUS[0]}
((cargo_rc == 0)) || status=1

sum() { grep -E '^test result:' "$log" | sed -E "s/.* ([0-9]+) $1.*/\1/" | awk '{s += $1} END {print s + 0}'; }
passed=$(sum passed)
failed=$(sum failed)
ignored=$(sum ignored)

# Every binary cargo runs starts with a "Running ..." or "Doc-tests ..." line; one that did not
# get as far as its "test result:" line crashed.
crashed=$(awk '
    function close_section() { if (section != "" && !done) print section; section = ""; done = 0 }
    /^ +(Running|Doc-tests) / { close_section(); section = $0; sub(/^ +/, "", section); next }
    /^test result:/ { done = 1 }
    END { close_section() }' "$log")
ncrashed=0
if [[ -n "$crashed" ]]; then
    ncrashed=$(wc -l <<<"$crashed")
    echo "== test binaries that did not finish (no 'test result:' line), one failure each:"
    while IFS= read -r line; do echo "   $line"; done <<<"$crashed"
    grep -E "^error: test failed, to rerun pass|^ +process didn't exit successfully" "$log" | sed 's/^ */   /'
    failed=$((failed + ncrashed))
fi
if ((cargo_rc != 0 && failed == 0)); then
    echo "== cargo test exited $cargo_rc but no failure was counted (build error?): one failure"
    failed=1
fi
tests_line="cargo test: $passed passed, $failed failed, $ignored ignored"
((ncrashed == 0)) || tests_line+=" ($ncrashed of the failures: crashed test binaries)"

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

echo "== mmu compile_fail proofs with their error codes checked"
if bash scripts/check-compile-fail.sh; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)); status=1
fi

echo "== the upstream suites' expected results: verdict rules and tests/expected/*.txt"
if bash scripts/expectations.sh self-test; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)); status=1
fi

if ((passed == 0)); then
    echo "no test ran: counted as one failure"; failed=$((failed + 1))
fi
((failed == 0)) || status=1
echo "$tests_line"
echo "host: $passed passed, $failed failed, $ignored ignored"
exit $status
