// SPDX-License-Identifier: GPL-2.0-only
//! The values of `/sys/module/kvm_amd/parameters/*` (HOOK(abi)).
//!
//! Upstream userspace reads the vendor module's parameters: the KVM selftests
//! (`kvm_amd/parameters/avic` in `xapic_state_test`, `npt`), libvirt and QEMU (`sev`, `sev_es`,
//! `sev_snp`, `nested`). This module's SVM backend is inside kvm.ko, so a companion module,
//! kvm-amd.ko (`src/kvm_amd/companion.c`), shows upstream 6.12's kvm_amd parameter names and
//! formats, and every read of one lands here through the exported `tdxkvm_amd_param()`. Each
//! value is what this backend really does (`src/svm/mod.rs`, `src/svm/hw.rs`), not what the
//! CPU offers: upstream's parameter is the feature KVM uses, after the hardware check.

use crate::svm::hw;

/// How sysfs shows a parameter (`TDXKVM_AMD_PARAM_*` in `src/kvm_amd/kvm_amd.h`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `bool` (`Y` / `N`).
    Bool = 0,
    /// `int` or `ushort` (decimal).
    Int = 1,
}

/// kvm_amd 6.12's parameters (svm.c, avic.c, sev.c) with the value this backend uses.
const PARAMS: [(&[u8], Kind, i64); 18] = [
    // PAUSE is not intercepted and the VMCB's pause filter stays 0 (QEMU's SVM has none;
    // upstream sets both to 0 without X86_FEATURE_PAUSEFILTER).
    (b"pause_filter_thresh", Kind::Int, 0),
    (b"pause_filter_count", Kind::Int, 0),
    // Every SVM guest runs on nested paging; the backend refuses to start without NPT.
    (b"npt", Kind::Bool, 1),
    // No nested SVM: VMRUN and the other SVM instructions are intercepted and #UD.
    (b"nested", Kind::Int, 0),
    // NRIP save is never used: instruction lengths come from the decoder (src/exit_run.rs).
    (b"nrips", Kind::Int, 0),
    // Virtual VMLOAD/VMSAVE and virtual GIF serve nested guests only: never enabled.
    (b"vls", Kind::Int, 0),
    (b"vgif", Kind::Int, 0),
    // No LBR virtualisation (DEBUGCTL and the LBR MSRs read 0).
    (b"lbrv", Kind::Int, 0),
    // No TSC scaling (KVM_CAP_TSC_CONTROL is 0).
    (b"tsc_scaling", Kind::Int, 0),
    // The LAPIC is emulated in software (src/irq/lapic.rs); no AVIC.
    (b"avic", Kind::Bool, 0),
    // Nothing dumps a VMCB that fails VMRUN's checks.
    (b"dump_invalid_vmcb", Kind::Bool, 0),
    // SMIs are intercepted (init_vmcb): the host takes them after the exit.
    (b"intercept_smi", Kind::Bool, 1),
    // NMIs are injected through EVENTINJ; no virtual NMI.
    (b"vnmi", Kind::Bool, 0),
    (b"force_avic", Kind::Bool, 0),
    // No SEV, SEV-ES or SEV-SNP guests (KVM_X86_SEV*_VM are not VM types here).
    (b"sev", Kind::Bool, 0),
    (b"sev_es", Kind::Bool, 0),
    (b"sev_snp", Kind::Bool, 0),
    (b"debug_swap", Kind::Bool, 0),
];

/// The kind and value of parameter `name`; `ENODEV` without a running SVM backend, `ENOENT`
/// for a name kvm_amd 6.12 does not have.
fn param(name: &[u8]) -> Result<(Kind, i64), kernel::error::Error> {
    if !hw::ready() {
        return Err(kernel::error::code::ENODEV);
    }
    PARAMS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, k, v)| (k, v))
        .ok_or(kernel::error::code::ENOENT)
}

/// `tdxkvm_amd_param()` (`src/kvm_amd/glue.c`, exported to kvm-amd.ko): the kind of parameter
/// `name` (`Kind`) with its value in `*value`, or a negative errno.
///
/// # Safety
///
/// `name` is valid for `len` bytes of reads and `value` for one `i64` write, for the call.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_amd_param(
    name: *const u8,
    len: usize,
    value: *mut i64,
) -> i32 {
    // SAFETY: the caller's contract.
    let name = unsafe { core::slice::from_raw_parts(name, len) };
    match param(name) {
        Ok((kind, v)) => {
            // SAFETY: the caller's contract.
            unsafe { value.write(v) };
            kind as i32
        }
        Err(e) => e.to_errno(),
    }
}
