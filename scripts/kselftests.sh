#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Builds the upstream KVM selftests the guest suite runs, from the same Debian linux-source-6.12
# tree the pipeline kernel is built from ($KERNEL_SRC, unpacked by build-kernel.sh), unmodified
# and statically linked (the guest has no libc), and stages them for the initramfs.
#
#   scripts/kselftests.sh DEST_DIR     # copies the binaries into DEST_DIR/kselftests/ and
#                                      # writes their names, one a line, to DEST_DIR/kselftests.txt
#   scripts/kselftests.sh --list       # prints the names only (builds nothing)
#
# Expects scripts/kernel-env.sh sourced and scripts/build-kernel.sh run (KERNEL_SRC, KDIR with
# usr/include from headers_install). The objects go to $TDXKVM_CACHE/kselftests-<version>, never
# into the source tree; make keeps the build incremental. gcc and libc6-dev (static glibc) come
# from kernel-env.sh's package list.
set -euo pipefail

# Upstream path under tools/testing/selftests/kvm/ of each test; the check name is its basename.
tests=(
    guest_memfd_test
    kvm_binary_stats_test
    kvm_create_max_vcpus
    x86_64/max_vcpuid_cap_test
)

if [[ "${1:-}" == --list ]]; then
    for t in "${tests[@]}"; do basename "$t"; done
    exit 0
fi
[[ $# -eq 1 ]] || { echo "usage: $0 DEST_DIR | --list" >&2; exit 64; }
dest=$1
: "${KERNEL_SRC:?source scripts/kernel-env.sh first}" "${KDIR:?}" "${TDXKVM_CACHE:?}"
src="$KERNEL_SRC/tools/testing/selftests/kvm"
[[ -f "$src/Makefile" ]] || { echo "kselftests: no $src (is $KERNEL_SRC unpacked?)" >&2; exit 1; }
[[ -d "$KDIR/usr/include/linux" ]] || { echo "kselftests: no $KDIR/usr/include (headers_install)" >&2; exit 1; }

out="$TDXKVM_CACHE/kselftests-$KERNEL_VERSION"
mkdir -p "$out"
targets=()
for t in "${tests[@]}"; do targets+=("$out/$t"); done
start=$(date +%s)
# One build at a time per cache directory (several worktrees may share the cache).
(
    flock 9
    make -s -C "$src" OUTPUT="$out" KHDR_INCLUDES="-isystem $KDIR/usr/include" \
        EXTRA_CFLAGS=-static -j"$(nproc)" "${targets[@]}" >"$out/build.log" 2>&1 || {
        echo "kselftests: build FAILED, the end of $out/build.log:" >&2
        tail -n 30 "$out/build.log" >&2
        exit 1
    }
) 9>"$out.lock"

mkdir -p "$dest/kselftests"
: >"$dest/kselftests.txt"
for t in "${tests[@]}"; do
    bin="$out/$t"
    if ldd "$bin" >/dev/null 2>&1; then
        echo "kselftests: $bin is not statically linked" >&2
        exit 1
    fi
    cp "$bin" "$dest/kselftests/"
    basename "$t" >>"$dest/kselftests.txt"
done
echo "kselftests: ${#tests[@]} upstream KVM selftests staged ($(( $(date +%s) - start )) s)"
