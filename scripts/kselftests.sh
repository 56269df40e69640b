#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Builds the upstream KVM selftests the guest suite runs — every x86_64 program of Linux 6.12's
# tools/testing/selftests/kvm (its TEST_GEN_PROGS), from the same Debian linux-source-6.12 tree
# the pipeline kernel is built from ($KERNEL_SRC, unpacked by build-kernel.sh), unmodified and
# statically linked (the guest has no libc) — and stages them for the initramfs.
#
#   scripts/kselftests.sh DEST_DIR     # copies the binaries into DEST_DIR/kselftests/ (debug
#                                      # info stripped: the guest has no addr2line) and writes
#                                      # the run list DEST_DIR/kselftests.txt
#   scripts/kselftests.sh --list       # prints the run list only (builds nothing)
#
# The run list has one line per run: "MODE NAME TIMEOUT [ARGS...]" (tdx= mode, the program's
# basename, seconds before the guest kills it, the arguments it runs with: args_for below). Every test runs in tdx=off; the four that ran before the
# whole directory was built also run in tdx=emulated. What each run is expected to give is in
# tests/expected/kselftests.txt (scripts/expectations.sh compares and updates).
#
# Expects scripts/kernel-env.sh sourced and scripts/build-kernel.sh run (KERNEL_SRC, KDIR with
# usr/include from headers_install). The objects go to $TDXKVM_CACHE/kselftests-<version>, never
# into the source tree; make keeps the build incremental (a full build: about 20 s on 2 cores).
# gcc and libc6-dev (static glibc) come from kernel-env.sh's package list.
set -euo pipefail

# Seconds a test may run before the guest kills it (SIGKILL) and records "timeout".
default_timeout=60
# Longer budgets, each with why. Figures: upstream kvm_amd in the same QEMU TCG guest
# (/work/shared/kselftests-map.md, section 3).
declare -A timeout_for=(
    # 100000 forced task migrations with usleep between them: ~104 s on kvm_amd, 148 s on
    # ours (idle host, 2026-12-01: each KVM_RUN round trip costs more; issue 11).
    [rseq_test]=200
    # 1 GiB faulted in with 4 KiB NPT entries, 262144 faults in one KVM_RUN: 33 s on kvm_amd
    # under a production kernel (the map), but this pipeline's kernel has KASAN and lockdep
    # (kernel/config.fragment), which make every fault several times dearer for both modules:
    # 2026-12-02, idle host, one boot: kvm_amd 121 s, ours 100 s. Twice kvm_amd's time.
    [demand_paging_test]=240
    # The three other 1 GiB tests run at a quarter of their size (args_for below). One boot,
    # 2026-12-02 06:02-06:08, host lightly loaded, ours / kvm_amd at -b 256M:
    # memslot_modification_stress_test 27 / 39 s, kvm_page_table_test 42 / 43 s,
    # dirty_log_perf_test 33 / 42 s (demand_paging_test -b 256M: 30 / 27 s). 180 s is four
    # times kvm_amd's time or more, for a host busier than that one.
    [dirty_log_perf_test]=180
    [kvm_page_table_test]=180
    [memslot_modification_stress_test]=180
)
# Arguments a run passes to the test, with why. The three 1 GiB tests below take minutes each
# at their default size under KASAN + lockdep, on upstream kvm_amd as on ours (2026-12-02, one
# loaded boot, ours / kvm_amd: dirty_log_perf_test 416 / 302 s, kvm_page_table_test 145 /
# 192 s, memslot_modification_stress_test 118 / 128 s): the suite runs them on 256 MiB per
# vCPU, the same paths (every fault, dirty-log pass and memslot change) on fewer pages, so that
# a failure is a failure and not a budget. Their default size is timed as a benchmark against
# kvm_amd by hand (README, Benchmarks: the command and the figures), not here.
declare -A args_for=(
    [dirty_log_perf_test]="-b 256M"
    [kvm_page_table_test]="-b 256M"
    [memslot_modification_stress_test]="-b 256M"
)
# Deliberately left at the default: hardware_disable_test, dirty_log_test,
# max_guest_memory_test and memslot_perf_test, which fail or time out even on upstream kvm_amd
# in this QEMU (120 s each there); once they run here they are expected "timeout" after 60 s
# rather than costing two minutes each per run. Worst case with every long test at its limit:
# the guest suite's wall budget for this suite (scripts/guest-suite.sh) ends the suite.
# Tests that also run with tdx=emulated (the selftests the pipeline ran before this list grew
# to the whole directory; the software TDX module must not change them).
emulated_too=(guest_memfd_test kvm_binary_stats_test kvm_create_max_vcpus max_vcpuid_cap_test)

: "${KERNEL_SRC:?source scripts/kernel-env.sh first}"
src="$KERNEL_SRC/tools/testing/selftests/kvm"
[[ -f "$src/Makefile" ]] || { echo "kselftests: no $src (is $KERNEL_SRC unpacked?)" >&2; exit 1; }

# The upstream Makefile's own list (paths like x86_64/cpuid_test), read with an extra rule
# instead of being copied here, so that the list is the 6.12 tree's.
upstream_tests() {
    make -s -C "$src" -f Makefile -f - OUTPUT=/kselftests-out print-tdxkvm-tests <<'EOF' | tr ' ' '\n' | sed -n 's|^/kselftests-out/||p'
print-tdxkvm-tests:
	@echo $(TEST_GEN_PROGS)
EOF
}
mapfile -t tests < <(upstream_tests)
[[ ${#tests[@]} -gt 0 ]] || { echo "kselftests: the upstream Makefile lists no TEST_GEN_PROGS" >&2; exit 1; }

run_list() {
    local t name
    for t in "${tests[@]}"; do
        name=$(basename "$t")
        echo "off $name ${timeout_for[$name]:-$default_timeout}${args_for[$name]:+ ${args_for[$name]}}"
    done
    for name in "${emulated_too[@]}"; do
        echo "emulated $name ${timeout_for[$name]:-$default_timeout}${args_for[$name]:+ ${args_for[$name]}}"
    done
}

if [[ "${1:-}" == --list ]]; then
    run_list
    exit 0
fi
[[ $# -eq 1 ]] || { echo "usage: $0 DEST_DIR | --list" >&2; exit 64; }
dest=$1
: "${KDIR:?}" "${TDXKVM_CACHE:?}"
[[ -d "$KDIR/usr/include/linux" ]] || { echo "kselftests: no $KDIR/usr/include (headers_install)" >&2; exit 1; }
for name in "${emulated_too[@]}"; do
    printf '%s\n' "${tests[@]}" | grep -q "/$name\$\|^$name\$" ||
        { echo "kselftests: '$name' (emulated_too) is not an upstream test" >&2; exit 1; }
done

out="$TDXKVM_CACHE/kselftests-$KERNEL_VERSION"
mkdir -p "$out"
start=$(date +%s)
# One build at a time per cache directory (several worktrees may share the cache). -k: a test
# that does not build is left out of the image; the run list still names it, so the guest
# suite reports it (missing binary: a failure) instead of hiding it.
(
    flock 9
    make -k -s -C "$src" OUTPUT="$out" KHDR_INCLUDES="-isystem $KDIR/usr/include" \
        EXTRA_CFLAGS=-static -j"$(nproc)" "${tests[@]/#/$out/}" >"$out/build.log" 2>&1 || {
        echo "kselftests: the build FAILED for some tests, the end of $out/build.log:" >&2
        tail -n 30 "$out/build.log" >&2
    }
) 9>"$out.lock"

mkdir -p "$dest/kselftests"
built=0
for t in "${tests[@]}"; do
    bin="$out/$t"
    [[ -x "$bin" ]] || { echo "kselftests: $t did not build (see $out/build.log)" >&2; continue; }
    if readelf -l "$bin" | grep -q 'program interpreter'; then
        echo "kselftests: $bin is not statically linked" >&2
        exit 1
    fi
    strip --strip-debug -o "$dest/kselftests/$(basename "$t")" "$bin"
    built=$((built + 1))
done
run_list >"$dest/kselftests.txt"
echo "kselftests: $built of ${#tests[@]} upstream KVM selftests built and staged," \
    "$(wc -l <"$dest/kselftests.txt") runs listed ($(($(date +%s) - start)) s)"
