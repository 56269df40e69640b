#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Builds a gzipped cpio initramfs: busybox-static, an /init script, and a directory of test files.
#
#   scripts/initramfs.sh OUTPUT.cpio.gz TESTS_DIR
#
# TESTS_DIR (module .ko files, static test binaries, ...) is copied to /tests in the image and
# must hold an executable-or-not `run.sh`, which /init runs with busybox sh from /tests.
# /init mounts proc, sysfs, devtmpfs, debugfs and a tmpfs on /tmp, then prints on the serial
# console:
#     ===TDXKVM-BEGIN===
#     ... everything run.sh prints (stdout and stderr) ...
#     ===TDXKVM-RESULTS===
#     ... every line run.sh printed that starts with "RESULT " (e.g. "RESULT PASS name",
#         "RESULT FAIL name", "RESULT SKIP name") or "OUTCOME " (an upstream suite's test
#         outcome, judged on the build host), repeated together ...
#     ===TDXKVM-END rc=<run.sh exit status>===
# and powers off at once (poweroff -f). scripts/qemu-run.sh looks for these markers.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 OUTPUT.cpio.gz TESTS_DIR" >&2
    exit 2
fi
out=$1
tests=$2
[[ -f "$tests/run.sh" ]] || { echo "initramfs: $tests/run.sh is missing" >&2; exit 2; }

# busybox-static installs a statically linked /bin/busybox (the image has no libc).
busybox=/bin/busybox
if [[ ! -x "$busybox" ]] || ldd "$busybox" >/dev/null 2>&1; then
    echo "initramfs: need a static $busybox (apt-get install busybox-static)" >&2
    exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,tests,etc,root}
cp "$busybox" "$root/bin/busybox"
cp -a "$tests/." "$root/tests/"

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
# initramfs /init (written by scripts/initramfs.sh): mount, run /tests/run.sh, report, power off.
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
echo "===TDXKVM-BEGIN==="
cd /tests
{ sh ./run.sh; echo $? >/tmp/run.rc; } 2>&1 | tee /tmp/run.log
rc=$(cat /tmp/run.rc)
echo "===TDXKVM-RESULTS==="
grep -E '^(RESULT|OUTCOME) ' /tmp/run.log
echo "===TDXKVM-END rc=$rc==="
poweroff -f
EOF
chmod +x "$root/init"

mkdir -p "$(dirname "$out")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) \
    | gzip -1 >"$out_abs"
echo "initramfs: wrote $out ($(du -h "$out_abs" | cut -f1))"
