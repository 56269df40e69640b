// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_SET_GUEST_DEBUG` (upstream `kvm_arch_vcpu_ioctl_set_guest_debug`, `__kvm_set_rflags`,
//! `kvm_get_rflags`, SVM's `db_interception` / `bp_interception`).
//!
//! Single-step sets RFLAGS.TF for the guest (userspace does not see it: reads of RFLAGS strip it
//! while single-stepping, [`GuestDebug::visible_rflags`]) and intercepts #DB, so after each
//! instruction the vCPU exits with `KVM_EXIT_DEBUG` (exception 1, pc = CS.base + RIP, DR6 and
//! DR7 as the hardware left them). An instruction the module skips or emulates instead of the
//! guest executing it ends the same way ([`GuestDebug::after_instruction`], upstream
//! `kvm_skip_emulated_instruction` → `kvm_vcpu_do_singlestep`): with TF set in RFLAGS before it,
//! the exit (DR6 = BS | active-low) when single-stepping, else a #DB (DR6.BS) for the guest,
//! whose own TF it is. Software breakpoints intercept #BP and exit with exception 3. Hardware
//! breakpoints (`KVM_GUESTDBG_USE_HW_BP`) put `debugreg[0..3]` and `debugreg[7]` into the
//! guest's DR0-3/DR7 while the guest runs ([`GuestDebug::hw_breakpoints`]); every #DB then exits
//! (`db_interception`), and the guest's own MOV DR is intercepted and emulated against its own
//! registers ([`mov_dr`]). `KVM_GUESTDBG_INJECT_DB/BP` queue the exception (EBUSY while one or a
//! triple fault is pending).
//!
//! `KVM_GUESTDBG_BLOCKIRQ` ([`GuestDebug::blocks_irq`]) keeps NMIs and interrupts from being
//! injected and their windows from opening (upstream `kvm_check_and_inject_events` returns
//! before them; HOOK(abi) in `src/irq/inject.rs`); exceptions and re-injection still happen.
//! `KVM_CAP_SET_GUEST_DEBUG2` answers [`SUPPORTED`], upstream's whole valid mask.
//! Unknown bits are accepted and ignored, as 6.12 does: its `kvm_arch_vcpu_ioctl_set_guest_debug`
//! never checks `control` against `KVM_GUESTDBG_VALID_MASK`, which it only reports (x86.c
//! `KVM_CAP_SET_GUEST_DEBUG2`); upstream kvm_amd answers 0 to bits 2 and 21 in the same guest.

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
/// `KVM_GUESTDBG_VALID_MASK` (x86): what `KVM_CAP_SET_GUEST_DEBUG2` reports; other bits mean
/// nothing (6.12 stores them and never reads them).
pub const VALID_MASK: u32 =
    ENABLE | SINGLESTEP | USE_SW_BP | USE_HW_BP | INJECT_DB | INJECT_BP | BLOCKIRQ;
/// What this module implements: the whole valid mask.
pub const SUPPORTED: u32 = VALID_MASK;
/// DR6.BS (single step).
pub const DR6_BS: u64 = 1 << 14;
/// DR6's active-low bits (`DR6_ACTIVE_LOW`).
pub const DR6_ACTIVE_LOW: u64 = 0xffff_0ff0;
/// DR7's enable bits L0-3/G0-3 (`DR7_BP_EN_MASK`).
pub const DR7_BP_EN_MASK: u64 = 0xff;

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

/// A vCPU's guest-debug state (`vcpu->guest_debug`, `vcpu->arch.singlestep_rip`,
/// `eff_db`, `guest_debug_dr7`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestDebug {
    control: u32,
    /// Linear RIP when single-stepping was enabled: TF is injected only while the guest is
    /// still there (upstream's `kvm_is_linear_rip(singlestep_rip)`), i.e. on the set call.
    singlestep_rip: u64,
    /// `debugreg[0..3]` with `KVM_GUESTDBG_USE_HW_BP`.
    hw_db: [u64; 4],
    /// `debugreg[7]` with `KVM_GUESTDBG_USE_HW_BP`.
    hw_dr7: u64,
}

/// What an instruction the module completed for the guest leaves behind
/// ([`GuestDebug::after_instruction`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterStep {
    /// Nothing: TF was clear.
    None,
    /// `KVM_EXIT_DEBUG` (guest debugging single-steps).
    Exit(Exit),
    /// A #DB for the guest with this DR6 payload (the guest's own TF).
    QueueDb(u64),
}

/// What [`GuestDebug::set`] asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetOutcome {
    /// The new RFLAGS.
    pub rflags: u64,
    /// An exception to queue (`KVM_GUESTDBG_INJECT_DB/BP`): #DB or #BP.
    pub inject: Option<u8>,
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

    /// Whether `KVM_GUESTDBG_BLOCKIRQ` is in force: no interrupt may be injected (upstream
    /// `kvm_check_and_inject_events`): the injection path (`src/irq/inject.rs`) checks it.
    pub fn blocks_irq(&self) -> bool {
        self.control & BLOCKIRQ != 0
    }

    /// Whether hardware breakpoints are the debugger's.
    pub fn hw_bp(&self) -> bool {
        self.control & USE_HW_BP != 0
    }

    /// The DR0-3 and DR7 to load while the guest runs instead of its own, with hardware
    /// breakpoints on (upstream `eff_db` and `guest_debug_dr7` through `kvm_update_dr7`).
    pub fn hw_breakpoints(&self) -> Option<([u64; 4], u64)> {
        self.hw_bp().then_some((self.hw_db, self.hw_dr7))
    }

    /// After an instruction the module skipped or emulated to completion for the guest
    /// (upstream `kvm_skip_emulated_instruction` and `x86_emulate_instruction`'s tail):
    /// `rflags_before` is RFLAGS as it was before the instruction, with any TF guest debugging
    /// injected; `linear_rip` is CS.base + the new RIP, `dr7` the DR7 in force.
    pub fn after_instruction(&self, rflags_before: u64, linear_rip: u64, dr7: u64) -> AfterStep {
        if rflags_before & RFLAGS_TF == 0 {
            AfterStep::None
        } else if self.singlestep() {
            AfterStep::Exit(Exit::Debug {
                exception: u32::from(DB_VECTOR),
                pc: linear_rip,
                dr6: DR6_BS | DR6_ACTIVE_LOW,
                dr7,
            })
        } else {
            AfterStep::QueueDb(DR6_BS)
        }
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

    /// `KVM_SET_GUEST_DEBUG` (`kvm_arch_vcpu_ioctl_set_guest_debug`): validates `d` (an
    /// injection while an exception or triple fault is pending, `exception_pending`
    /// (`kvm_is_exception_pending`; an injected exception does not count): `EBUSY`;
    /// bits outside `KVM_GUESTDBG_VALID_MASK` are ignored, as 6.12 does), installs it and returns
    /// the new RFLAGS for the vCPU whose RFLAGS are `rflags` and linear RIP `linear_rip` (the
    /// injected TF of the old setting removed, the new one's added), and the exception to queue.
    pub fn set(
        &mut self,
        d: &UapiGuestDebug,
        rflags: u64,
        linear_rip: u64,
        exception_pending: bool,
    ) -> Result<SetOutcome, Errno> {
        let inject = if d.control & (INJECT_DB | INJECT_BP) != 0 {
            if exception_pending {
                return Err(Errno::EBUSY);
            }
            Some(if d.control & INJECT_DB != 0 {
                DB_VECTOR
            } else {
                BP_VECTOR
            })
        } else {
            None
        };
        let visible = self.visible_rflags(rflags);
        self.control = if d.control & ENABLE != 0 {
            d.control
        } else {
            0
        };
        if self.hw_bp() {
            self.hw_db = [d.debugreg[0], d.debugreg[1], d.debugreg[2], d.debugreg[3]];
            self.hw_dr7 = d.debugreg[7];
        } else {
            self.hw_db = [0; 4];
            self.hw_dr7 = 0;
        }
        if self.singlestep() {
            self.singlestep_rip = linear_rip;
        }
        Ok(SetOutcome {
            rflags: self.hardware_rflags(visible, linear_rip),
            inject,
        })
    }

    /// Exception vectors the backend must intercept for guest debugging (bit n = vector n;
    /// upstream `svm_update_exception_bitmap`).
    pub fn intercepts(&self) -> u32 {
        let mut m = 0;
        if self.control & ENABLE != 0 {
            if self.singlestep() || self.hw_bp() {
                m |= 1 << DB_VECTOR;
            }
            if self.sw_bp() {
                m |= 1 << BP_VECTOR;
            }
        }
        m
    }

    /// An intercepted #DB (`db_interception`): the exit to userspace if guest debugging
    /// single-steps or uses hardware breakpoints, `None` if the #DB belongs to the guest
    /// (reinject it with DR6's payload).
    pub fn on_db(&self, linear_rip: u64, dr6: u64, dr7: u64) -> Option<Exit> {
        (self.singlestep() || self.hw_bp()).then_some(Exit::Debug {
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

/// What an emulated MOV to or from a debug register does ([`mov_dr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrOutcome {
    /// A read: the value for the register operand.
    Read(u64),
    /// A write, done.
    Written,
    /// #UD (DR4/DR5 with CR4.DE).
    Ud,
    /// #GP(0) (CPL > 0, or bits 63:32 written to DR6/DR7).
    Gp,
    /// #DB: DR7.GD was set (DR6.BD set; the #DB is queued without a payload, as upstream's
    /// emulator does).
    GeneralDetect,
}

/// DR7.GD.
const DR7_GD: u64 = 1 << 13;
/// DR6.BD.
const DR6_BD: u64 = 1 << 13;
/// `DR6_VOLATILE`: the DR6 bits a write keeps.
const DR6_VOLATILE: u64 = 0x0001_e80f;
/// `DR6_FIXED_1`.
const DR6_FIXED_1: u64 = 0xfffe_0ff0;
/// `DR6_RTM` (bit 16, active low: fixed 1 without RTM).
const DR6_RTM: u64 = 1 << 16;
/// `DR6_BUS_LOCK` (bit 11, active low: fixed 1 without bus-lock detection).
const DR6_BUS_LOCK: u64 = 1 << 11;
/// `DR7_VOLATILE`.
const DR7_VOLATILE: u64 = 0xffff_2bff;
/// `DR7_FIXED_1`.
const DR7_FIXED_1: u64 = 0x400;
/// CR4.DE.
const CR4_DE: u64 = 1 << 3;

/// A guest's MOV from (`write` `None`) or to debug register `dr` (0-7), emulated against its
/// own registers in `st` (upstream's emulator `em_dr_read`/`em_dr_write` with `Priv`,
/// `check_dr_write`/`check_dr_read`, then `kvm_get_dr`/`kvm_set_dr`), in that order: CPL > 0 is
/// #GP(0); a 64-bit write of bits 63:32 to DR6/DR7 is #GP(0); DR4/DR5 with CR4.DE are #UD,
/// else they alias DR6/DR7; DR7.GD makes it a #DB with DR6.BD; a DR6 write keeps the volatile
/// bits over the fixed ones (RTM and bus-lock bits fixed 1 when the guest lacks them), a DR7
/// write the volatile ones with bit 10 set.
pub fn mov_dr(
    st: &mut crate::state::CpuState,
    dr: u8,
    write: Option<u64>,
    long64: bool,
    cpl: u8,
    guest_rtm: bool,
    guest_bus_lock: bool,
) -> DrOutcome {
    if cpl != 0 {
        return DrOutcome::Gp;
    }
    if let Some(v) = write {
        if long64 && v >> 32 != 0 && matches!(dr, 6 | 7) {
            return DrOutcome::Gp;
        }
    }
    if matches!(dr, 4 | 5) && st.cr4 & CR4_DE != 0 {
        return DrOutcome::Ud;
    }
    if st.dr7 & DR7_GD != 0 {
        st.dr6 = (st.dr6 & !0xf) | DR6_BD | DR6_ACTIVE_LOW;
        return DrOutcome::GeneralDetect;
    }
    let dr = match dr {
        4 => 6,
        5 => 7,
        d => d,
    };
    let Some(v) = write else {
        return DrOutcome::Read(match dr {
            0..=3 => st.db[usize::from(dr)],
            6 => st.dr6,
            _ => st.dr7,
        });
    };
    match dr {
        0..=3 => st.db[usize::from(dr)] = v,
        6 | 7 if v >> 32 != 0 => return DrOutcome::Gp,
        6 => {
            let mut fixed = DR6_FIXED_1;
            if !guest_rtm {
                fixed |= DR6_RTM;
            }
            if !guest_bus_lock {
                fixed |= DR6_BUS_LOCK;
            }
            st.dr6 = (v & DR6_VOLATILE) | fixed;
        }
        _ => st.dr7 = (v & DR7_VOLATILE) | DR7_FIXED_1,
    }
    DrOutcome::Written
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
        let rf = g
            .set(&dbg(ENABLE | SINGLESTEP), 0x2, 0x1000, false)
            .unwrap()
            .rflags;
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
        let rf = g.set(&dbg(0), rf, 0x1007, false).unwrap().rflags;
        assert_eq!(rf, 0x2);
        assert_eq!(g.intercepts(), 0);
        assert!(g.on_db(0x1007, 0, 0).is_none());
    }

    #[test]
    fn enable_bit_required() {
        let mut g = GuestDebug::default();
        let rf = g.set(&dbg(SINGLESTEP), 0x2, 0, false).unwrap().rflags;
        assert_eq!(rf, 0x2);
        assert_eq!(g.control(), 0);
    }

    #[test]
    fn guest_tf_kept_without_singlestep() {
        let mut g = GuestDebug::default();
        assert_eq!(
            g.set(&dbg(ENABLE | USE_SW_BP), 0x102, 0, false)
                .unwrap()
                .rflags,
            0x102
        );
        assert_eq!(g.intercepts(), 1 << 3);
        assert!(g.on_bp(0x10, 0, 0x400).is_some());
        assert!(g.on_db(0x10, 0, 0x400).is_none());
    }

    #[test]
    fn unknown_bits_are_ignored_as_6_12_does() {
        let mut g = GuestDebug::default();
        for bad in [1 << 2, 1 << 21, 1 << 31] {
            let out = g
                .set(&dbg(ENABLE | SINGLESTEP | bad), 0x2, 5, false)
                .unwrap();
            assert_eq!(out.rflags, 0x102);
            assert!(out.inject.is_none());
            assert!(g.singlestep());
        }
        let out = g.set(&dbg(1 << 2), 0x102, 5, false).unwrap();
        assert_eq!(out.rflags, 0x2);
        assert!(!g.singlestep());
    }

    #[test]
    fn blockirq_is_accepted_and_reported() {
        let mut g = GuestDebug::default();
        g.set(&dbg(ENABLE | BLOCKIRQ), 0x2, 5, false).unwrap();
        assert!(g.blocks_irq());
        // Without ENABLE the whole control word is dropped.
        g.set(&dbg(BLOCKIRQ), 0x2, 5, false).unwrap();
        assert!(!g.blocks_irq());
    }

    #[test]
    fn inject_needs_no_pending_exception() {
        let mut g = GuestDebug::default();
        assert_eq!(
            g.set(&dbg(ENABLE | INJECT_DB), 0x2, 0, true),
            Err(Errno::EBUSY)
        );
        let o = g.set(&dbg(ENABLE | INJECT_BP), 0x2, 0, false).unwrap();
        assert_eq!(o.inject, Some(BP_VECTOR));
        // DB wins when both are asked (upstream checks INJECT_DB first).
        let o = g.set(&dbg(INJECT_DB | INJECT_BP), 0x2, 0, false).unwrap();
        assert_eq!(o.inject, Some(DB_VECTOR));
        assert_eq!(g.control(), 0);
    }

    #[test]
    fn hardware_breakpoints() {
        let mut g = GuestDebug::default();
        let mut d = dbg(ENABLE | USE_HW_BP);
        d.debugreg = [0x1000, 0x2000, 0x3000, 0x4000, 0xdead, 0xbeef, 0, 0x401];
        g.set(&d, 0x2, 0, false).unwrap();
        assert_eq!(
            g.hw_breakpoints(),
            Some(([0x1000, 0x2000, 0x3000, 0x4000], 0x401))
        );
        assert_eq!(g.intercepts(), 1 << DB_VECTOR);
        assert!(g.on_db(0x1000, 0xffff_0ff1, 0x401).is_some());
        // Off again: the guest's own registers, #DB is the guest's.
        g.set(&dbg(ENABLE), 0x2, 0, false).unwrap();
        assert_eq!(g.hw_breakpoints(), None);
        assert!(g.on_db(0x1000, 0, 0x400).is_none());
    }

    #[test]
    fn after_instruction_steps() {
        let mut g = GuestDebug::default();
        assert_eq!(g.after_instruction(0x2, 0x10, 0x400), AfterStep::None);
        // The guest's own TF: a #DB with DR6.BS for the guest.
        assert_eq!(
            g.after_instruction(0x102, 0x10, 0x400),
            AfterStep::QueueDb(DR6_BS)
        );
        let rf = g
            .set(&dbg(ENABLE | SINGLESTEP), 0x2, 0x10, false)
            .unwrap()
            .rflags;
        assert_eq!(
            g.after_instruction(rf, 0x12, 0x400),
            AfterStep::Exit(Exit::Debug {
                exception: 1,
                pc: 0x12,
                dr6: 0xffff_4ff0,
                dr7: 0x400
            })
        );
    }

    #[test]
    fn mov_dr_rules() {
        use crate::state::CpuState;
        let mut st = CpuState {
            dr6: DR6_ACTIVE_LOW,
            dr7: 0x400,
            ..Default::default()
        };
        assert_eq!(
            mov_dr(&mut st, 0, Some(5), true, 3, false, false),
            DrOutcome::Gp
        );
        assert_eq!(
            mov_dr(&mut st, 1, Some(0x1234), true, 0, false, false),
            DrOutcome::Written
        );
        assert_eq!(st.db[1], 0x1234);
        assert_eq!(
            mov_dr(&mut st, 1, None, true, 0, false, false),
            DrOutcome::Read(0x1234)
        );
        assert_eq!(
            mov_dr(&mut st, 7, Some(1 << 32), true, 0, false, false),
            DrOutcome::Gp
        );
        // DR5 aliases DR7 without CR4.DE; the write keeps the volatile bits, bit 10 set.
        assert_eq!(
            mov_dr(&mut st, 5, Some(0x1_0001), true, 0, false, false),
            DrOutcome::Written
        );
        assert_eq!(st.dr7, 0x1_0401);
        assert_eq!(
            mov_dr(&mut st, 6, Some(0), true, 0, false, false),
            DrOutcome::Written
        );
        assert_eq!(st.dr6, 0xffff_0ff0);
        assert_eq!(
            mov_dr(&mut st, 6, Some(0), true, 0, true, false),
            DrOutcome::Written
        );
        assert_eq!(st.dr6, 0xfffe_0ff0);
        st.cr4 = CR4_DE;
        assert_eq!(
            mov_dr(&mut st, 4, None, true, 0, false, false),
            DrOutcome::Ud
        );
        // General detect: #DB with DR6.BD.
        st.dr7 |= DR7_GD;
        assert_eq!(
            mov_dr(&mut st, 0, None, true, 0, false, false),
            DrOutcome::GeneralDetect
        );
        assert_eq!(st.dr6 & DR6_BD, DR6_BD);
    }
}
