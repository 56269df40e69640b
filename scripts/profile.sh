#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Developer tool, not a test: a sampling profile of the test guest's kernel (L1, where kvm.ko
# runs) while it runs one command line, e.g. a fault-heavy selftest. QEMU's TCG has no PMU for
# perf, so the host samples every vCPU's RIP through QEMU's monitor (`info registers -a`, every
# ~10 ms) and maps the RIPs to symbols of the kernel (System.map, KASLR offset from the guest's
# /proc/kallsyms) and of the loaded modules (their sections from /sys/module/*/sections).
#
#   scripts/profile.sh [--mode off|emulated] [--upstream] [--top N] 'COMMANDS'
#   e.g. scripts/profile.sh './kselftests/dirty_log_perf_test -b 64M -i 4'
#
# --upstream stages upstream kvm_amd (guest-try's --upstream) and maps the samples to its
# modules: the COMMANDS then switch to it themselves, e.g. 'rmmod kvm_amd kvm; insmod
# upstream/irqbypass.ko; insmod upstream/kvm.ko; insmod upstream/kvm-amd.ko; ./kselftests/...'.
# Prints the top symbols (self samples) and writes all samples to target/profile/.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
top=40
args=()
upstream=no
while [[ $# -gt 1 ]]; do
    case "$1" in
        --top) top=$2; shift 2 ;;
        --mode) args+=("$1" "$2"); shift 2 ;;
        --upstream) args+=("$1"); upstream=yes; shift ;;
        *) break ;;
    esac
done
[[ $# -eq 1 ]] || { sed -n '9,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }
out=$repo/target/profile
mkdir -p "$out"
rm -f "$out"/mon "$out"/rips.txt
# The guest prints where the kernel and the modules were loaded, then runs the commands while
# the sampler records; markers in the console log bound the sampled window.
cmds="grep -E ' (_text|_stext)\$' /proc/kallsyms | sed 's/^/PROFILE-KSYM /'
for m in /sys/module/*/sections; do for s in \$m/.text* \$m/.noinstr.text \$m/.init.text; do [ -f \$s ] && echo \"PROFILE-SECT \$(basename \$(dirname \$m)) \$(basename \$s) \$(cat \$s)\"; done; done
echo PROFILE-START
$1
echo PROFILE-END"
# Module sections are only known once loaded: print them again at the end (the command line may
# load other modules, e.g. upstream kvm_amd).
cmds="$cmds
for m in /sys/module/*/sections; do for s in \$m/.text* \$m/.noinstr.text; do [ -f \$s ] && echo \"PROFILE-SECT \$(basename \$(dirname \$m)) \$(basename \$s) \$(cat \$s)\"; done; done"
python3 scripts/profile-sample.py "$out/mon" "$out/rips.txt" "$repo/target/guest-try.log" &
sampler=$!
set +e
TDXKVM_QEMU_EXTRA="-monitor unix:$out/mon,server=on,wait=off" \
    bash scripts/guest-try.sh "${args[@]}" "$cmds"
rc=$?
set -e
wait "$sampler" || true
source scripts/kernel-env.sh >/dev/null
if [[ $upstream == yes ]]; then
    up=$(scripts/build-kvm-amd.sh)
    modules=(--module kvm="$up/kvm.ko" --module kvm_amd="$up/kvm-amd.ko")
else
    modules=(--module kvm="$repo/kvm.ko" --module kvm_amd="$repo/kvm-amd.ko")
fi
python3 scripts/profile-map.py --top "$top" --system-map "$KDIR/System.map" \
    --log "$repo/target/guest-try.log" \
    "${modules[@]}" "$out/rips.txt" | tee "$out/report.txt"
exit $rc
