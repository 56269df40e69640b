#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Tests the test harness: injects each failure `make test` must not hide and checks that the
# run then prints a non-zero failed count AND exits non-zero, and that a clean run is 0 failed
# and exit 0.
#
#   scripts/harness-selftest.sh [--full] [CASE...]
#
# CASEs (all of them by default, in this order):
#   host-fail      a host test fails              (guest-client's harness_fault_probe panics)
#   host-abort     a host test binary aborts      (the same test calls std::process::abort())
#   guest-panic    the guest client panics after half of its tests have reported
#   guest-hang     the guest client hangs there: the watchdog kills it (CLIENT_LIMIT=120) and
#                  the run goes on to its end
#   guest-missing  the guest client is not staged into the initramfs
#   clean          no fault: 0 failed, exit 0     (always the full `make test`)
# Each fault case runs scripts/test-all.sh (what `make test` runs) with
# TDXKVM_HARNESS_FAULT=CASE and only the runner the fault is in (TDXKVM_TEST_ONLY=host|guest),
# which saves the other one's minutes; with --full every case runs `make test` itself, both
# runners. The guest cases boot
# QEMU (several minutes each under TCG) and need the debug kernel (built if not cached).
# No rebuild is needed: the faults are read at run time (host test, guest client) or at
# staging (guest-missing).
#
# Prints, per case, the runners' summary lines, the total line and the exit status, then a
# verdict, and "harness-selftest: N passed, M failed" last. Full outputs:
# target/harness-selftest/CASE.log.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

full=0
if [[ "${1:-}" == --full ]]; then full=1; shift; fi
cmd=(bash scripts/test-all.sh)
((full == 0)) || cmd=(make --no-print-directory test)
cases=("$@")
((${#cases[@]})) || cases=(host-fail host-abort guest-panic guest-hang guest-missing clean)

outdir=target/harness-selftest
mkdir -p "$outdir"
passed=0 failed=0

# What the run's output must also show, beyond the counts, for the fault to have been the
# reason (an extended regular expression).
evidence() {
    case $1 in
        host-fail) echo '^test harness_tests::harness_fault_probe \.\.\. FAILED' ;;
        host-abort) echo "^== test binaries that did not finish|SIGABRT" ;;
        guest-panic) echo "^RESULT FAIL guest_client_exits_0_with_every_result_tdx_[a-z]+ \(got 'exit 101" ;;
        guest-hang) echo "^RESULT FAIL guest_client_exits_0_with_every_result_tdx_[a-z]+ \(got 'exit 137" ;;
        guest-missing) echo "^RESULT FAIL guest_client_exits_0_with_every_result_tdx_[a-z]+ \(got 'exit 127" ;;
        clean) echo '^guest: [0-9]+ passed, 0 failed' ;;
    esac
}

for c in "${cases[@]}"; do
    env_args=()
    case $c in
        host-fail | host-abort) env_args=(TDXKVM_HARNESS_FAULT="$c") ; ((full)) || env_args+=(TDXKVM_TEST_ONLY=host) ;;
        guest-panic | guest-missing) env_args=(TDXKVM_HARNESS_FAULT="$c") ; ((full)) || env_args+=(TDXKVM_TEST_ONLY=guest) ;;
        guest-hang) env_args=(TDXKVM_HARNESS_FAULT="$c" CLIENT_LIMIT=120) ; ((full)) || env_args+=(TDXKVM_TEST_ONLY=guest) ;;
        clean) env_args=(TDXKVM_HARNESS_FAULT= TDXKVM_TEST_ONLY=) ;;
        *) echo "harness-selftest: unknown case '$c'" >&2; exit 64 ;;
    esac
    log="$outdir/$c.log"
    echo "=== $c: ${env_args[*]} ${cmd[*]}   (log: $log)"
    t0=$SECONDS
    env "${env_args[@]}" "${cmd[@]}" >"$log" 2>&1
    rc=$?
    total=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    grep -E '^(host|guest): ' "$log" | tail -n 2 | sed 's/^/    /'
    echo "    $total"
    echo "    exit status $rc, $((SECONDS - t0)) s"
    nfailed=$(sed -nE 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/p' <<<"$total")
    why=()
    [[ -n "$total" ]] || why+=("no total line")
    if [[ $c == clean ]]; then
        [[ "$nfailed" == 0 ]] || why+=("failed count is '${nfailed:-none}', not 0")
        ((rc == 0)) || why+=("exit status $rc, not 0")
    else
        [[ -n "$nfailed" && "$nfailed" != 0 ]] || why+=("failed count is '${nfailed:-none}', not > 0")
        ((rc != 0)) || why+=("exit status 0")
    fi
    grep -qE "$(evidence "$c")" "$log" || why+=("no line matching /$(evidence "$c")/ in $log")
    if ((${#why[@]})); then
        echo "    WRONG: $(IFS=';'; echo "${why[*]}")"
        failed=$((failed + 1))
    else
        echo "    ok"
        passed=$((passed + 1))
    fi
done
echo "harness-selftest: $passed passed, $failed failed"
((failed == 0))
