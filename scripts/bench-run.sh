#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Run-loop benchmarks, our kvm.ko against upstream kvm_amd, in the same QEMU (TCG) guest:
#
#   scripts/bench-run.sh            (make bench-run)
#
# Builds (or reuses) the pipeline kernel, our kvm.ko, upstream's kvm.ko + kvm-amd.ko for that
# kernel (scripts/build-kvm-amd.sh: no kernel rebuild) and the static guest client, boots QEMU
# once and in it loads one module set after the other (the two kvm.ko share the module name):
# upstream (irqbypass, kvm, kvm-amd) first, then ours (tdx=off). Each set runs the client's
#   --bench-run    KVM_RUN round trip to userspace (OUT exit) and INVD in-kernel exits
#   --bench-cpuid  CPUID in-kernel exits
#   --bench-npt    4 KiB NPT faults while a guest touches 256 MiB (host pages present / not)
#   --bench-ipi    IPI round trip between two vCPUs (x2APIC ICR, the receiver halted)
#   --bench-timer  LAPIC timer latency (TSC-deadline: handler TSC - deadline)
# (standard /dev/kvm ioctls only), --bench-run $BENCH_REPS times (default 3), --bench-cpuid
# once (it takes the median of 3 runs itself), --bench-npt with $BENCH_NPT_REPS runs (default 1:
# under TCG a fault costs ~1 ms, one pass over 256 MiB a minute or two); medians of all runs. Prints every figure for both sets and the ratio ours/upstream
# (< 1: ours is faster). Figures under QEMU TCG with a KASAN + lockdep guest kernel: indicative
# only, and only the ratio means much.
# BENCH_REPS=0 leaves --bench-run out (its figures then count as missing).
# BENCH_ONLY="ipi timer" runs only those benchmarks (of run cpuid npt ipi timer; default all);
# BENCH_IPI="N RUNS" (default "200 3": round trips per run, runs, the median printed) and
# BENCH_TIMER="N DELAY_US" (default "100 3000": shots, delay of each) size the two irqchip ones.
# BENCH_SETS="upstream ours" picks the sets and their order (e.g. BENCH_SETS=upstream);
# BENCH_ROUNDS=N loads them N times in turn (upstream, ours, upstream, ...), so that a change
# in the shared host's load hits both alike.
# Exits non-zero if a set could not be loaded, a figure is missing, or the console log shows a
# kernel error or the run did not finish (scripts/qemu-run.sh); the figures are printed anyway.
# Not part of `make test`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
sets=${BENCH_SETS:-upstream ours}
reps=${BENCH_REPS:-3}
npt_reps=${BENCH_NPT_REPS:-1}
rounds=${BENCH_ROUNDS:-1}
only=${BENCH_ONLY:-run cpuid npt ipi timer}
ipi_args=${BENCH_IPI:-200 3}
timer_args=${BENCH_TIMER:-100 3000}
for b in $only; do
    case $b in run | cpuid | npt | ipi | timer) ;; *) echo "bench-run: unknown benchmark '$b' in BENCH_ONLY" >&2; exit 64 ;; esac
done
[[ "$ipi_args" =~ ^[0-9]+( [0-9]+)?$ ]] || { echo "bench-run: bad BENCH_IPI '$ipi_args'" >&2; exit 64; }
[[ "$timer_args" =~ ^[0-9]+( [0-9]+)?$ ]] || { echo "bench-run: bad BENCH_TIMER '$timer_args'" >&2; exit 64; }
selected() { [[ " $only " == *" $1 "* ]]; }
[[ "$reps" =~ ^[0-9]+$ ]] || { echo "bench-run: bad BENCH_REPS '$reps'" >&2; exit 64; }
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "bench-run: bad BENCH_ROUNDS '$rounds'" >&2; exit 64; }
[[ "$npt_reps" =~ ^[1-9][0-9]*$ ]] || { echo "bench-run: bad BENCH_NPT_REPS '$npt_reps'" >&2; exit 64; }
for s in $sets; do
    case $s in upstream | ours) ;; *) echo "bench-run: unknown set '$s' in BENCH_SETS" >&2; exit 64 ;; esac
done

# shellcheck source=scripts/kernel-env.sh
source scripts/kernel-env.sh
scripts/build-kernel.sh
scripts/build-module.sh
upstream=$(scripts/build-kvm-amd.sh)
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release -p guest-client \
    --target x86_64-unknown-linux-gnu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tests/ours" "$work/tests/upstream"
cp target/x86_64-unknown-linux-gnu/release/guest-client "$work/tests/"
cp kvm.ko "$work/tests/ours/"
cp "$upstream"/{irqbypass,kvm,kvm-amd}.ko "$work/tests/upstream/"

{
    echo "#!/bin/sh"
    echo "# Runs inside the guest (busybox sh); written by scripts/bench-run.sh."
    echo "sets='$sets'"
    echo "reps=$reps"
    echo "npt_reps=$npt_reps"
    echo "rounds=$rounds"
    echo "only=' $only '"
    echo "ipi_args='$ipi_args'"
    echo "timer_args='$timer_args'"
} >"$work/tests/run.sh"
cat >>"$work/tests/run.sh" <<'RUN'
cd /tests
status=0
load() {
    case $1 in
        upstream) insmod upstream/irqbypass.ko && insmod upstream/kvm.ko && insmod upstream/kvm-amd.ko ;;
        ours) insmod ours/kvm.ko tdx=off ;;
    esac
}
unload() {
    case $1 in
        upstream) rmmod kvm_amd && rmmod kvm && rmmod irqbypass ;;
        ours) rmmod kvm ;;
    esac
}
# Every figure line as "BENCHLINE <set> <client line>".
bench() {
    ./guest-client "$@" 2>&1 | sed "s/^/BENCHLINE $set /"
}
for round in $(seq "$rounds"); do for set in $sets; do
    echo "## round $round, module set: $set"
    if ! load $set; then echo "## FAILED: loading $set"; status=1; continue; fi
    dmesg | tail -n 3
    echo "## /dev/kvm: $(ls -l /dev/kvm)"
    case $only in *" run "*)
        i=0
        while [ $i -lt $reps ]; do bench --bench-run; i=$((i + 1)); done ;;
    esac
    case $only in *" cpuid "*) bench --bench-cpuid ;; esac
    case $only in *" npt "*) bench --bench-npt "$npt_reps" ;; esac
    # shellcheck disable=SC2086 # "N RUNS" / "N DELAY_US": two arguments each.
    case $only in *" ipi "*) bench --bench-ipi $ipi_args ;; esac
    # shellcheck disable=SC2086
    case $only in *" timer "*) bench --bench-timer $timer_args ;; esac
    if ! unload $set; then echo "## FAILED: unloading $set"; status=1; fi
done; done
exit $status
RUN
scripts/initramfs.sh "$work/initrd.cpio.gz" "$work/tests" >/dev/null
log="$repo/target/bench-run.log"
mkdir -p "$repo/target"
set +e
scripts/qemu-run.sh --timeout "${QEMU_TIMEOUT:-1800}" "$BZIMAGE" "$work/initrd.cpio.gz" "$log" >/dev/null
rc=$?
set -e

# The figures: "BENCHLINE <set> bench-run: <what>: <n> ns[ (<note>)]" (kernel lines may interleave on the
# console, so only whole lines of that form count), each line once per run; the median over
# the runs of each (set, figure).
key_of() {
    case "$1" in
        *"round trip to userspace"*) echo io_exit ;;
        *"in-kernel exit (INVD"*) echo invd_exit ;;
        *"in-kernel exit (CPUID"*) echo cpuid_exit ;;
        *"NPT fault"*"host pages present"*) echo npt_present ;;
        *"NPT fault"*"allocated on fault"*) echo npt_alloc ;;
        *"IPI round trip"*) echo ipi_rt ;;
        *"LAPIC timer latency"*) echo timer_lat ;;
        *) echo other ;;
    esac
}
figures="$work/figures"
: >"$figures"
while IFS= read -r line; do
    set_name=$(cut -d' ' -f2 <<<"$line")
    rest=${line#BENCHLINE "$set_name" bench-run: }
    rest=$(sed -E 's/ ns( \(.*\))?$//' <<<"$rest")
    what=${rest%: *}
    ns=${rest##*: }
    [[ "$ns" =~ ^[0-9]+$ ]] || continue
    echo "$set_name $(key_of "$what") $ns" >>"$figures"
done < <(grep -E '^BENCHLINE (upstream|ours) bench-run: .*: [0-9]+ ns( \(.*\))?$' "$log" || true)

echo "=== run-loop benchmarks, QEMU TCG (-cpu max), KASAN+lockdep guest kernel: indicative ==="
echo "    (full console log: $log)"
# The client's complaints, and the notes after the figures (fault and exit counts).
grep -E '^BENCHLINE [a-z]+ bench-run: (.*: FAILED|skipped:|unexpected|no VM|.*ended with|.*did not exit)' "$log" \
    | sed 's/^BENCHLINE /    /' || true
grep -E '^BENCHLINE [a-z]+ bench-run: .*[0-9] ns \(' "$log" | sed 's/^BENCHLINE /    /' | awk '!seen[$0]++' || true
labels=(io_exit "KVM_RUN round trip to userspace (OUT exit)"
    invd_exit "in-kernel exit: INVD"
    cpuid_exit "in-kernel exit: CPUID"
    npt_present "NPT fault 4 KiB, 256 MiB (host pages present)"
    npt_alloc "NPT fault 4 KiB, 256 MiB (host allocates)"
    ipi_rt "IPI round trip, 2 vCPUs (x2APIC, HLT wake)"
    timer_lat "LAPIC timer latency (TSC-deadline)")
# The benchmark each figure comes from (BENCH_ONLY).
bench_of() {
    case $1 in
        io_exit | invd_exit) echo run ;;
        cpuid_exit) echo cpuid ;;
        npt_*) echo npt ;;
        ipi_rt) echo ipi ;;
        timer_lat) echo timer ;;
    esac
}
median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}
nmissing=0
printf '%-48s %12s %12s %10s\n' "ns per operation" ours upstream ours/upstr
for ((i = 0; i < ${#labels[@]}; i += 2)); do
    key=${labels[i]}
    selected "$(bench_of "$key")" || continue
    o=$(awk -v k="$key" '$1 == "ours" && $2 == k { print $3 }' "$figures" | median)
    u=$(awk -v k="$key" '$1 == "upstream" && $2 == k { print $3 }' "$figures" | median)
    for s in $sets; do
        if [[ $s == ours && -z "$o" ]] || [[ $s == upstream && -z "$u" ]]; then nmissing=$((nmissing + 1)); fi
    done
    ratio=-
    if [[ -n "$o" && -n "$u" && "$u" != 0 ]]; then ratio=$(awk -v o="$o" -v u="$u" 'BEGIN { printf "%.2f", o / u }'); fi
    printf '%-48s %12s %12s %10s\n' "${labels[i + 1]}" "${o:--}" "${u:--}" "$ratio"
done
if grep -q '^## FAILED' "$log"; then grep '^## FAILED' "$log" | sed 's/^/    /'; fi
status=0
if ((nmissing)); then
    echo "=== bench-run: FAILED: $nmissing figure(s) missing (see the lines above and $log)"
    status=1
fi
case $rc in
    0) ;;
    1) echo "=== bench-run: FAILED: the console log shows a kernel error (see $log)"; status=1 ;;
    2) echo "=== bench-run: FAILED: the run did not finish (see $log)"; status=1 ;;
    3) echo "=== bench-run: FAILED: a module set could not be loaded or unloaded (see '## FAILED')"; status=1 ;;
    *) echo "=== bench-run: FAILED: qemu-run exit $rc (see $log)"; status=1 ;;
esac
((status)) || echo "=== bench-run: ok (sets: $sets)"
exit "$status"
