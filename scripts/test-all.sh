#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# The project's test command (`make test`): the host suite, then the in-guest suite.
# Prints both runners' summaries (and the guest's per-suite lines for kvm-ioctls and the KVM
# selftests), then the total "N passed, M failed, K skipped, X xfailed" last (skipped: the
# host's ignored tests plus the guest's skipped checks; xfailed: the guest's upstream-suite tests
# that failed as tests/expected/ says they do, never counted as passed); exits non-zero if
# anything failed.
#
# A runner that exits non-zero counts as failed even if its summary says otherwise (at least
# one failure is added), and a runner without a summary line counts as one failure.
#
# TDXKVM_TEST_ONLY=host|guest runs one runner only (the other is reported as not run); meant
# for scripts/harness-selftest.sh. TDXKVM_HARNESS_FAULT: see that script.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
only=${TDXKVM_TEST_ONLY:-}
case "$only" in
    "" | host | guest) ;;
    *) echo "test-all: TDXKVM_TEST_ONLY must be host or guest, not '$only'" >&2; exit 64 ;;
esac
rlog=$(mktemp)
trap 'rm -f "$rlog"' EXIT

total_p=0 total_f=0 total_s=0 total_x=0
summaries=()
status=0

# run NAME SCRIPT SKIPWORD: runs one runner, adds its "NAME: N passed, M failed, K SKIPWORD"
# line (the last one it printed; optionally ", X xfailed" after it) to the totals, and checks
# its exit status.
run() {
    local name=$1 script=$2 skipword=$3 rc line p f s x
    if [[ -n "$only" && "$only" != "$name" ]]; then
        summaries+=("$name: not run (TDXKVM_TEST_ONLY=$only)")
        return
    fi
    bash "$script" 2>&1 | tee "$rlog"
    rc=${PIPESTATUS[0]}
    line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed(, [0-9]+ $skipword)?(, [0-9]+ xfailed)?\$" "$rlog" | tail -n 1)
    if [[ -z "$line" ]]; then
        summaries+=("$name: no summary line (exit $rc): counted as 1 failure")
        total_f=$((total_f + 1))
        status=1
        return
    fi
    p=$(sed -E 's/^[a-z]+: ([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    s=0 x=0
    [[ "$line" != *" $skipword"* ]] || s=$(sed -E "s/.* ([0-9]+) $skipword(,.*)?\$/\1/" <<<"$line")
    [[ "$line" != *" xfailed" ]] || x=$(sed -E 's/.* ([0-9]+) xfailed$/\1/' <<<"$line")
    if ((rc != 0 && f == 0)); then
        line+=" (but it exited $rc: counted as 1 failure)"
        f=1
    elif ((rc == 0 && f != 0)); then
        line+=" (but it exited 0)"
    fi
    ((rc == 0 && f == 0)) || status=1
    # The upstream suites' own summary lines (part of the guest's counts, shown again here).
    if [[ $name == guest ]]; then
        mapfile -t -O "${#summaries[@]}" summaries < <(grep -E '^(kvm-ioctls|kselftests): [0-9]+ passed' "$rlog")
    fi
    summaries+=("$line")
    total_p=$((total_p + p))
    total_f=$((total_f + f))
    total_s=$((total_s + s))
    total_x=$((total_x + x))
}

run host scripts/host-test.sh ignored
run guest scripts/guest-suite.sh skipped

printf '%s\n' "${summaries[@]}"
echo "$total_p passed, $total_f failed, $total_s skipped, $total_x xfailed"
[[ $status -eq 0 && $total_f -eq 0 ]]
