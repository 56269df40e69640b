#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# The in-guest suite: builds the pipeline kernel (or reuses the cache), kvm.ko, the static
# guest client, rust-vmm kvm-ioctls' own test suite (scripts/kvm-ioctls-tests.sh) and every
# upstream x86 KVM selftest of Linux 6.12 (scripts/kselftests.sh), boots QEMU (TCG) and runs,
# for each tdx= mode, the client's /dev/kvm tests, the module-parameter checks, the two upstream
# suites (each test alone under a timeout; kvm-ioctls in tdx=off, the selftests in tdx=off and
# four of them in tdx=emulated too) and (tdx=emulated) the in-kernel self test with several
# writers at once. Any oops, KASAN report, lockdep splat or WARN fails the run.
#
#   scripts/guest-suite.sh [--selftest-ops N]
#
# Prints one "RESULT PASS|FAIL|SKIP|XFAIL name [why]" line per check, one summary line per
# upstream suite ("kvm-ioctls: ...", "kselftests: ...") and
# "guest: N passed, M failed, K skipped, X xfailed" last; exits non-zero if anything failed.
#
# Counting, so that the summary cannot lie:
# - the suite knows every check it must see: the list below (`expected_checks`) plus, for each
#   mode, every test of the client (`guest-client --list`, run on the build host) and every run
#   and expectation of the upstream suites (scripts/expectations.sh names). A check without a
#   result line counts as a failure named "missing" (the guest died, a mode's insmod failed,
#   the client panicked or is not there); a result line the list does not know counts as a
#   failure too ("unexpected": keep the list and the guest script in step);
# - in the guest, each mode has a check that the client exited 0 and printed a result for
#   every test of its plan;
# - a test the client skips is a skip ("RESULT SKIP"), never a pass;
# - the upstream suites' outcomes (pass, fail, skip, ignored, timeout; "OUTCOME" lines from the
#   guest) are compared with tests/expected/kvm-ioctls.txt and tests/expected/kselftests.txt
#   by scripts/expectations.sh: an expected failure that fails is XFAIL (its own column, never a
#   pass), any difference (a regression, a test that now passes, a missing or an extra test) is
#   a failure. The outcomes are kept in target/guest-outcomes.txt; `scripts/expectations.sh
#   update` rewrites the expected files from them (then review by hand);
# - a kernel error in the console log, a run that did not finish, or a guest script that
#   exited non-zero without a failed check count as one more failure.
# TDXKVM_HARNESS_FAULT=guest-panic|guest-hang|guest-missing makes the client panic or hang
# half-way or leaves it out of the image (see scripts/harness-selftest.sh, which checks that each
# fails the run; CLIENT_LIMIT=SEC shortens the client's limit for the hang).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
selftest_ops=${SELFTEST_OPS:-10000}
[[ "${1:-}" == --selftest-ops ]] && selftest_ops=$2
[[ "$selftest_ops" =~ ^[0-9]+$ ]] || { echo "guest-suite: bad self-test op count '$selftest_ops'" >&2; exit 64; }
case "${TDXKVM_HARNESS_FAULT:-}" in
    "" | host-fail | host-abort | guest-panic | guest-hang | guest-missing) ;;
    *) echo "guest-suite: unknown TDXKVM_HARNESS_FAULT='$TDXKVM_HARNESS_FAULT'" >&2; exit 64 ;;
esac

modes=(off emulated auto)
# The upstream suites: run lists staged by guest-build.sh as "$work/tests/SUITE.txt".
suites=(kvm-ioctls kselftests)
# Wall-clock budget of each suite in one guest run (seconds): once used up, the rest of its
# tests are not started and are reported as failures, so that the run ends before QEMU's
# timeout. Measured on main (no run loop): kvm-ioctls 56 s and the selftests 50 s on an idle
# 2-core host, 181 s and 187 s with the host's load average at 10-13 (TCG slows with the
# host); the budgets leave room for that and for the selftests' real run times once guests run
# (about 6 minutes on upstream kvm_amd in this QEMU, plus the tests that time out there).
declare -A suite_budget=([kvm-ioctls]=600 [kselftests]=1500)

# QEMU's timeout: the rest of the suite needs about 6 minutes (900 s leave room), plus the
# upstream suites' budgets.
qemu_timeout=${QEMU_TIMEOUT:-$((900 + ${suite_budget[kvm-ioctls]} + ${suite_budget[kselftests]}))}
# The client's limit in one mode (seconds): CLIENT_LIMIT_PLACEHOLDER
client_limit=${CLIENT_LIMIT:-900}

# Every check the guest script below reports, in order ("MODE" stands for each tdx= mode; the
# client's tests come where CLIENT is).
expected_checks() {
    local m t
    echo insmod_tdx_hw_without_tdx_fails_enodev
    echo insmod_tdx_hw_is_enodev
    echo insmod_tdx_hw_logs_one_clear_line
    echo insmod_tdx_bogus_fails_einval
    echo insmod_tdx_bogus_is_einval
    for m in "${modes[@]}"; do
        echo "insmod_tdx_$m"
        echo "dev_kvm_mode_0600_tdx_$m"
        echo "dev_kvm_is_misc_232_tdx_$m"
        echo "module_kvm_param_tdx_is_mode_tdx_$m"
        echo "module_kvm_force_emulation_prefix_is_0_tdx_$m"
        echo "module_kvm_amd_params_tdx_$m" # HOOK(abi)
        while read -r t; do echo "${t}_tdx_$m"; done <"$work/tests/client-tests.txt"
        echo "guest_client_exits_0_with_every_result_tdx_$m"
        grep -E "_tdx_$m\$" "$work/suite-checks" || true
        if [[ $m == emulated ]]; then
            echo selftest_single_writer
            printf '%s\n' selftest_concurrent_writer_{1,2,3}
            echo selftest_bad_count_is_einval
        fi
        echo "seamcall_fault_is_caught_as_seamcall_ud_tdx_$m"
        echo "vmxoff_fault_is_caught_tdx_$m"
        echo "no_pages_left_tdx_$m"
        echo "rmmod_tdx_$m"
    done
    # Expectations naming a mode the suite does not have (a typo): failures, never dropped.
    grep -v -E "_tdx_($(IFS='|'; echo "${modes[*]}"))\$" "$work/suite-checks" || true
}

# shellcheck source=scripts/guest-build.sh
source scripts/guest-build.sh
{
    echo "#!/bin/sh"
    echo "# Runs inside the guest (busybox sh); written by scripts/guest-suite.sh."
    echo "selftest_ops=$selftest_ops"
    echo "half_ops=$((selftest_ops / 2))"
    echo "modes='${modes[*]}'"
    echo "suites='${suites[*]}'"
    for s in "${suites[@]}"; do echo "budget_${s//-/_}=${suite_budget[$s]}"; done
    echo "client_limit=$client_limit"
    echo "watchdog_at=$((qemu_timeout - 90))"
    printf "harness_fault='%s'\n" "${TDXKVM_HARNESS_FAULT:-}"
} >"$work/tests/run.sh"
cat >>"$work/tests/run.sh" <<'RUN'
cd /tests
[ -z "$harness_fault" ] || export TDXKVM_HARNESS_FAULT="$harness_fault"
status=0
pass() { echo "RESULT PASS $1"; }
fail() { echo "RESULT FAIL $1 $2"; status=1; }
skip() { echo "RESULT SKIP $1 $2"; }
check() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "(got '$2', want '$3')"; fi; }

# Is PID running (a zombie is not)?
client_alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
# PID's threads: name, state, wait channel and kernel stack each (what a hang is waiting on).
task_dump() {
    for t in /proc/$1/task/*; do
        [ -r "$t/status" ] || continue
        echo "  thread ${t##*/} $(cat "$t/comm") $(grep '^State:' "$t/status") wchan $(cat "$t/wchan")"
        sed 's/^/      /' "$t/stack" 2>/dev/null
    done
}
# Before QEMU's timeout kills the guest: every user task's threads to the log, so that a run
# that hangs anywhere says where.
(
    while [ "$(cut -d. -f1 /proc/uptime)" -lt "$watchdog_at" ]; do sleep 5; done
    echo "--- watchdog: $watchdog_at s since boot, QEMU's timeout is near; every user task:"
    for p in /proc/[0-9]*; do
        [ -s "$p/cmdline" ] || continue
        echo " task ${p##*/}: $(tr '\0' ' ' <"$p/cmdline" | cut -c1-100)"
        task_dump "${p##*/}"
    done
) >/dev/console 2>&1 & # not run.sh's output: that pipe must close when run.sh ends

# The client's results for one mode: one RESULT line for every test of client-tests.txt (the
# list the build host took from `guest-client --list`), "missing" for those it did not report.
client_results() {
    mode=$1
    t_client=$(cut -d. -f1 /proc/uptime)
    ./guest-client "$mode" >client.log 2>&1 &
    cpid=$!
    # A client that hangs must not eat the run: after $client_limit s the stacks of its
    # threads go to the log and it is killed; the tests it did not report are missing.
    while client_alive "$cpid"; do
        if [ $(($(cut -d. -f1 /proc/uptime) - t_client)) -ge "$client_limit" ]; then
            echo "--- guest-client $mode still running after $client_limit s, in the first test without a result line:"
            sed -n -e "s/^test \([a-z0-9_]*\) \[tdx=$mode\] .*/\1/p" client.log >client.done
            grep -vxF -f client.done client-tests.txt | head -n 1
            echo "--- its threads (state, wait channel, kernel stack):"
            task_dump "$cpid"
            kill -KILL "$cpid"
            break
        fi
        sleep 1
    done
    wait "$cpid"
    crc=$?
    echo "--- guest-client (tdx=$mode): $(($(cut -d. -f1 /proc/uptime) - t_client)) s"
    sed -n -e "s/^test \([a-z0-9_]*\) \[tdx=$mode\] \.\.\. ok\$/PASS \1/p" \
        -e "s/^test \([a-z0-9_]*\) \[tdx=$mode\] \.\.\. FAILED: \(.*\)\$/FAIL \1 \2/p" \
        -e "s/^test \([a-z0-9_]*\) \[tdx=$mode\] \.\.\. skipped: \(.*\)\$/SKIP \1 \2/p" \
        client.log >client.res
    while read -r t; do
        r=$(grep -m 1 -E "^(PASS|FAIL|SKIP) $t( |\$)" client.res)
        case "$r" in
            PASS*) pass "${t}_tdx_$mode" ;;
            FAIL*) fail "${t}_tdx_$mode" "${r#FAIL $t }" ;;
            SKIP*) skip "${t}_tdx_$mode" "${r#SKIP $t }" ;;
            *) fail "${t}_tdx_$mode" "missing: the client printed no result for it" ;;
        esac
    done <client-tests.txt
    want=$(grep -c . client-tests.txt)
    got=$(grep -c . client.res)
    plan=$(sed -n 's/^plan: //p' client.log)
    check "guest_client_exits_0_with_every_result_tdx_$mode" \
        "exit $crc, plan ${plan:-none}, $got results" "exit 0, plan $want, $want results"
    if [ "$crc" = 0 ]; then
        tail -n 1 client.log
    else
        echo "--- guest-client $mode exited $crc; the end of its output:"
        tail -n 5 client.log
    fi
}

# The upstream suites for one mode: every run of the suite's run list (SUITE.txt, "MODE NAME
# TIMEOUT [ARGS]") for this mode, each test alone under its timeout (SIGKILL), one
# "OUTCOME SUITE MODE NAME STATE SECONDS DETAIL" line each, STATE pass, fail, skip (kselftest
# exit 4, KSFT_SKIP), ignored (a kvm-ioctls #[ignore] test) or timeout. No verdict here: the
# build host compares the outcomes with tests/expected/SUITE.txt. The end of each failing
# test's output goes to the log.
suite_outcomes() {
    suite=$1
    mode=$2
    eval "budget=\$budget_$(echo "$suite" | tr - _)"
    t_suite=$(cut -d. -f1 /proc/uptime)
    grep "^$mode " "$suite.txt" | while read -r m name tmo args; do
        t0=$(cut -d. -f1 /proc/uptime)
        if [ $((t0 - t_suite)) -ge "$budget" ]; then
            echo "OUTCOME $suite $mode $name fail 0 not started: the suite's budget of $budget s in one run was used up"
            continue
        fi
        case $suite in
            # shellcheck disable=SC2086 # ARGS are words (scripts/kselftests.sh args_for)
            kselftests) bin=./kselftests/$name; set -- "$bin" $args ;;
            kvm-ioctls) bin=./kvm-ioctls-tests; set -- "$bin" --exact "$name" --test-threads=1 ;;
        esac
        if [ ! -x "$bin" ]; then
            echo "OUTCOME $suite $mode $name fail 0 not in the image (it did not build)"
            continue
        fi
        timeout -s KILL "$tmo" "$@" </dev/null >suite.log 2>&1
        rc=$?
        secs=$(($(cut -d. -f1 /proc/uptime) - t0))
        last=$(grep -v '^ *$' suite.log | tail -n 1 | tr -s ' \t' ' ' | cut -c1-200)
        if [ "$rc" = 137 ] && [ "$secs" -ge $((tmo - 1)) ]; then
            st=timeout detail="killed after $tmo s: $last"
        elif [ "$suite" = kselftests ]; then
            case $rc in
                0) st=pass detail="" ;;
                4) st=skip detail="KSFT_SKIP: $last" ;;
                *) st=fail detail="exit $rc: $last" ;;
            esac
        else
            # libtest: "test result: ok. 1 passed; 0 failed; 0 ignored; ..."; a panic is exit 101.
            res=$(grep -m 1 '^test result:' suite.log)
            case "$rc:$res" in
                "0:test result: ok. 1 passed; 0 failed; 0 ignored"*) st=pass detail="" ;;
                "0:test result: ok. 0 passed; 0 failed; 1 ignored"*) st=ignored detail="#[ignore]" ;;
                0:*) st=fail detail="the binary ran no test of that name (${res:-no summary})" ;;
                101:*)
                    where=$(grep -m 1 "panicked at" suite.log | sed 's/.*panicked at //; s/:$//')
                    msg=$(grep -A 1 -m 1 "panicked at" suite.log | tail -n 1)
                    st=fail detail=$(echo "panicked at $where: $msg" | tr -s ' \t' ' ' | cut -c1-200) ;;
                *) st=fail detail="exit $rc (killed or crashed): $last" ;;
            esac
        fi
        echo "OUTCOME $suite $mode $name $st $secs $detail"
        if [ "$st" != pass ] && [ "$st" != skip ] && [ "$st" != ignored ]; then
            echo "--- $suite $name (tdx=$mode) $st after $secs s, the end of its output:"
            tail -n 6 suite.log
        fi
    done
    echo "--- $suite (tdx=$mode): $(($(cut -d. -f1 /proc/uptime) - t_suite)) s"
}

# tdx=hw on a host without TDX: insmod fails with ENODEV and one clear line.
dmesg -c >/dev/null
out=$(insmod ./kvm.ko tdx=hw 2>&1); rc=$?
check insmod_tdx_hw_without_tdx_fails_enodev "$rc" 19
case "$out" in *"No such device"*) pass insmod_tdx_hw_is_enodev ;; *) fail insmod_tdx_hw_is_enodev "$out" ;; esac
# busybox insmod tries finit_module, then init_module: one line per attempt, always the same.
n=$(dmesg | grep 'tdx=hw' | sed 's/^\[[^]]*\] //' | sort -u | wc -l)
check insmod_tdx_hw_logs_one_clear_line "$n" 1
out=$(insmod ./kvm.ko tdx=bogus 2>&1); rc=$?
check insmod_tdx_bogus_fails_einval "$rc" 22
case "$out" in *"Invalid argument"*) pass insmod_tdx_bogus_is_einval ;; *) fail insmod_tdx_bogus_is_einval "$out" ;; esac

for mode in $modes; do
    # Without the module the mode's other checks cannot run: the host reports them missing.
    # HOOK(abi): with its kvm_amd companion (kvm-amd.ko: upstream kvm_amd's parameters).
    if insmod ./kvm.ko tdx=$mode && insmod ./kvm-amd.ko; then pass "insmod_tdx_$mode"; else fail "insmod_tdx_$mode"; continue; fi
    check "dev_kvm_mode_0600_tdx_$mode" "$(stat -c %a /dev/kvm)" 600
    check "dev_kvm_is_misc_232_tdx_$mode" "$(stat -c '%t:%T' /dev/kvm)" "a:e8"
    check "module_kvm_param_tdx_is_mode_tdx_$mode" "$(cat /sys/module/kvm/parameters/tdx)" "$mode"
    check "module_kvm_force_emulation_prefix_is_0_tdx_$mode" \
        "$(cat /sys/module/kvm/parameters/force_emulation_prefix)" 0
    # HOOK(abi): what the SVM backend uses, in upstream kvm_amd's formats.
    p=/sys/module/kvm_amd/parameters
    check "module_kvm_amd_params_tdx_$mode" \
        "$(cat $p/avic $p/npt $p/nested $p/nrips $p/sev $p/sev_es $p/sev_snp $p/vnmi | tr '\n' ' ')" \
        "N Y 0 0 N N N N "
    client_results "$mode"
    for suite in $suites; do suite_outcomes "$suite" "$mode"; done
    if [ "$mode" = emulated ]; then
        # Figures, not checks: SEAMCALLs per 2 MiB pre-faulted and per partial conversion;
        # 256 MiB pre-faults (shared, private 2M and 4K) and INIT_MEM_REGION of 16 MiB.
        ./guest-client --bench-huge
        ./guest-client --bench-prefault
        # The run loop: ns per KVM_RUN round trip to userspace, per in-kernel exit, per 4 KiB
        # NPT fault while a guest touches 256 MiB.
        ./guest-client --bench-run
        if echo "$selftest_ops" > /sys/kernel/debug/tdx_kvm/selftest; then pass selftest_single_writer; else fail selftest_single_writer; fi
        pids=""
        for i in 1 2 3; do ( echo "$half_ops" > /sys/kernel/debug/tdx_kvm/selftest && echo ok > st.$i ) & pids="$pids $!"; done
        wait $pids # not a bare wait: the watchdog runs in the background
        for i in 1 2 3; do if [ -f st.$i ]; then pass selftest_concurrent_writer_$i; else fail selftest_concurrent_writer_$i; fi; done
        check selftest_bad_count_is_einval "$( (echo 0 > /sys/kernel/debug/tdx_kvm/selftest) 2>&1 | grep -c 'Invalid argument')" 1
    fi
    # A SEAMCALL on a CPU without VMX operation raises #UD: the module's exception-table entry
    # must turn it into TDX_SEAMCALL_UD (an oops would end the run).
    probe=$(cat /sys/kernel/debug/tdx_kvm/seamcall_probe)
    case "$probe" in
        *"status 0x8000ff0000000006 TDX_SEAMCALL_UD"*) pass "seamcall_fault_is_caught_as_seamcall_ud_tdx_$mode" ;;
        *) fail "seamcall_fault_is_caught_as_seamcall_ud_tdx_$mode" "$probe" ;;
    esac
    case "$probe" in
        *"VMXOFF outside VMX operation: fault caught"*) pass "vmxoff_fault_is_caught_tdx_$mode" ;;
        *) fail "vmxoff_fault_is_caught_tdx_$mode" "$probe" ;;
    esac
    echo "--- stats after tdx=$mode"
    cat /sys/kernel/debug/tdx_kvm/stats
    left=$(grep -v pamt_pages /sys/kernel/debug/tdx_kvm/stats | awk '{s += $2} END {print s + 0}')
    check "no_pages_left_tdx_$mode" "$left" 0
    if rmmod kvm_amd && rmmod kvm; then pass "rmmod_tdx_$mode"; else fail "rmmod_tdx_$mode"; fi # HOOK(abi)
done
dmesg | grep -E 'kvm:|selftest' | tail -n 40
exit $status
RUN

for s in "${suites[@]}"; do scripts/expectations.sh names "$s" "$work/tests/$s.txt"; done >"$work/suite-checks"
expected_checks >"$work/expected"
initrd="$work/initramfs.cpio.gz"
scripts/initramfs.sh "$initrd" "$work/tests"
log=${GUEST_LOG:-$repo/target/guest-suite.log}
mkdir -p "$(dirname "$log")"
set +e
scripts/qemu-run.sh --timeout "$qemu_timeout" --results "$work/raw-results" "$BZIMAGE" "$initrd" "$log"
rc=$?
set -e
[[ -f "$work/raw-results" ]] || : >"$work/raw-results"

# The upstream suites' outcomes, judged against tests/expected/ (scripts/expectations.sh);
# kept for `scripts/expectations.sh update`.
grep '^OUTCOME ' "$work/raw-results" >"$work/outcomes" || true
outcomes_keep=${GUEST_OUTCOMES:-$repo/target/guest-outcomes.txt}
cp "$work/outcomes" "$outcomes_keep"
{
    grep '^RESULT ' "$work/raw-results" || true
    for s in "${suites[@]}"; do scripts/expectations.sh verdicts "$s" "$work/tests/$s.txt" "$work/outcomes"; done
} >"$work/results"

# One verdict per expected check (a FAIL among repeated lines wins), then the lines nobody
# expected; "missing" and "unexpected" are failures.
awk '
    FNR == NR { order[++n] = $1; want[$1] = 1; next }
    $1 != "RESULT" { next }
    {
        name = $3
        if (!(name in want)) { print "RESULT FAIL " name " unexpected: not in the suite list of checks"; next }
        if (name in got) {
            if ($2 == "FAIL" || got[name] != "FAIL") { got[name] = $2; line[name] = $0 }
            dup[name] = 1
        } else { got[name] = $2; line[name] = $0 }
    }
    END {
        for (i = 1; i <= n; i++) {
            name = order[i]
            if (!(name in got)) print "RESULT FAIL " name " missing: no result line"
            else if (name in dup && got[name] != "FAIL") print "RESULT FAIL " name " reported more than once"
            else print line[name]
        }
    }' "$work/expected" "$work/results" >"$work/verdicts"

want=$(wc -l <"$work/expected")
got=$(grep -c '^RESULT ' "$work/results" || true)
passed=$(grep -c '^RESULT PASS' "$work/verdicts" || true)
failed=$(grep -c '^RESULT FAIL' "$work/verdicts" || true)
skipped=$(grep -c '^RESULT SKIP' "$work/verdicts" || true)
xfailed=$(grep -c '^RESULT XFAIL' "$work/verdicts" || true)

# The upstream suites: one line per test (its verdict against the expectations), then one
# summary line each, counts per state and the time the guest spent in it.
suite_lines=()
for s in "${suites[@]}"; do
    prefix=$([[ $s == kselftests ]] && echo kselftest_ || echo "$s/")
    v=$(awk -v p="$prefix" 'index($3, p) == 1' "$work/verdicts")
    echo "=== $s: one line per test and tdx= mode (PASS, SKIP, XFAIL = failed as expected, FAIL)"
    [[ -z "$v" ]] || printf '%s\n' "$v" | sed 's/^RESULT //'
    c() { if [[ -z "$v" ]]; then echo 0; else grep -c "^RESULT $1 " <<<"$v" || true; fi; }
    now=$(grep -c ' now passes: update expectations' <<<"$v" || true)
    secs=$(awk -v s="$s" '$2 == s { t += $6 } END { print t + 0 }' "$work/outcomes")
    line="$s: $(c PASS) passed, $(c FAIL) failed, $(c SKIP) skipped, $(c XFAIL) xfailed"
    line+=" ($(grep -c . <<<"$v") checks, $now of the failures now pass, ${secs} s in the guest)"
    suite_lines+=("$line")
done

if grep -qE '^RESULT FAIL [^ ]+ (missing|unexpected|reported more than once)' "$work/verdicts"; then
    echo "guest-suite: checks without exactly one result line (each one a failure):"
    grep -E '^RESULT FAIL [^ ]+ (missing|unexpected|reported more than once)' "$work/verdicts" | sed 's/^/   /'
fi
if [[ $rc -ne 0 && $rc -ne 3 ]]; then
    echo "guest-suite: the kernel log shows an error or the run did not finish (qemu-run exit $rc); see $log: one more failure"
    if [[ $rc -eq 2 ]]; then
        echo "guest-suite: where the guest was: its last progress lines, then its last lines"
        grep -E '^(RESULT|OUTCOME|---) ' "$log" | tail -n 8 | cut -c1-200 | sed 's/^/    /'
        tail -n 6 "$log" | cut -c1-200 | sed 's/^/    | /'
    fi
    failed=$((failed + 1))
elif [[ $rc -eq 3 && $failed -eq 0 ]]; then
    echo "guest-suite: the guest script failed without a failed check (qemu-run exit 3); see $log: one more failure"
    failed=$((failed + 1))
fi
if [[ $skipped -ne 0 ]]; then
    echo "guest-suite: skipped (not run in that mode, not passed):"
    grep '^RESULT SKIP' "$work/verdicts" | sed 's/^/   /'
fi
if [[ $failed -ne 0 ]]; then
    echo "guest-suite: failed:"
    grep '^RESULT FAIL' "$work/verdicts" | sed 's/^/   /'
fi
echo "guest-suite: $want checks expected, $got result lines received; outcomes of the upstream suites in $outcomes_keep"
printf '%s\n' "${suite_lines[@]}"
echo "guest: $passed passed, $failed failed, $skipped skipped, $xfailed xfailed"
[[ $failed -eq 0 ]]
