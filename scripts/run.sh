#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# `make run`: builds the kernel (or reuses the cache), the module and the guest client, boots
# QEMU (TCG), loads kvm.ko with tdx=emulated and shows what it did: the load message, the
# client's /dev/kvm checks, an in-kernel self test of the TD memory path, the page counts.
# Exits non-zero if any step failed (insmod, the client, the self test, rmmod: the guest script's
# exit status) or the console shows a kernel error or the run did not finish (qemu-run.sh's
# status); the report is printed either way.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# The upstream suites (kvm-ioctls' tests, the KVM selftests) belong to `make test` only.
upstream_suites=no
# shellcheck source=scripts/guest-build.sh
source scripts/guest-build.sh
cat > "$work/tests/run.sh" <<'RUN'
#!/bin/sh
cd /tests
failed=""
step_failed() { failed="$failed $1"; echo "## FAILED: $1"; }
echo "## insmod kvm.ko tdx=emulated"
if insmod ./kvm.ko tdx=emulated; then dmesg | grep 'kvm:'; else step_failed insmod; fi
# HOOK(abi): the kvm_amd companion (upstream kvm_amd's parameters, answered by kvm.ko).
if insmod ./kvm-amd.ko; then echo "## kvm_amd: avic=$(cat /sys/module/kvm_amd/parameters/avic) npt=$(cat /sys/module/kvm_amd/parameters/npt)"; else step_failed "insmod kvm-amd"; fi
echo "## /dev/kvm: $(ls -l /dev/kvm)"
echo "## userspace checks (kvm-ioctls)"
./guest-client emulated >client.log 2>&1
crc=$?
tail -n 1 client.log
[ "$crc" = 0 ] || step_failed "guest-client (exit $crc)"
echo "## in-kernel self test: 2000 random faults/zaps/conversions on a TD, mirror == S-EPT after each"
if echo 2000 > /sys/kernel/debug/tdx_kvm/selftest; then
    dmesg | grep 'selftest run' | tail -n 1
else
    step_failed selftest
fi
echo "## the real TDX module on this CPU? (one SEAMCALL; without VMX it faults and is caught)"
cat /sys/kernel/debug/tdx_kvm/seamcall_probe
echo "## page counts (all VMs closed)"
cat /sys/kernel/debug/tdx_kvm/stats
rmmod kvm_amd || step_failed "rmmod kvm_amd" # HOOK(abi): before kvm
if rmmod kvm; then echo "## rmmod ok"; else step_failed rmmod; fi
if [ -n "$failed" ]; then echo "## failed steps:$failed"; exit 1; fi
RUN
scripts/initramfs.sh "$work/initrd.cpio.gz" "$work/tests" >/dev/null
log="$repo/target/run.log"
mkdir -p "$repo/target"
set +e
scripts/qemu-run.sh --timeout "${QEMU_TIMEOUT:-600}" "$BZIMAGE" "$work/initrd.cpio.gz" "$log" >/dev/null
rc=$?
set -e
echo "=== kvm.ko report (full console log: $log) ==="
# Kernel messages show up twice (console and the script's dmesg): keep each line once.
sed -n '/===TDXKVM-BEGIN===/,/===TDXKVM-RESULTS===/p' "$log" | grep -v '===TDXKVM' | awk '!seen[$0]++' \
    | sed 's/^\[ *[0-9.]*\] //' || true
case $rc in
    0) echo "=== make run: ok" ;;
    1) echo "=== make run: FAILED: the console log shows a kernel error (qemu-run exit 1; see $log)" ;;
    2) echo "=== make run: FAILED: the run did not finish (qemu-run exit 2; see $log)" ;;
    3) echo "=== make run: FAILED: a step in the guest failed (see '## FAILED' above)" ;;
    *) echo "=== make run: FAILED: qemu-run exit $rc (see $log)" ;;
esac
exit "$rc"
