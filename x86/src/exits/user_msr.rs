// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_CAP_X86_USER_SPACE_MSR` and what happens to a guest RDMSR/WRMSR (upstream
//! `kvm_emulate_rdmsr` / `kvm_emulate_wrmsr`, `kvm_msr_user_space`, `complete_fast_rdmsr`,
//! `kvm_complete_insn_gp`).
//!
//! The access first passes the MSR filter, then the vCPU's MSR code; if either refuses it, the
//! refusal's reason (`FILTER`, `UNKNOWN` for an MSR KVM does not know, `INVAL` for a value or
//! access it refuses) decides: when userspace enabled that reason, the vCPU exits with
//! `KVM_EXIT_X86_RDMSR/WRMSR` and the next `KVM_RUN` completes the instruction from
//! `run->msr` (error ≠ 0 → #GP, else the data lands in EDX:EAX and the instruction is
//! skipped); otherwise the guest takes #GP(0) at once.

use super::Errno;

/// `KVM_MSR_EXIT_REASON_INVAL`: the vCPU's MSR code refused the access.
pub const REASON_INVAL: u32 = 1 << 0;
/// `KVM_MSR_EXIT_REASON_UNKNOWN`: KVM does not know the MSR.
pub const REASON_UNKNOWN: u32 = 1 << 1;
/// `KVM_MSR_EXIT_REASON_FILTER`: the MSR filter denied the access.
pub const REASON_FILTER: u32 = 1 << 2;
/// `KVM_MSR_EXIT_REASON_VALID_MASK`.
pub const REASON_VALID_MASK: u64 = (REASON_INVAL | REASON_UNKNOWN | REASON_FILTER) as u64;

/// `KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)`: `args[0]` is the mask of reasons that exit to
/// userspace; unknown bits → `EINVAL`. Returns the new mask (`kvm->arch.user_space_msr_mask`).
pub fn enable_cap(arg0: u64) -> Result<u32, Errno> {
    if arg0 & !REASON_VALID_MASK != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(arg0 as u32)
}

/// How the vCPU's MSR code (after the filter) answered an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrResult {
    /// Done; for a read, the value.
    Ok(u64),
    /// The filter denied it (`KVM_MSR_RET_FILTERED`).
    Filtered,
    /// Not an MSR KVM knows (`KVM_MSR_RET_UNSUPPORTED`).
    Unsupported,
    /// Refused (reserved bits, read-only, …: return value 1).
    Invalid,
}

impl MsrResult {
    /// The exit reason for a refusal (upstream `kvm_msr_reason`).
    fn reason(self) -> u32 {
        match self {
            MsrResult::Unsupported => REASON_UNKNOWN,
            MsrResult::Filtered => REASON_FILTER,
            _ => REASON_INVAL,
        }
    }
}

/// What to do with the guest's RDMSR/WRMSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Write EDX:EAX (a read; `None` for a write) and skip the instruction.
    Complete(Option<u64>),
    /// Inject #GP(0); the instruction is not skipped.
    Gp,
    /// Exit to userspace: `KVM_EXIT_X86_RDMSR`/`WRMSR` with this reason, index and data
    /// (the written value; 0 for a read); the next `KVM_RUN` calls [`complete`].
    Exit {
        /// `KVM_MSR_EXIT_REASON_*`.
        reason: u32,
        /// The MSR.
        index: u32,
        /// WRMSR's value, 0 for RDMSR.
        data: u64,
    },
}

/// The outcome of a guest access to `index` (`write` = WRMSR with `data`) that the MSR code
/// answered with `r`, for a VM whose user-space-MSR mask is `mask`.
pub fn outcome(mask: u32, index: u32, write: Option<u64>, r: MsrResult) -> Outcome {
    match r {
        MsrResult::Ok(v) => Outcome::Complete(if write.is_some() { None } else { Some(v) }),
        refused => {
            let reason = refused.reason();
            if mask & reason != 0 {
                Outcome::Exit {
                    reason,
                    index,
                    data: write.unwrap_or(0),
                }
            } else {
                Outcome::Gp
            }
        }
    }
}

/// Completion on the next `KVM_RUN` of an MSR exit (`complete_fast_rdmsr` /
/// `complete_fast_msr_access`): `run->msr.error` ≠ 0 → #GP; else a read takes `run->msr.data`
/// into EDX:EAX, and the instruction is skipped.
pub fn complete(is_read: bool, error: u8, data: u64) -> Outcome {
    if error != 0 {
        Outcome::Gp
    } else {
        Outcome::Complete(if is_read { Some(data) } else { None })
    }
}

/// Splits a 64-bit MSR value into (EAX, EDX) as RDMSR writes them (each zero-extended to 64
/// bits, as a 32-bit register write in 64-bit mode does).
pub fn split_edx_eax(v: u64) -> (u64, u64) {
    (v & 0xffff_ffff, v >> 32)
}

/// WRMSR's value from EDX:EAX (upstream `kvm_read_edx_eax`).
pub fn join_edx_eax(rax: u64, rdx: u64) -> u64 {
    (rax & 0xffff_ffff) | (rdx << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_cap_mask() {
        assert_eq!(enable_cap(0), Ok(0));
        assert_eq!(enable_cap(7), Ok(7));
        assert_eq!(enable_cap(8), Err(Errno::EINVAL));
        assert_eq!(enable_cap(1 << 32), Err(Errno::EINVAL));
    }

    #[test]
    fn outcomes() {
        assert_eq!(
            outcome(0, 0x10, None, MsrResult::Ok(5)),
            Outcome::Complete(Some(5))
        );
        assert_eq!(
            outcome(0, 0x10, Some(5), MsrResult::Ok(0)),
            Outcome::Complete(None)
        );
        assert_eq!(outcome(0, 0x10, None, MsrResult::Filtered), Outcome::Gp);
        assert_eq!(
            outcome(REASON_FILTER, 0x10, Some(9), MsrResult::Filtered),
            Outcome::Exit {
                reason: REASON_FILTER,
                index: 0x10,
                data: 9
            }
        );
        // Only the enabled reason exits.
        assert_eq!(
            outcome(REASON_FILTER, 0x10, None, MsrResult::Unsupported),
            Outcome::Gp
        );
        assert_eq!(
            outcome(REASON_UNKNOWN, 0x10, None, MsrResult::Unsupported),
            Outcome::Exit {
                reason: REASON_UNKNOWN,
                index: 0x10,
                data: 0
            }
        );
        assert_eq!(
            outcome(REASON_INVAL, 0x10, Some(1), MsrResult::Invalid),
            Outcome::Exit {
                reason: REASON_INVAL,
                index: 0x10,
                data: 1
            }
        );
    }

    #[test]
    fn completion() {
        assert_eq!(complete(true, 1, 5), Outcome::Gp);
        assert_eq!(complete(false, 0xff, 5), Outcome::Gp);
        assert_eq!(complete(true, 0, 5), Outcome::Complete(Some(5)));
        assert_eq!(complete(false, 0, 5), Outcome::Complete(None));
        assert_eq!(
            split_edx_eax(0x1234_5678_9abc_def0),
            (0x9abc_def0, 0x1234_5678)
        );
        assert_eq!(
            join_edx_eax(0xffff_ffff_9abc_def0, 0x1234_5678),
            0x1234_5678_9abc_def0
        );
    }
}
