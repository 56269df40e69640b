#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# The in-guest suite: builds the pipeline kernel (or reuses the cache), tdx_kvm.ko and the
# static guest client, boots QEMU (TCG) and runs, for each tdx= mode, the client's /dev/kvm
# tests, the module-parameter checks and (tdx=emulated) the in-kernel self test with several
# writers at once. Any oops, KASAN report, lockdep splat or WARN fails the run.
#
#   scripts/guest-suite.sh [--selftest-ops N]
#
# Prints one "RESULT PASS|FAIL name" line per test and "N passed, M failed" last.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
selftest_ops=${SELFTEST_OPS:-10000}
[[ "${1:-}" == --selftest-ops ]] && selftest_ops=$2

# shellcheck source=scripts/guest-build.sh
source scripts/guest-build.sh
cat > "$work/tests/run.sh" <<RUN
#!/bin/sh
# Runs inside the guest (busybox sh).
cd /tests
pass() { echo "RESULT PASS \$1"; }
fail() { echo "RESULT FAIL \$1 \$2"; }
check() { if [ "\$2" = "\$3" ]; then pass "\$1"; else fail "\$1" "(got '\$2', want '\$3')"; fi; }

# tdx=hw on a host without TDX: insmod fails with ENODEV and one clear line.
dmesg -c >/dev/null
out=\$(insmod ./tdx_kvm.ko tdx=hw 2>&1); rc=\$?
check insmod_tdx_hw_without_tdx_fails_enodev "\$rc" 19
case "\$out" in *"No such device"*) pass insmod_tdx_hw_is_enodev ;; *) fail insmod_tdx_hw_is_enodev "\$out" ;; esac
# busybox insmod tries finit_module, then init_module: one line per attempt, always the same.
n=\$(dmesg | grep 'tdx=hw' | sed 's/^\[[^]]*\] //' | sort -u | wc -l)
check insmod_tdx_hw_logs_one_clear_line "\$n" 1
out=\$(insmod ./tdx_kvm.ko tdx=bogus 2>&1); rc=\$?
check insmod_tdx_bogus_fails_einval "\$rc" 22
case "\$out" in *"Invalid argument"*) pass insmod_tdx_bogus_is_einval ;; *) fail insmod_tdx_bogus_is_einval "\$out" ;; esac

for mode in off emulated auto; do
    if insmod ./tdx_kvm.ko tdx=\$mode; then pass "insmod_tdx_\$mode"; else fail "insmod_tdx_\$mode"; continue; fi
    check "dev_kvm_mode_0600_tdx_\$mode" "\$(stat -c %a /dev/kvm)" 600
    check "dev_kvm_is_misc_232_tdx_\$mode" "\$(stat -c '%t:%T' /dev/kvm)" "a:e8"
    ./guest-client \$mode > client.log 2>&1
    sed -n 's/^test \(.*\) \[tdx=\(.*\)\] \.\.\. ok\$/RESULT PASS \1_tdx_\2/p; s/^test \(.*\) \[tdx=\(.*\)\] \.\.\. FAILED: \(.*\)\$/RESULT FAIL \1_tdx_\2 \3/p' client.log
    tail -n 1 client.log
    if [ \$mode = emulated ]; then
        if echo $selftest_ops > /sys/kernel/debug/tdx_kvm/selftest; then pass selftest_single_writer; else fail selftest_single_writer; fi
        for i in 1 2 3; do ( echo $((selftest_ops / 2)) > /sys/kernel/debug/tdx_kvm/selftest && echo ok > st.\$i ) & done
        wait
        for i in 1 2 3; do if [ -f st.\$i ]; then pass selftest_concurrent_writer_\$i; else fail selftest_concurrent_writer_\$i; fi; done
        check selftest_bad_count_is_einval "\$( (echo 0 > /sys/kernel/debug/tdx_kvm/selftest) 2>&1 | grep -c 'Invalid argument')" 1
    fi
    # A SEAMCALL on a CPU without VMX operation raises #UD: the module's exception-table entry
    # must turn it into TDX_SEAMCALL_UD (an oops would end the run).
    probe=\$(cat /sys/kernel/debug/tdx_kvm/seamcall_probe)
    case "\$probe" in
        *"status 0x8000ff0000000006 TDX_SEAMCALL_UD"*) pass "seamcall_fault_is_caught_as_seamcall_ud_tdx_\$mode" ;;
        *) fail "seamcall_fault_is_caught_as_seamcall_ud_tdx_\$mode" "\$probe" ;;
    esac
    case "\$probe" in
        *"VMXOFF outside VMX operation: fault caught"*) pass "vmxoff_fault_is_caught_tdx_\$mode" ;;
        *) fail "vmxoff_fault_is_caught_tdx_\$mode" "\$probe" ;;
    esac
    echo "--- stats after tdx=\$mode"
    cat /sys/kernel/debug/tdx_kvm/stats
    left=\$(grep -v pamt_pages /sys/kernel/debug/tdx_kvm/stats | awk '{s += \$2} END {print s + 0}')
    check "no_pages_left_tdx_\$mode" "\$left" 0
    if rmmod tdx_kvm; then pass "rmmod_tdx_\$mode"; else fail "rmmod_tdx_\$mode"; fi
done
dmesg | grep -E 'tdx_kvm|selftest' | tail -n 40
RUN

initrd="$work/initramfs.cpio.gz"
scripts/initramfs.sh "$initrd" "$work/tests"
log=${GUEST_LOG:-$repo/target/guest-suite.log}
mkdir -p "$(dirname "$log")"
set +e
scripts/qemu-run.sh --timeout "${QEMU_TIMEOUT:-900}" --results "$work/results" "$BZIMAGE" "$initrd" "$log"
rc=$?
set -e
passed=$(grep -c '^RESULT PASS' "$work/results" 2>/dev/null || true)
failed=$(grep -c '^RESULT FAIL' "$work/results" 2>/dev/null || true)
if [[ $rc -ne 0 && $rc -ne 3 ]]; then
    echo "guest-suite: the kernel log shows an error or the run did not finish (qemu-run exit $rc); see $log"
    failed=$((failed + 1))
fi
echo "guest: ${passed:-0} passed, ${failed:-0} failed"
[[ ${failed:-0} -eq 0 ]]
