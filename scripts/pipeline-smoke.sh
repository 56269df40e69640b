#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# End-to-end check of the kernel-in-QEMU pipeline with a tiny Rust module (scripts/smoke-module):
#   env (scripts/kernel-env.sh) -> kernel (scripts/build-kernel.sh, cached) -> out-of-tree module
#   build (make -C $KDIR M=... modules) -> initramfs whose run.sh does insmod/rmmod
#   (scripts/initramfs.sh) -> boot in QEMU and judge the console (scripts/qemu-run.sh).
# Prints each stage's time, then "1 passed, 0 failed" on success or "0 passed, 1 failed".
# The serial log is kept in $TDXKVM_CACHE/logs/pipeline-smoke.log. QEMU_TIMEOUT (default 300 s)
# bounds the boot.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
passed=0
finish() {
    rm -rf "$work"
    if ((passed)); then
        echo "1 passed, 0 failed"
    else
        echo "pipeline-smoke: FAILED" >&2
        echo "0 passed, 1 failed"
    fi
}
trap finish EXIT

t=$SECONDS
# shellcheck source=scripts/kernel-env.sh
source "$here/kernel-env.sh"
t_env=$((SECONDS - t))

t=$SECONDS
"$here/build-kernel.sh"
t_kernel=$((SECONDS - t))

# Build from a copy so the source dir gets no build products.
t=$SECONDS
mkdir -p "$work/module" "$work/tests"
cp "$here/smoke-module/Kbuild" "$here/smoke-module/smoke_main.rs" "$work/module/"
make -C "$KDIR" M="$work/module" "${KMAKE_ARGV[@]}" modules
cp "$work/module/tdxkvm_smoke.ko" "$work/tests/"
t_module=$((SECONDS - t))

cat >"$work/tests/run.sh" <<'EOF'
# Guest side of scripts/pipeline-smoke.sh (run by the initramfs /init from /tests).
# Prints one "RESULT PASS|FAIL name" line per step; exits non-zero if any step failed.
fail=0
step() {
    name=$1
    shift
    if "$@"; then
        echo "RESULT PASS $name"
    else
        echo "RESULT FAIL $name"
        fail=1
    fi
}
step insmod insmod /tests/tdxkvm_smoke.ko
step listed grep -q '^tdxkvm_smoke ' /proc/modules
step load-message sh -c "dmesg | grep -q 'tdxkvm_smoke: smoke module loaded'"
step rmmod rmmod tdxkvm_smoke
step unlisted sh -c "! grep -q '^tdxkvm_smoke ' /proc/modules"
step unload-message sh -c "dmesg | grep -q 'tdxkvm_smoke: smoke module unloaded'"
exit $fail
EOF

t=$SECONDS
"$here/initramfs.sh" "$work/initramfs.cpio.gz" "$work/tests"
t_initramfs=$((SECONDS - t))

log_dir="$TDXKVM_CACHE/logs"
mkdir -p "$log_dir"
t=$SECONDS
"$here/qemu-run.sh" --results "$work/results" "$BZIMAGE" "$work/initramfs.cpio.gz" \
    "$log_dir/pipeline-smoke.log"
t_boot=$((SECONDS - t))

# qemu-run.sh exited 0: no kernel error, end marker seen, every step passed. Make sure the
# steps did run.
npass=$(grep -c '^RESULT PASS' "$work/results" || true)
if [[ "$npass" != 6 ]]; then
    echo "pipeline-smoke: expected 6 RESULT PASS lines, got $npass" >&2
    exit 1
fi

echo "pipeline-smoke: env ${t_env} s, kernel ${t_kernel} s, module ${t_module} s," \
    "initramfs ${t_initramfs} s, boot+tests ${t_boot} s; kernel $BZIMAGE;" \
    "serial log $log_dir/pipeline-smoke.log"
passed=1
