#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Upstream KVM for AMD SVM, for the pipeline kernel, without rebuilding or reconfiguring it:
# the benchmark's baseline (scripts/bench-run.sh), never used by `make test`.
#
#   scripts/build-kvm-amd.sh            # prints the directory holding the three modules
#
# The pipeline kernel (kernel/config.fragment) has KVM=m and KVM_INTEL=m but no KVM_AMD, so its
# build tree already holds upstream kvm.ko (+ irqbypass.ko, which kvm.ko needs); only
# kvm-amd.ko is missing. In 6.12 nothing that kvm.ko is made of depends on CONFIG_KVM_AMD
# (`grep -rn CONFIG_KVM_AMD arch/x86/kvm virt/kvm include`: only the Makefile's obj- line,
# kvm-asm-offsets.c and sev.c's IS_BUILTIN()), so kvm-amd.ko built separately is exactly what
# a KVM_AMD=m kernel build would have produced next to that kvm.ko:
# - copies arch/x86/kvm out of the kernel's source tree into
#   $TDXKVM_CACHE/kvm-amd-<key> (the cached kernel tree is only read);
# - builds them there as an external module (`make -C $KDIR M=<copy>`) with upstream's own
#   kvm-amd-y list (SEV off: KVM_AMD_SEV needs CRYPTO_DEV_SP_PSP, which the kernel lacks;
#   svm/hyperv.o because KVM_HYPERV=y) and -DCONFIG_KVM_AMD_MODULE=1, i.e. what autoconf.h
#   would say for KVM_AMD=m: it makes kvm-asm-offsets emit the SVM offsets svm/vmenter.S needs;
# - copies the tree's kvm.ko and irqbypass.ko beside it, so that one directory holds the
#   module set that loads in this order: irqbypass, kvm, kvm-amd.
# Reuses the result when the key (kernel build dir, its kvm.ko, this script) is unchanged.
# Runs make -j1: the machine's cores are shared.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=scripts/kernel-env.sh
source scripts/kernel-env.sh
scripts/build-kernel.sh >&2

for f in arch/x86/kvm/kvm.ko virt/lib/irqbypass.ko Module.symvers; do
    [[ -f "$KDIR/$f" ]] || { echo "build-kvm-amd: $KDIR/$f is missing (needs KVM=m)" >&2; exit 1; }
done
if grep -q '^CONFIG_KVM_AMD=' "$KDIR/.config"; then
    echo "build-kvm-amd: note: the kernel already has CONFIG_KVM_AMD; building it separately anyway" >&2
fi

key=$({ echo "$KDIR"; sha256sum "$KDIR/arch/x86/kvm/kvm.ko" "$0"; } | sha256sum | cut -c1-16)
out="$TDXKVM_CACHE/kvm-amd-$key"
if [[ -f "$out/.done" ]]; then
    echo "build-kvm-amd: cached: $out" >&2
    echo "$out"
    exit 0
fi

mkdir -p "$TDXKVM_CACHE"
exec 9>"$out.lock"
flock 9
if [[ -f "$out/.done" ]]; then
    echo "$out"
    exit 0
fi
t0=$SECONDS
rm -rf "$out"
mkdir -p "$out"
# The whole directory: svm/ includes its neighbours by relative path ("../hyperv.h").
cp -r "$KERNEL_SRC/arch/x86/kvm" "$out/src"
# Upstream's arch/x86/kvm/Makefile, kvm-amd part (a Kbuild file wins over the Makefile).
cat >"$out/src/Kbuild" <<'KBUILD'
ccflags-y += -I $(src) -DCONFIG_KVM_AMD_MODULE=1

kvm-amd-y		+= svm/svm.o svm/vmenter.o svm/pmu.o svm/nested.o svm/avic.o
kvm-amd-$(CONFIG_KVM_HYPERV)	+= svm/hyperv.o
ifdef CONFIG_HYPERV
kvm-amd-y		+= svm/svm_onhyperv.o
endif
obj-m			+= kvm-amd.o

AFLAGS_svm/vmenter.o    := -iquote $(obj)
$(obj)/svm/vmenter.o: $(obj)/kvm-asm-offsets.h

$(obj)/kvm-asm-offsets.h: $(obj)/kvm-asm-offsets.s FORCE
	$(call filechk,offsets,__KVM_ASM_OFFSETS_H__)

targets += kvm-asm-offsets.s
KBUILD
echo "build-kvm-amd: building kvm-amd.ko in $out/src (make -j1)" >&2
if ! make -C "$KDIR" M="$out/src" "${KMAKE_ARGV[@]}" -j1 modules >"$out/build.log" 2>&1; then
    tail -n 40 "$out/build.log" >&2
    echo "build-kvm-amd: FAILED (log: $out/build.log)" >&2
    exit 1
fi
grep -q 'SVM_vcpu_arch_regs' "$out/src/kvm-asm-offsets.h" || {
    echo "build-kvm-amd: FAILED: kvm-asm-offsets.h has no SVM offsets" >&2
    exit 1
}
cp "$out/src/kvm-amd.ko" "$KDIR/arch/x86/kvm/kvm.ko" "$KDIR/virt/lib/irqbypass.ko" "$out/"
touch "$out/.done"
echo "build-kvm-amd: built in $((SECONDS - t0)) s: $out" >&2
echo "$out"
