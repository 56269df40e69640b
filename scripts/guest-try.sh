#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Developer loop, not a test: boots the pipeline guest with kvm.ko and runs one shell command
# line in it, from /tests (the guest client is ./guest-client, the selftests are
# ./kselftests/NAME, kvm-ioctls' suite is ./kvm-ioctls-tests). Builds like the guest suite
# (kernel from the cache, module, client, the upstream suites) and prints the guest's output.
#
#   scripts/guest-try.sh [--mode off|emulated] [--timeout SEC] [--upstream] 'COMMANDS'
#   e.g. scripts/guest-try.sh './kselftests/cpuid_test; ./guest-client off'
#
# --upstream also stages upstream kvm_amd for this kernel (scripts/build-kvm-amd.sh) in
# /tests/upstream, to compare in the same boot: `rmmod kvm_amd kvm; insmod upstream/irqbypass.ko;
# insmod upstream/kvm.ko; insmod upstream/kvm-amd.ko; ...; rmmod kvm_amd kvm irqbypass;
# insmod ./kvm.ko tdx=off` (ours is loaded first, as always, with its kvm_amd parameter
# module, which holds kvm: `rmmod kvm` alone fails, and every insmod after it then fails
# with "File exists" and leaves ours loaded; check with lsmod).
#
# The console log is kept in target/guest-try.log. Exits with qemu-run.sh's status (1 when the
# kernel log shows an Oops, KASAN, lockdep or WARN report).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mode=off
timeout_s=900
with_upstream=no
while [[ $# -gt 1 ]]; do
    case "$1" in
        --mode) mode=$2; shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --upstream) with_upstream=yes; shift ;;
        *) break ;;
    esac
done
[[ $# -eq 1 ]] || { sed -n '8,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }
cmds=$1
# shellcheck source=scripts/guest-build.sh
source scripts/guest-build.sh
if [[ $with_upstream == yes ]]; then
    mkdir -p "$work/tests/upstream"
    cp "$(scripts/build-kvm-amd.sh)"/{irqbypass,kvm,kvm-amd}.ko "$work/tests/upstream/"
fi
{
    echo "#!/bin/sh"
    echo "cd /tests"
    echo "insmod ./kvm.ko tdx=$mode || exit 1"
    echo "insmod ./kvm-amd.ko || exit 1" # HOOK(abi): kvm_amd's parameters
    echo "echo '--- guest-try: running the command line'"
    printf '%s\n' "$cmds"
    echo "echo \"--- guest-try: command line exit \$?\""
    echo "dmesg | tail -n 60"
    echo "rmmod kvm_amd" # HOOK(abi): before kvm, which it uses
    echo "rmmod kvm"
} >"$work/tests/run.sh"
initrd="$work/initramfs.cpio.gz"
scripts/initramfs.sh "$initrd" "$work/tests"
log=$repo/target/guest-try.log
mkdir -p "$(dirname "$log")"
scripts/qemu-run.sh --timeout "$timeout_s" "$BZIMAGE" "$initrd" "$log"
