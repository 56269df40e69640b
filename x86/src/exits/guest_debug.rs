// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_SET_GUEST_DEBUG` (upstream `kvm_arch_vcpu_ioctl_set_guest_debug`, `__kvm_set_rflags`,
//! `kvm_get_rflags`, SVM's `db_interception` / `bp_interception`).
//!
//! Single-step sets RFLAGS.TF for the guest (userspace does not see it: reads of RFLAGS strip it
//! while single-stepping, [`GuestDebug::visible_rflags`]) and intercepts #DB, so after each
//! instruction the vCPU exits with `KVM_EXIT_DEBUG` (exception 1, pc = CS.base + RIP, DR6 and
//! DR7 as the hardware left them). Software breakpoints intercept #BP and exit with exception 3.
//!
//! Not implemented (refused with `EINVAL` rather than accepted and ignored): hardware
//! breakpoints (`KVM_GUESTDBG_USE_HW_BP`), exception injection (`KVM_GUESTDBG_INJECT_DB/BP`)
//! and `KVM_GUESTDBG_BLOCKIRQ`; `KVM_CAP_SET_GUEST_DEBUG2` is therefore not advertised.

use super::run::Exit;
use super::{le_u32, le_u64, Errno};

/// `KVM_GUESTDBG_ENABLE`.
pub const ENABLE: u32 = 0x1;
/// `KVM_GUESTDBG_SINGLESTEP`.
pub const SINGLESTEP: u32 = 0x2;
/// `KVM_GUESTDBG_USE_SW_BP`.
pub const USE_SW_BP: u32 = 0x0001_0000;
/// `KVM_GUESTDBG_USE_HW_BP`.
pub const USE_HW_BP: u32 = 0x0002_0000;
/// `KVM_GUESTDBG_INJECT_DB`.
pub const INJECT_DB: u32 = 0x0004_0000;
/// `KVM_GUESTDBG_INJECT_BP`.
pub const INJECT_BP: u32 = 0x0008_0000;
/// `KVM_GUESTDBG_BLOCKIRQ`.
pub const BLOCKIRQ: u32 = 0x0010_0000;
/// What this module implements.
pub const SUPPORTED: u32 = ENABLE | SINGLESTEP | USE_SW_BP;
/// Bits `KVM_SET_GUEST_DEBUG` knows but this module refuses.
pub const UNSUPPORTED: u32 = USE_HW_BP | INJECT_DB | INJECT_BP | BLOCKIRQ;

/// `sizeof(struct kvm_guest_debug)`: control, pad, `debugreg[8]`.
pub const UAPI_SIZE: usize = 72;

/// RFLAGS.TF.
pub const RFLAGS_TF: u64 = 1 << 8;
/// #DB.
pub const DB_VECTOR: u8 = 1;
/// #BP.
pub const BP_VECTOR: u8 = 3;

/// `struct kvm_guest_debug`, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UapiGuestDebug {
    /// `KVM_GUESTDBG_*`.
    pub control: u32,
    /// `arch.debugreg[8]` (used only with hardware breakpoints).
    pub debugreg: [u64; 8],
}

impl UapiGuestDebug {
    /// Decodes the structure from its bytes.
    pub fn from_bytes(b: &[u8; UAPI_SIZE]) -> Self {
        let mut d = UapiGuestDebug {
            control: le_u32(b, 0),
            ..Default::default()
        };
        for (i, r) in d.debugreg.iter_mut().enumerate() {
            *r = le_u64(b, 8 + 8 * i);
        }
        d
    }
}

/// A vCPU's guest-debug state (`vcpu->guest_debug`, `vcpu->arch.singlestep_rip`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestDebug {
    control: u32,
    /// Linear RIP when single-stepping was enabled: TF is injected only while the guest is
    /// still there (upstream's `kvm_is_linear_rip(singlestep_rip)`), i.e. on the set call.
    singlestep_rip: u64,
}

impl GuestDebug {
    /// The control word in force (0 when disabled).
    pub fn control(&self) -> u32 {
        self.control
    }

    /// Whether single-stepping is on.
    pub fn singlestep(&self) -> bool {
        self.control & SINGLESTEP != 0
    }

    /// Whether software breakpoints exit to userspace.
    pub fn sw_bp(&self) -> bool {
        self.control & USE_SW_BP != 0
    }

    /// RFLAGS as userspace and the guest-visible state see it (`kvm_get_rflags`): the injected
    /// TF is hidden while single-stepping.
    pub fn visible_rflags(&self, rflags: u64) -> u64 {
        if self.singlestep() {
            rflags & !RFLAGS_TF
        } else {
            rflags
        }
    }

    /// RFLAGS to load for a value `rflags` set at linear RIP `linear_rip` (`__kvm_set_rflags`).
    pub fn hardware_rflags(&self, rflags: u64, linear_rip: u64) -> u64 {
        if self.singlestep() && linear_rip == self.singlestep_rip {
            rflags | RFLAGS_TF
        } else {
            rflags
        }
    }

    /// `KVM_SET_GUEST_DEBUG`: validates `d`, installs it and returns the new RFLAGS for the
    /// vCPU whose RFLAGS are `rflags` and linear RIP `linear_rip` (the injected TF of the old
    /// setting removed, the new one's added).
    pub fn set(&mut self, d: &UapiGuestDebug, rflags: u64, linear_rip: u64) -> Result<u64, Errno> {
        if d.control & UNSUPPORTED != 0 {
            return Err(Errno::EINVAL);
        }
        let visible = self.visible_rflags(rflags);
        self.control = if d.control & ENABLE != 0 {
            d.control
        } else {
            0
        };
        if self.singlestep() {
            self.singlestep_rip = linear_rip;
        }
        Ok(self.hardware_rflags(visible, linear_rip))
    }

    /// Exception vectors the backend must intercept for guest debugging (bit n = vector n;
    /// upstream `svm_update_exception_bitmap`).
    pub fn intercepts(&self) -> u32 {
        let mut m = 0;
        if self.control & ENABLE != 0 {
            if self.singlestep() {
                m |= 1 << DB_VECTOR;
            }
            if self.sw_bp() {
                m |= 1 << BP_VECTOR;
            }
        }
        m
    }

    /// An intercepted #DB: the exit to userspace if guest debugging wants it, `None` if the
    /// #DB belongs to the guest (reinject it with DR6's payload).
    pub fn on_db(&self, linear_rip: u64, dr6: u64, dr7: u64) -> Option<Exit> {
        self.singlestep().then_some(Exit::Debug {
            exception: u32::from(DB_VECTOR),
            pc: linear_rip,
            dr6,
            dr7,
        })
    }

    /// An intercepted #BP (`bp_interception`): exits with exception 3 at the INT3 (its linear
    /// address, RIP not advanced); `None` if software breakpoints are off (reinject #BP).
    pub fn on_bp(&self, linear_rip: u64, dr6: u64, dr7: u64) -> Option<Exit> {
        self.sw_bp().then_some(Exit::Debug {
            exception: u32::from(BP_VECTOR),
            pc: linear_rip,
            dr6,
            dr7,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dbg(control: u32) -> UapiGuestDebug {
        UapiGuestDebug {
            control,
            debugreg: [0; 8],
        }
    }

    #[test]
    fn decode() {
        let mut b = [0u8; UAPI_SIZE];
        b[0] = 3;
        b[8 + 7 * 8] = 0x55;
        let d = UapiGuestDebug::from_bytes(&b);
        assert_eq!(d.control, 3);
        assert_eq!(d.debugreg[7], 0x55);
    }

    #[test]
    fn singlestep_cycle() {
        let mut g = GuestDebug::default();
        // Enable: TF appears for the hardware, not for userspace.
        let rf = g.set(&dbg(ENABLE | SINGLESTEP), 0x2, 0x1000).unwrap();
        assert_eq!(rf, 0x102);
        assert_eq!(g.visible_rflags(rf), 0x2);
        assert_eq!(g.intercepts(), 1 << 1);
        let e = g.on_db(0x1003, 0xffff_4ff0, 0x400).unwrap();
        assert_eq!(
            e,
            Exit::Debug {
                exception: 1,
                pc: 0x1003,
                dr6: 0xffff_4ff0,
                dr7: 0x400
            }
        );
        // Disable (control 0): TF goes away, no intercepts, #DB is the guest's.
        let rf = g.set(&dbg(0), rf, 0x1007).unwrap();
        assert_eq!(rf, 0x2);
        assert_eq!(g.intercepts(), 0);
        assert!(g.on_db(0x1007, 0, 0).is_none());
    }

    #[test]
    fn enable_bit_required() {
        let mut g = GuestDebug::default();
        let rf = g.set(&dbg(SINGLESTEP), 0x2, 0).unwrap();
        assert_eq!(rf, 0x2);
        assert_eq!(g.control(), 0);
    }

    #[test]
    fn guest_tf_kept_without_singlestep() {
        let mut g = GuestDebug::default();
        assert_eq!(g.set(&dbg(ENABLE | USE_SW_BP), 0x102, 0).unwrap(), 0x102);
        assert_eq!(g.intercepts(), 1 << 3);
        assert!(g.on_bp(0x10, 0, 0x400).is_some());
        assert!(g.on_db(0x10, 0, 0x400).is_none());
    }

    #[test]
    fn unsupported_refused_unchanged() {
        let mut g = GuestDebug::default();
        g.set(&dbg(ENABLE | SINGLESTEP), 0x2, 5).unwrap();
        for bad in [USE_HW_BP, INJECT_DB, INJECT_BP, BLOCKIRQ] {
            assert_eq!(g.set(&dbg(ENABLE | bad), 0x102, 5), Err(Errno::EINVAL));
        }
        assert!(g.singlestep());
    }
}
