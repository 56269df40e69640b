// SPDX-License-Identifier: GPL-2.0-only
//! The KVM hypercall ABI (VMMCALL on AMD; upstream `kvm_emulate_hypercall` and
//! `complete_hypercall_exit`) and `KVM_CAP_EXIT_HYPERCALL`.
//!
//! RAX holds the number, RBX/RCX/RDX/RSI the arguments (truncated to 32 bits outside 64-bit
//! mode); a CPL > 0 caller gets `-KVM_EPERM`. `KVM_HC_MAP_GPA_RANGE` exits to userspace when
//! userspace enabled it through the capability (`KVM_EXIT_HYPERCALL`, RAX from
//! `hypercall.ret` on the next `KVM_RUN`); unknown numbers return `-KVM_ENOSYS`.
//!
//! Without an in-kernel LAPIC (issue 12) the PV calls that target other vCPUs' APICs have no
//! one to reach: `KVM_HC_KICK_CPU` wakes nobody and `KVM_HC_SEND_IPI` delivers to no one (it
//! returns the count delivered, 0), as upstream does with an empty APIC map.

use super::run::{Exit, HYPERCALL_LONG_MODE};
use super::Errno;

/// `KVM_HC_VAPIC_POLL_IRQ`.
pub const KVM_HC_VAPIC_POLL_IRQ: u64 = 1;
/// `KVM_HC_KICK_CPU`.
pub const KVM_HC_KICK_CPU: u64 = 5;
/// `KVM_HC_CLOCK_PAIRING`.
pub const KVM_HC_CLOCK_PAIRING: u64 = 9;
/// `KVM_HC_SEND_IPI`.
pub const KVM_HC_SEND_IPI: u64 = 10;
/// `KVM_HC_SCHED_YIELD`.
pub const KVM_HC_SCHED_YIELD: u64 = 11;
/// `KVM_HC_MAP_GPA_RANGE`.
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;

/// `KVM_ENOSYS` (`include/uapi/linux/kvm_para.h`).
pub const KVM_ENOSYS: u64 = 1000;
/// `KVM_EINVAL`.
pub const KVM_EINVAL: u64 = 22;
/// `KVM_EPERM`.
pub const KVM_EPERM: u64 = 1;
/// `KVM_EOPNOTSUPP`.
pub const KVM_EOPNOTSUPP: u64 = 95;

/// `KVM_EXIT_HYPERCALL_VALID_MASK`: only `KVM_HC_MAP_GPA_RANGE` may exit.
pub const EXIT_HYPERCALL_VALID_MASK: u64 = 1 << KVM_HC_MAP_GPA_RANGE;

/// `KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)`: `args[0]` is a mask of hypercall numbers that exit;
/// anything outside [`EXIT_HYPERCALL_VALID_MASK`] → `EINVAL`.
pub fn enable_cap(arg0: u64) -> Result<u64, Errno> {
    if arg0 & !EXIT_HYPERCALL_VALID_MASK != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(arg0)
}

/// The caller's registers and mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Call {
    /// RAX: the number.
    pub rax: u64,
    /// RBX: argument 0.
    pub rbx: u64,
    /// RCX: argument 1.
    pub rcx: u64,
    /// RDX: argument 2.
    pub rdx: u64,
    /// RSI: argument 3.
    pub rsi: u64,
    /// Current privilege level.
    pub cpl: u8,
    /// 64-bit mode (EFER.LMA and CS.L).
    pub long_mode: bool,
}

/// What to do with a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Write RAX and skip the instruction.
    Ret(u64),
    /// Exit to userspace with this `KVM_EXIT_HYPERCALL`; [`complete`] on the next run.
    Exit(Exit),
}

fn neg(v: u64) -> u64 {
    v.wrapping_neg()
}

/// `kvm_emulate_hypercall` for a VM whose exit mask is `exit_mask`.
pub fn emulate(c: &Call, exit_mask: u64) -> Outcome {
    let mask = if c.long_mode { u64::MAX } else { 0xffff_ffff };
    let (nr, a0, a1, a2) = (c.rax & mask, c.rbx & mask, c.rcx & mask, c.rdx & mask);
    let ret = if c.cpl != 0 {
        neg(KVM_EPERM)
    } else {
        match nr {
            KVM_HC_VAPIC_POLL_IRQ | KVM_HC_KICK_CPU | KVM_HC_SCHED_YIELD | KVM_HC_SEND_IPI => 0,
            KVM_HC_CLOCK_PAIRING => neg(KVM_EOPNOTSUPP),
            KVM_HC_MAP_GPA_RANGE => {
                if exit_mask & (1 << KVM_HC_MAP_GPA_RANGE) == 0 {
                    neg(KVM_ENOSYS)
                } else {
                    let (gpa, npages, attrs) = (a0, a1, a2);
                    let gfn = gpa >> 12;
                    if gpa & 0xfff != 0 || npages == 0 || gfn.wrapping_add(npages) <= gfn {
                        neg(KVM_EINVAL)
                    } else {
                        return Outcome::Exit(Exit::Hypercall {
                            nr: KVM_HC_MAP_GPA_RANGE,
                            args: [gpa, npages, attrs, 0, 0, 0],
                            flags: if c.long_mode { HYPERCALL_LONG_MODE } else { 0 },
                        });
                    }
                }
            }
            _ => neg(KVM_ENOSYS),
        }
    };
    Outcome::Ret(ret & mask)
}

/// RAX after userspace answered a `KVM_EXIT_HYPERCALL` with `ret` (`complete_hypercall_exit`:
/// truncated outside 64-bit mode); the instruction is then skipped.
pub fn complete(ret: u64, long_mode: bool) -> u64 {
    if long_mode {
        ret
    } else {
        ret & 0xffff_ffff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(rax: u64) -> Call {
        Call {
            rax,
            long_mode: true,
            ..Default::default()
        }
    }

    #[test]
    fn cap() {
        assert_eq!(enable_cap(0), Ok(0));
        assert_eq!(enable_cap(1 << 12), Ok(4096));
        assert_eq!(enable_cap(1 << 11), Err(Errno::EINVAL));
        assert_eq!(enable_cap(u64::MAX), Err(Errno::EINVAL));
    }

    #[test]
    fn unknown_and_cpl() {
        assert_eq!(emulate(&call(77), 0), Outcome::Ret(neg(1000)));
        let mut c = call(77);
        c.long_mode = false;
        assert_eq!(emulate(&c, 0), Outcome::Ret(0xffff_ffff & neg(1000)));
        c.cpl = 3;
        c.rax = KVM_HC_VAPIC_POLL_IRQ;
        assert_eq!(emulate(&c, 0), Outcome::Ret(0xffff_ffff));
        assert_eq!(emulate(&call(KVM_HC_SCHED_YIELD), 0), Outcome::Ret(0));
        // Upper bits of RAX are ignored outside 64-bit mode only.
        let mut c = call((1 << 32) | KVM_HC_VAPIC_POLL_IRQ);
        assert_eq!(emulate(&c, 0), Outcome::Ret(neg(1000)));
        c.long_mode = false;
        assert_eq!(emulate(&c, 0), Outcome::Ret(0));
    }

    #[test]
    fn map_gpa_range() {
        let mut c = call(KVM_HC_MAP_GPA_RANGE);
        c.rbx = 0x1000;
        c.rcx = 4;
        c.rdx = 0x10;
        assert_eq!(emulate(&c, 0), Outcome::Ret(neg(1000)));
        let Outcome::Exit(e) = emulate(&c, 1 << 12) else {
            panic!("no exit")
        };
        assert_eq!(
            e,
            Exit::Hypercall {
                nr: 12,
                args: [0x1000, 4, 0x10, 0, 0, 0],
                flags: 1
            }
        );
        c.rbx = 0x1001;
        assert_eq!(emulate(&c, 1 << 12), Outcome::Ret(neg(22)));
        c.rbx = 0x1000;
        c.rcx = 0;
        assert_eq!(emulate(&c, 1 << 12), Outcome::Ret(neg(22)));
        c.rcx = u64::MAX;
        assert_eq!(emulate(&c, 1 << 12), Outcome::Ret(neg(22)));
        // Real mode (kvm-ioctls' test): flags 0.
        c.rcx = 1;
        c.long_mode = false;
        let Outcome::Exit(Exit::Hypercall { flags, .. }) = emulate(&c, 1 << 12) else {
            panic!("no exit")
        };
        assert_eq!(flags, 0);
        assert_eq!(complete(u64::MAX, false), 0xffff_ffff);
        assert_eq!(complete(u64::MAX, true), u64::MAX);
    }
}
