#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Boots a kernel + initramfs (from scripts/initramfs.sh) in QEMU's software CPU and judges the log.
#
#   scripts/qemu-run.sh [--timeout SEC] [--append 'ARGS'] [--mem 2G] [--smp 2]
#                       [--results FILE] BZIMAGE INITRD LOG
#
# Runs qemu-system-x86_64 -machine q35 -cpu max (TCG: this host's /dev/kvm can't run ordinary
# guests) -nographic -no-reboot, with 'console=ttyS0 panic=-1 loglevel=7' (no `quiet`: WARN and
# lockdep splats are KERN_WARNING and `quiet` would hide them) plus --append. The serial console
# goes to stdout and to LOG (carriage returns stripped). The run is killed after --timeout
# seconds (default 300, or $QEMU_TIMEOUT).
#
# Exit status:
#   0  end marker seen, run.sh exited 0, no RESULT FAIL line, and no kernel error in the log
#   1  the log shows a kernel error: Oops, BUG:, KASAN:, WARNING:, possible circular locking,
#      lockdep giving up, Kernel panic, general protection fault, UBSAN:
#   2  the end marker is missing (timeout, hang, or the guest died before the end)
#   3  the tests themselves failed (run.sh exit status not 0, or a RESULT FAIL line)
#   64 usage error
# A kernel error before the kernel runs /init (the test kernel's own; none of our code is loaded
# yet) stops that boot, keeps its log as LOG.boot-error and boots once more (see below).
# The RESULT lines (between the markers that /init prints; without the end marker, those printed
# as the run went) are printed at the end and, with --results FILE, written to FILE together
# with the OUTCOME lines (the upstream suites' raw outcomes, which scripts/guest-suite.sh
# judges; they are not counted here).
set -euo pipefail

timeout_s=${QEMU_TIMEOUT:-300}
append=""
mem=2G
smp=2
results=""
usage() {
    sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 64
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --timeout) timeout_s=$2; shift 2 ;;
        --append) append=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --smp) smp=$2; shift 2 ;;
        --results) results=$2; shift 2 ;;
        -h | --help) usage ;;
        --*) echo "qemu-run: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
[[ $# -eq 3 ]] || usage
kernel=$1
initrd=$2
log=$3
for f in "$kernel" "$initrd"; do
    [[ -f "$f" ]] || { echo "qemu-run: $f not found" >&2; exit 64; }
done
mkdir -p "$(dirname "$log")"

cmdline="console=ttyS0 panic=-1 loglevel=7 $append"
qemu=(qemu-system-x86_64 -machine q35 -cpu max -m "$mem" -smp "$smp" -nographic -no-reboot
    -kernel "$kernel" -initrd "$initrd" -append "$cmdline")
# Developer hook (scripts/profile.sh): extra QEMU arguments, e.g. a monitor socket. Never set by
# the test pipeline.
if [[ -n "${TDXKVM_QEMU_EXTRA:-}" ]]; then
    read -r -a extra <<<"$TDXKVM_QEMU_EXTRA"
    qemu+=("${extra[@]}")
fi
echo "qemu-run: ${qemu[*]}" >&2
echo "qemu-run: timeout ${timeout_s} s, log $log" >&2

# Kernel errors. Case-sensitive on purpose: the benign boot lines say
# "kasan: KernelAddressSanitizer initialized" and "... MAX_LOCKDEP_SUBCLASSES: 8". Lines
# matching one of `benign` (fixed strings) are not errors. Lockdep's reports begin with
# "WARNING:" or "BUG:"; the two lockdep lines below are those it prints when it gives up.
# Not the bare word "lockdep": any stack trace can hold a "? lockdep_hardirqs_on_prepare"
# frame (the OOM killer's report of a selftest's own out-of-memory did, and failed a run).
patterns=('Oops' 'BUG:' 'KASAN:' 'WARNING:' 'possible circular locking'
    'INFO: lockdep is turned off' 'turning off the locking correctness validator'
    'Kernel panic' 'general protection fault' 'UBSAN:')
benign=('RCU lockdep checking is enabled.')
kernel_errors() { grep -nF "${patterns[@]/#/-e}" "$1" | grep -vF "${benign[@]/#/-e}" || true; }

# A kernel error while the kernel itself boots, before it runs /init (so before any test or
# module of ours exists), is the test kernel's own (seen rarely under TCG: an early interrupt
# in cpu_detect/identify_cpu with KASAN). It is reported, that boot is stopped and kept as
# LOG.boot-error, and the guest is booted once more. Any error after /init starts, or a second
# early one, counts as below.
pidfile=$(mktemp)
trap 'rm -f "$pidfile"' EXIT
t0=$SECONDS
for attempt in 1 2; do
    rm -f "$pidfile"
    : >"$log" # the watcher below must not read a previous run's log
    t0=$SECONDS
    set +e
    (
        timeout -k 10 "$timeout_s" "${qemu[@]}" -pidfile "$pidfile" </dev/null 2>&1 | stdbuf -oL tr -d '\r' | tee "$log"
        exit "${PIPESTATUS[0]}"
    ) &
    run=$!
    early=""
    while kill -0 "$run" 2>/dev/null; do
        grep -qF 'Run /init as init process' "$log" 2>/dev/null && break
        early=$(kernel_errors "$log" 2>/dev/null)
        [[ -n "$early" ]] && break
        sleep 1
    done
    if [[ -n "$early" && $attempt == 1 ]]; then
        kill "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null
        wait "$run"
        set -e
        mv "$log" "$log.boot-error"
        echo "qemu-run: KERNEL ERROR while the test kernel booted (before /init; kept in $log.boot-error):" >&2
        head -n 5 <<<"$early" >&2
        echo "qemu-run: booting again (once)" >&2
        continue
    fi
    wait "$run"
    qemu_rc=$?
    set -e
    break
done
elapsed=$((SECONDS - t0))
echo >&2
echo "qemu-run: QEMU exited with $qemu_rc after ${elapsed} s" >&2

status=0

# Kernel errors anywhere in the log.
errors=$(kernel_errors "$log")
if [[ -n "$errors" ]]; then
    first=$(head -n1 <<<"$errors" | cut -d: -f1)
    echo "qemu-run: KERNEL ERROR in the console log; from line $first of $log:" >&2
    sed -n "${first},$((first + 60))p" "$log" >&2
    echo "qemu-run: matching lines:" >&2
    head -n 20 <<<"$errors" >&2
    status=1
fi

end_line=$(grep -E '^===TDXKVM-END rc=[0-9]+===' "$log" | tail -n1 || true)
if [[ -z "$end_line" ]]; then
    if ((qemu_rc == 124 || qemu_rc == 137)); then
        echo "qemu-run: TIMEOUT after ${timeout_s} s: no end marker" >&2
    else
        echo "qemu-run: no end marker (QEMU exit status $qemu_rc)" >&2
    fi
    ((status)) || status=2
fi

# Result lines: those /init repeats between the RESULTS and END markers. Without the end
# marker (a hang killed by the timeout, a guest that died), the lines run.sh printed as it went
# (after the BEGIN marker) are what there is: each check they do not name stays missing, and
# the exit status says the run did not finish. The last lines of the log say where it stopped.
if [[ -n "$end_line" ]]; then
    block=$(sed -n '/^===TDXKVM-RESULTS===/,/^===TDXKVM-END/p' "$log")
else
    block=$(sed -n '/^===TDXKVM-BEGIN===/,/^===TDXKVM-RESULTS===/p' "$log")
    echo "qemu-run: the run did not finish; the last 25 lines of $log:" >&2
    tail -n 25 "$log" | sed 's/^/    /' >&2
fi
res=$(grep -E '^RESULT ' <<<"$block" || true)
if [[ -n "$results" ]]; then grep -E '^(RESULT|OUTCOME) ' <<<"$block" >"$results" || true; fi
if [[ -n "$res" ]]; then
    echo "qemu-run: results:"
    printf '%s\n' "$res"
fi
npass=$(grep -c '^RESULT PASS' <<<"$res" || true)
nfail=$(grep -c '^RESULT FAIL' <<<"$res" || true)
nskip=$(grep -c '^RESULT SKIP' <<<"$res" || true)
echo "qemu-run: ${npass} PASS / ${nfail} FAIL / ${nskip} SKIP result lines; ${elapsed} s in QEMU"

if [[ -n "$end_line" ]]; then
    rc=${end_line#*rc=}
    rc=${rc%%=*}
    if [[ "$rc" != 0 || "$nfail" != 0 ]]; then
        echo "qemu-run: tests failed (run.sh exit status $rc, $nfail RESULT FAIL lines)" >&2
        ((status)) || status=3
    fi
fi
exit "$status"
