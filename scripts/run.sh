#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# `make run`: builds the kernel (or reuses the cache), the module and the guest client, boots
# QEMU (TCG), loads tdx_kvm.ko with tdx=emulated and shows what it did: the load message, the
# client's /dev/kvm checks, an in-kernel self test of the TD memory path, the page counts.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=scripts/guest-build.sh
source scripts/guest-build.sh
cat > "$work/tests/run.sh" <<'RUN'
#!/bin/sh
cd /tests
echo "## insmod tdx_kvm.ko tdx=emulated"
insmod ./tdx_kvm.ko tdx=emulated && dmesg | grep tdx_kvm
echo "## /dev/kvm: $(ls -l /dev/kvm)"
echo "## userspace checks (kvm-ioctls)"
./guest-client emulated | tail -n 1
echo "## in-kernel self test: 2000 random faults/zaps/conversions on a TD, mirror == S-EPT after each"
echo 2000 > /sys/kernel/debug/tdx_kvm/selftest && dmesg | grep 'selftest run' | tail -n 1
echo "## the real TDX module on this CPU? (one SEAMCALL; without VMX it faults and is caught)"
cat /sys/kernel/debug/tdx_kvm/seamcall_probe
echo "## page counts (all VMs closed)"
cat /sys/kernel/debug/tdx_kvm/stats
rmmod tdx_kvm && echo "## rmmod ok"
RUN
scripts/initramfs.sh "$work/initrd.cpio.gz" "$work/tests" >/dev/null
log="$repo/target/run.log"
mkdir -p "$repo/target"
scripts/qemu-run.sh --timeout "${QEMU_TIMEOUT:-600}" "$BZIMAGE" "$work/initrd.cpio.gz" "$log" >/dev/null || true
echo "=== tdx_kvm report (full console log: $log) ==="
# Kernel messages show up twice (console and the script's dmesg): keep each line once.
sed -n '/===TDXKVM-BEGIN===/,/===TDXKVM-RESULTS===/p' "$log" | grep -v '===TDXKVM' | awk '!seen[$0]++' \
    | sed 's/^\[ *[0-9.]*\] //'
