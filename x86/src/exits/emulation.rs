// SPDX-License-Identifier: GPL-2.0-only
//! Emulation failures: `KVM_CAP_EXIT_ON_EMULATION_FAILURE` and the exit upstream's
//! `prepare_emulation_failure_exit` / `handle_emulation_failure` build.
//!
//! An instruction the emulator cannot handle (an MMIO access by an instruction it does not
//! know, a fetch it cannot complete) never gets guessed at: with the capability enabled, or
//! when the guest runs at CPL 0, the vCPU exits with `KVM_EXIT_INTERNAL_ERROR`, suberror
//! `KVM_INTERNAL_ERROR_EMULATION`, the instruction bytes and the backend's exit information;
//! a CPL > 0 guest without the capability gets #UD instead (and the CPL-0 case queues #UD
//! as well, as upstream does, which userspace sees if it resumes without fixing RIP).

use super::run::Exit;
use super::Errno;

/// `KVM_INTERNAL_ERROR_EMULATION`.
pub const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;
/// `KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES`.
pub const FLAG_INSTRUCTION_BYTES: u64 = 1 << 0;

/// `KVM_ENABLE_CAP(KVM_CAP_EXIT_ON_EMULATION_FAILURE)`: `args[0]` is 0 or 1, else `EINVAL`.
pub fn enable_cap(arg0: u64) -> Result<bool, Errno> {
    if arg0 & !1 != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(arg0 != 0)
}

/// The backend's exit information (upstream `kvm_x86_ops.get_exit_info`: reason, info1,
/// info2, interrupt info, error code; for SVM the exit code, EXITINFO1/2, EXITINTINFO and its
/// error code).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit reason / code (32 bits used).
    pub reason: u32,
    /// First info word.
    pub info1: u64,
    /// Second info word.
    pub info2: u64,
    /// Interrupt info (32 bits used).
    pub intr_info: u32,
    /// Its error code (32 bits used).
    pub error_code: u32,
}

/// EXITINTINFO: valid.
const SVM_EXITINTINFO_VALID: u32 = 1 << 31;
/// EXITINTINFO: the event has an error code.
const SVM_EXITINTINFO_VALID_ERR: u32 = 1 << 11;

impl ExitInfo {
    /// SVM's words (upstream `svm_get_exit_info`): the exit code (its low 32 bits),
    /// EXITINFO1/2, EXITINTINFO, and EXITINTINFO's error code only when EXITINTINFO is valid
    /// and says it has one (0 otherwise).
    pub fn svm(code: u64, info1: u64, info2: u64, int_info: u32, int_info_err: u32) -> Self {
        let err_valid = SVM_EXITINTINFO_VALID | SVM_EXITINTINFO_VALID_ERR;
        ExitInfo {
            reason: code as u32,
            info1,
            info2,
            intr_info: int_info,
            error_code: if int_info & err_valid == err_valid {
                int_info_err
            } else {
                0
            },
        }
    }
}

/// The `KVM_EXIT_INTERNAL_ERROR` exit for a failed emulation of the instruction whose bytes
/// (as far as they were fetched, at most 15) are `insn` (`prepare_emulation_failure_exit`
/// with no extra data): `data[0]` = flags; with bytes, `data[1..3]` = `insn_size` and the
/// bytes padded with 0x90; then the five exit-info words.
pub fn failure_exit(insn: &[u8], info: &ExitInfo) -> Exit {
    let insn = &insn[..insn.len().min(15)];
    let mut data = [0u64; 16];
    let mut start = 1;
    if !insn.is_empty() {
        start += 2;
        data[0] = FLAG_INSTRUCTION_BYTES;
        let mut b = [0x90u8; 16];
        b[0] = insn.len() as u8;
        b[1..=insn.len()].copy_from_slice(insn);
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        data[1] = u64::from_le_bytes(w);
        w.copy_from_slice(&b[8..]);
        data[2] = u64::from_le_bytes(w);
    }
    data[start] = u64::from(info.reason);
    data[start + 1] = info.info1;
    data[start + 2] = info.info2;
    data[start + 3] = u64::from(info.intr_info);
    data[start + 4] = u64::from(info.error_code);
    Exit::Internal {
        suberror: KVM_INTERNAL_ERROR_EMULATION,
        ndata: start as u32 + 5,
        data,
    }
}

/// What `handle_emulation_failure` does (no VMware #GP, no EMULTYPE_SKIP here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureAction {
    /// Exit with [`failure_exit`], nothing queued.
    Exit,
    /// Queue #UD and exit with [`failure_exit`] (CPL 0).
    UdAndExit,
    /// Queue #UD and re-enter the guest.
    Ud,
}

/// The action for a failed emulation: `exit_on_failure` is the VM's capability.
pub fn failure_action(exit_on_failure: bool, cpl: u8) -> FailureAction {
    if exit_on_failure {
        FailureAction::Exit
    } else if cpl == 0 {
        FailureAction::UdAndExit
    } else {
        FailureAction::Ud
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exits::le_u32;
    use crate::exits::run::{off, KVM_EXIT_INTERNAL_ERROR};

    #[test]
    fn failure_layout_with_bytes() {
        let info = ExitInfo {
            reason: 0x400,
            info1: 0x6,
            info2: 0x7_0000_0000,
            intr_info: 0,
            error_code: 0,
        };
        let e = failure_exit(&[0xd9, 0x00], &info);
        assert_eq!(e.reason(), KVM_EXIT_INTERNAL_ERROR);
        let u = e.encode();
        assert_eq!(le_u32(&u, off::INT_SUBERROR), 1);
        assert_eq!(le_u32(&u, off::INT_NDATA), 8);
        // flags, then insn_size 2, bytes d9 00, 0x90 padding.
        assert_eq!(u[8], 1);
        assert_eq!(u[16], 2);
        assert_eq!(&u[17..20], &[0xd9, 0x00, 0x90]);
        assert_eq!(u[31], 0x90);
        let Exit::Internal { data, .. } = e else {
            panic!()
        };
        assert_eq!(data[3], 0x400);
        assert_eq!(data[5], 0x7_0000_0000);
    }

    #[test]
    fn failure_layout_without_bytes() {
        let e = failure_exit(&[], &ExitInfo::default());
        let Exit::Internal { ndata, data, .. } = e else {
            panic!()
        };
        assert_eq!(ndata, 6);
        assert_eq!(data[0], 0);
    }

    #[test]
    fn too_many_bytes_are_cut() {
        let e = failure_exit(&[0x66; 20], &ExitInfo::default());
        let u = e.encode();
        assert_eq!(u[16], 15);
        assert_eq!(u[31], 0x66);
    }

    #[test]
    fn svm_exit_info_words() {
        // An NPF while delivering #GP(0x18) (vector 13, exception, error code valid).
        let gp = 0x8000_0b0d;
        let i = ExitInfo::svm(0x400, 6, 0xfee0_0000, gp, 0x18);
        assert_eq!(
            (i.reason, i.info1, i.info2, i.intr_info, i.error_code),
            (0x400, 6, 0xfee0_0000, gp, 0x18)
        );
        // The error code only counts when EXITINTINFO is valid and has one.
        assert_eq!(
            ExitInfo::svm(0x400, 0, 0, 0x8000_030e & !(1 << 11), 7).error_code,
            0
        );
        assert_eq!(ExitInfo::svm(0x400, 0, 0, 0x0000_0b0d, 7).error_code, 0);
        // VMEXIT_INVALID (-1): the reason is the low 32 bits.
        assert_eq!(ExitInfo::svm(u64::MAX, 0, 0, 0, 0).reason, u32::MAX);
        // In the exit: data[start + 3] / [start + 4] after flags and the bytes.
        let Exit::Internal { data, .. } = failure_exit(&[0x90], &i) else {
            panic!()
        };
        assert_eq!(&data[3..8], &[0x400, 6, 0xfee0_0000, u64::from(gp), 0x18]);
    }

    #[test]
    fn cap_and_action() {
        assert_eq!(enable_cap(0), Ok(false));
        assert_eq!(enable_cap(1), Ok(true));
        assert_eq!(enable_cap(2), Err(Errno::EINVAL));
        assert_eq!(failure_action(true, 3), FailureAction::Exit);
        assert_eq!(failure_action(false, 0), FailureAction::UdAndExit);
        assert_eq!(failure_action(false, 3), FailureAction::Ud);
    }
}
