// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_GET/SET_VCPU_EVENTS`, `KVM_GET/SET_DEBUGREGS`, `KVM_GET/SET_MP_STATE` and
//! `KVM_GET/SET_NESTED_STATE` on [`CpuState`], with upstream's rules (`arch/x86/kvm/x86.c`
//! `kvm_vcpu_ioctl_x86_get/set_vcpu_events`, `kvm_vcpu_ioctl_x86_get/set_debugregs`,
//! `kvm_arch_vcpu_ioctl_set_mpstate`; `svm/nested.c` `svm_get/set_nested_state`) for a VM without
//! an in-kernel LAPIC, SMM or nested SVM; `KVM_CAP_EXCEPTION_PAYLOAD` and
//! `KVM_CAP_X86_TRIPLE_FAULT_EVENT` as the VM enabled them ([`EventsAbi`]).

use crate::errno::{Errno, Result};
use crate::regs::DR6_ACTIVE_LOW;
use crate::state::{CpuState, QueuedException, QueuedInterrupt};
use crate::uapi::{
    mp_state, vcpu_events as ev, KvmDebugregs, KvmMpState, KvmNestedState, KvmVcpuEvents,
};

/// `BP_VECTOR`, `OF_VECTOR`: software exceptions (INT3, INTO) are not reported.
fn is_soft_exception(v: u8) -> bool {
    v == 3 || v == 4
}

/// `NMI_VECTOR`.
const NMI_VECTOR: u8 = 2;
/// `DB_VECTOR`.
const DB_VECTOR: u8 = 1;
/// `PF_VECTOR`.
const PF_VECTOR: u8 = 14;

/// Upstream `kvm_inject_exception`'s first step: outside protected mode (CR0.PE clear) an
/// exception delivers no error code, so a queued one loses it when it is injected (and stays
/// without it, e.g. for `KVM_GET_VCPU_EVENTS` while it is in flight). Exceptions queue their
/// error code whatever the mode; it is dropped only here, as upstream does (AMD's intercepted
/// #PF in paged real mode does report one).
pub fn strip_real_mode_error_code(s: &mut CpuState) {
    if s.cr0 & crate::regs::cr0::PE == 0 {
        s.events.exception.has_error_code = false;
    }
}

/// Upstream `kvm_deliver_exception_payload`: a pending #PF's payload becomes CR2, a #DB's the
/// DR6 bits; the payload is consumed.
pub fn deliver_exception_payload(s: &mut CpuState) {
    let ex = s.events.exception;
    if !ex.has_payload {
        return;
    }
    match ex.vector {
        DB_VECTOR => {
            // DR6 bits 0-3 are replaced; the active-low bits toggle with the payload; BIT(12)
            // (BLD on some CPUs) is cleared.
            s.dr6 &= !0xf;
            s.dr6 |= DR6_ACTIVE_LOW;
            s.dr6 |= ex.payload;
            s.dr6 ^= ex.payload & DR6_ACTIVE_LOW;
            s.dr6 &= !(1 << 12);
        }
        PF_VECTOR => s.cr2 = ex.payload,
        _ => {}
    }
    s.events.exception.has_payload = false;
    s.events.exception.payload = 0;
}

/// The VM's `KVM_ENABLE_CAP` switches that change the events ABI (upstream
/// `kvm->arch.exception_payload_enabled`, `kvm->arch.triple_fault_event`; both off at VM
/// creation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventsAbi {
    /// `KVM_CAP_EXCEPTION_PAYLOAD` is enabled: a pending exception stays pending with its
    /// payload undelivered (CR2/DR6 untouched) until it is injected, and
    /// `KVM_GET/SET_VCPU_EVENTS` show pending and injected apart, with the payload.
    pub exception_payload: bool,
    /// `KVM_CAP_X86_TRIPLE_FAULT_EVENT` is enabled: `KVM_GET/SET_VCPU_EVENTS` show and set a
    /// pending triple fault (`KVM_VCPUEVENT_VALID_TRIPLE_FAULT`), which the next `KVM_RUN`
    /// turns into `KVM_EXIT_SHUTDOWN`.
    pub triple_fault_event: bool,
}

/// Without `KVM_CAP_EXCEPTION_PAYLOAD`, a pending exception's payload is delivered before
/// userspace sees the state (upstream `kvm_handle_exception_payload_quirk`: at
/// `KVM_GET_VCPU_EVENTS`, `KVM_GET_DEBUGREGS` and `KVM_GET_SREGS(2)`), since such userspace
/// may not carry the payload across a save/restore.
pub fn handle_payload_quirk(s: &mut CpuState, abi: EventsAbi) {
    if !abi.exception_payload && s.events.exception.pending && s.events.exception.has_payload {
        deliver_exception_payload(s);
    }
}

/// Upstream `process_nmi`: queued NMIs collapse to two, or one while an NMI is in service.
fn process_nmi(s: &mut CpuState) {
    let limit = if s.events.nmi_masked || s.events.nmi_injected {
        1
    } else {
        2
    };
    s.events.nmi_pending = s.events.nmi_pending.min(limit);
}

/// `KVM_GET_VCPU_EVENTS`.
pub fn get_vcpu_events(s: &mut CpuState, abi: EventsAbi) -> KvmVcpuEvents {
    process_nmi(s);
    handle_payload_quirk(s, abi);
    let e = &s.events;
    let ex = e.exception;
    let mut k = KvmVcpuEvents::default();
    if !is_soft_exception(ex.vector) {
        k.exception_injected = ex.injected as u8;
        k.exception_pending = ex.pending as u8;
        // Without KVM_CAP_EXCEPTION_PAYLOAD, pending and injected are conflated (ABI
        // compatibility).
        if !abi.exception_payload {
            k.exception_injected |= ex.pending as u8;
        }
    }
    k.exception_nr = ex.vector;
    k.exception_has_error_code = ex.has_error_code as u8;
    k.exception_error_code = ex.error_code;
    k.exception_has_payload = ex.has_payload as u8;
    k.exception_payload = ex.payload;
    k.interrupt_injected = (e.interrupt.injected && !e.interrupt.soft) as u8;
    k.interrupt_nr = e.interrupt.nr;
    // SVM reports one shadow bit for both kinds.
    k.interrupt_shadow = if e.interrupt_shadow != 0 {
        ev::SHADOW_INT_STI | ev::SHADOW_INT_MOV_SS
    } else {
        0
    };
    k.nmi_injected = e.nmi_injected as u8;
    k.nmi_pending = e.nmi_pending;
    k.nmi_masked = e.nmi_masked as u8;
    k.flags = ev::VALID_NMI_PENDING | ev::VALID_SHADOW | ev::VALID_SMM;
    if abi.exception_payload {
        k.flags |= ev::VALID_PAYLOAD;
    }
    if abi.triple_fault_event {
        k.triple_fault_pending = s.events.triple_fault_pending as u8;
        k.flags |= ev::VALID_TRIPLE_FAULT;
    }
    k
}

/// `KVM_SET_VCPU_EVENTS`. As upstream, the checks that come after the state is written
/// (SMM, triple fault) leave the earlier fields written when they fail.
pub fn set_vcpu_events(s: &mut CpuState, k: &KvmVcpuEvents, abi: EventsAbi) -> Result {
    let valid = ev::VALID_NMI_PENDING
        | ev::VALID_SIPI_VECTOR
        | ev::VALID_SHADOW
        | ev::VALID_SMM
        | ev::VALID_PAYLOAD
        | ev::VALID_TRIPLE_FAULT;
    if k.flags & !valid != 0 {
        return Err(Errno::Einval);
    }
    let mut k = *k;
    if k.flags & ev::VALID_PAYLOAD != 0 {
        if !abi.exception_payload {
            return Err(Errno::Einval);
        }
        // A pending exception is not injected yet; only a pending one has a payload.
        if k.exception_pending != 0 {
            k.exception_injected = 0;
        } else {
            k.exception_has_payload = 0;
        }
    } else {
        k.exception_pending = 0;
        k.exception_has_payload = 0;
    }
    if (k.exception_injected != 0 || k.exception_pending != 0)
        && (k.exception_nr > 31 || k.exception_nr == NMI_VECTOR)
    {
        return Err(Errno::Einval);
    }
    // "INITs are latched while in SMM": mp_state is never INIT_RECEIVED without a LAPIC.
    if k.flags & ev::VALID_SMM != 0
        && (k.smi_smm != 0 || k.smi_pending != 0)
        && s.mp_state == mp_state::INIT_RECEIVED
    {
        return Err(Errno::Einval);
    }
    process_nmi(s);
    let e = &mut s.events;
    e.exception = QueuedException {
        injected: k.exception_injected != 0,
        pending: k.exception_pending != 0,
        vector: k.exception_nr,
        has_error_code: k.exception_has_error_code != 0,
        error_code: k.exception_error_code,
        has_payload: k.exception_has_payload != 0,
        payload: k.exception_payload,
    };
    e.interrupt = QueuedInterrupt {
        injected: k.interrupt_injected != 0,
        nr: k.interrupt_nr,
        soft: k.interrupt_soft != 0,
    };
    if k.flags & ev::VALID_SHADOW != 0 {
        e.interrupt_shadow = k.interrupt_shadow;
    }
    e.nmi_injected = k.nmi_injected != 0;
    if k.flags & ev::VALID_NMI_PENDING != 0 {
        e.nmi_pending = k.nmi_pending;
    }
    e.nmi_masked = k.nmi_masked != 0;
    // No in-kernel LAPIC: the SIPI vector is ignored.
    if k.flags & ev::VALID_SMM != 0
        && (k.smi_smm != 0 || k.smi_pending != 0 || k.smi_smm_inside_nmi != 0)
    {
        // No SMM.
        return Err(Errno::Einval);
    }
    if k.flags & ev::VALID_TRIPLE_FAULT != 0 {
        if !abi.triple_fault_event {
            return Err(Errno::Einval);
        }
        s.events.triple_fault_pending = k.triple_fault_pending != 0;
    }
    Ok(())
}

/// `KVM_GET_DEBUGREGS`.
pub fn get_debugregs(s: &mut CpuState, abi: EventsAbi) -> KvmDebugregs {
    handle_payload_quirk(s, abi);
    KvmDebugregs {
        db: s.db,
        dr6: s.dr6,
        dr7: s.dr7,
        ..KvmDebugregs::default()
    }
}

/// `KVM_SET_DEBUGREGS`: no flags; DR6 and DR7 bits 63:32 are reserved.
pub fn set_debugregs(s: &mut CpuState, k: &KvmDebugregs) -> Result {
    if k.flags != 0 || k.dr6 >> 32 != 0 || k.dr7 >> 32 != 0 {
        return Err(Errno::Einval);
    }
    s.db = k.db;
    s.dr6 = k.dr6;
    s.dr7 = k.dr7;
    Ok(())
}

/// `KVM_GET_MP_STATE` (no in-kernel LAPIC: no events to accept, no PV unhalt).
pub fn get_mp_state(s: &CpuState) -> KvmMpState {
    KvmMpState {
        mp_state: s.mp_state,
    }
}

/// `KVM_SET_MP_STATE` without an in-kernel LAPIC: only RUNNABLE; the LAPIC states and unknown
/// values are `EINVAL`.
pub fn set_mp_state(s: &mut CpuState, k: &KvmMpState) -> Result {
    match k.mp_state {
        mp_state::RUNNABLE => {
            s.mp_state = mp_state::RUNNABLE;
            Ok(())
        }
        _ => Err(Errno::Einval),
    }
}

/// `KVM_SET_MP_STATE` with an in-kernel LAPIC (upstream `kvm_arch_vcpu_ioctl_set_mpstate`):
/// the state to store and whether a SIPI becomes pending (`SIPI_RECEIVED` is stored as
/// `INIT_RECEIVED` plus a pending SIPI); RUNNABLE, UNINITIALIZED, INIT_RECEIVED, HALTED,
/// SIPI_RECEIVED and AP_RESET_HOLD (9: halted until an event, as HALTED) are accepted,
/// anything else (STOPPED..LOAD, SUSPENDED, unknown) is `EINVAL`.
pub fn lapic_mp_state(k: &KvmMpState) -> Result<(u32, bool)> {
    match k.mp_state {
        mp_state::RUNNABLE
        | mp_state::UNINITIALIZED
        | mp_state::HALTED
        | mp_state::AP_RESET_HOLD
        | mp_state::INIT_RECEIVED => Ok((k.mp_state, false)),
        mp_state::SIPI_RECEIVED => Ok((mp_state::INIT_RECEIVED, true)),
        _ => Err(Errno::Einval),
    }
}

/// `KVM_STATE_NESTED_FORMAT_SVM`.
pub const NESTED_FORMAT_SVM: u16 = 1;
/// `KVM_STATE_NESTED_GUEST_MODE`.
pub const NESTED_GUEST_MODE: u16 = 0x1;
/// `KVM_STATE_NESTED_RUN_PENDING`.
pub const NESTED_RUN_PENDING: u16 = 0x2;
/// `KVM_STATE_NESTED_EVMCS`.
pub const NESTED_EVMCS: u16 = 0x4;
/// `KVM_STATE_NESTED_MTF_PENDING`.
pub const NESTED_MTF_PENDING: u16 = 0x8;
/// `KVM_STATE_NESTED_GIF_SET`.
pub const NESTED_GIF_SET: u16 = 0x100;
/// `KVM_STATE_NESTED_SVM_VMCB_SIZE`.
pub const NESTED_SVM_VMCB_SIZE: u32 = 4096;
/// The size `KVM_CHECK_EXTENSION(KVM_CAP_NESTED_STATE)` reports on SVM (header + VMCB), also
/// when nesting is off (`svm_get_nested_state(NULL, ..)`).
pub const NESTED_STATE_MAX_SIZE: u32 = 128 + NESTED_SVM_VMCB_SIZE;

/// `KVM_GET_NESTED_STATE` (`svm_get_nested_state` for a vCPU never in guest mode, GIF set):
/// `Ok(Some(header))` to copy out when the user buffer (`user_size`) holds it, `Ok(None)` when
/// only the needed size (128) must be reported back with `E2BIG`.
pub fn get_nested_state(user_size: u32) -> Option<KvmNestedState> {
    if user_size < 128 {
        return None;
    }
    Some(KvmNestedState {
        flags: NESTED_GIF_SET,
        format: NESTED_FORMAT_SVM,
        size: 128,
        hdr: [0; 120],
    })
}

/// `KVM_SET_NESTED_STATE` (the generic checks, then `svm_set_nested_state` for a vCPU with
/// EFER.SVME clear, which is always the case without nested SVM): only "GIF set, not in guest
/// mode" is accepted.
pub fn set_nested_state(k: &KvmNestedState) -> Result {
    if k.size < 128 {
        return Err(Errno::Einval);
    }
    if k.flags
        & !(NESTED_RUN_PENDING
            | NESTED_GUEST_MODE
            | NESTED_EVMCS
            | NESTED_MTF_PENDING
            | NESTED_GIF_SET)
        != 0
    {
        return Err(Errno::Einval);
    }
    if k.flags & NESTED_RUN_PENDING != 0 && k.flags & NESTED_GUEST_MODE == 0 {
        return Err(Errno::Einval);
    }
    if k.format != NESTED_FORMAT_SVM {
        return Err(Errno::Einval);
    }
    if k.flags & !(NESTED_GUEST_MODE | NESTED_RUN_PENDING | NESTED_GIF_SET) != 0 {
        return Err(Errno::Einval);
    }
    // EFER.SVME is never set here: GIF=1 and no guest mode are required.
    if k.flags != NESTED_GIF_SET {
        return Err(Errno::Einval);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuid::GuestCpu;

    /// A VM that enabled nothing.
    const OFF: EventsAbi = EventsAbi {
        exception_payload: false,
        triple_fault_event: false,
    };
    /// `KVM_CAP_EXCEPTION_PAYLOAD` enabled.
    const PAYLOAD: EventsAbi = EventsAbi {
        exception_payload: true,
        triple_fault_event: false,
    };
    /// `KVM_CAP_X86_TRIPLE_FAULT_EVENT` enabled.
    const TRIPLE: EventsAbi = EventsAbi {
        exception_payload: false,
        triple_fault_event: true,
    };

    fn state() -> CpuState {
        let caps = crate::msr::MsrCaps {
            limits: crate::regs::ModuleLimits {
                cr4_reserved: 0,
                efer_reserved: 0,
            },
            tsc_aux: false,
            arch_capabilities: 0,
            de_cfg: 0,
            host_ucode_rev: 0,
            feat_ctl: true,
            spec_ctrl: true,
        };
        crate::regs::reset(true, &GuestCpu::default(), &caps)
    }

    #[test]
    fn events_round_trip() {
        let mut s = state();
        let mut k = get_vcpu_events(&mut s, OFF);
        assert_eq!(
            k.flags,
            ev::VALID_NMI_PENDING | ev::VALID_SHADOW | ev::VALID_SMM
        );
        k.exception_injected = 1;
        k.exception_nr = 13;
        k.exception_has_error_code = 1;
        k.exception_error_code = 0x18;
        k.interrupt_injected = 1;
        k.interrupt_nr = 0x30;
        k.interrupt_shadow = ev::SHADOW_INT_STI;
        k.nmi_pending = 1;
        k.nmi_masked = 1;
        set_vcpu_events(&mut s, &k, OFF).unwrap();
        let got = get_vcpu_events(&mut s, OFF);
        assert_eq!(got.exception_injected, 1);
        assert_eq!((got.exception_nr, got.exception_error_code), (13, 0x18));
        assert_eq!((got.interrupt_injected, got.interrupt_nr), (1, 0x30));
        assert_eq!(got.interrupt_shadow, 3);
        assert_eq!((got.nmi_pending, got.nmi_masked), (1, 1));
        // Setting the state read back is accepted unchanged.
        set_vcpu_events(&mut s, &got, OFF).unwrap();
        assert_eq!(get_vcpu_events(&mut s, OFF), got);
    }

    #[test]
    fn events_rules() {
        let mut s = state();
        let base = get_vcpu_events(&mut s, OFF);
        let bad: [(&str, KvmVcpuEvents); 6] = [
            (
                "unknown flag",
                KvmVcpuEvents {
                    flags: 0x40,
                    ..base
                },
            ),
            (
                "payload without the cap",
                KvmVcpuEvents {
                    flags: ev::VALID_PAYLOAD,
                    ..base
                },
            ),
            (
                "vector 32",
                KvmVcpuEvents {
                    exception_injected: 1,
                    exception_nr: 32,
                    ..base
                },
            ),
            (
                "NMI as exception",
                KvmVcpuEvents {
                    exception_injected: 1,
                    exception_nr: 2,
                    ..base
                },
            ),
            ("SMM", KvmVcpuEvents { smi_smm: 1, ..base }),
            (
                "triple fault without the cap",
                KvmVcpuEvents {
                    flags: base.flags | ev::VALID_TRIPLE_FAULT,
                    ..base
                },
            ),
        ];
        for (what, k) in bad {
            assert_eq!(
                set_vcpu_events(&mut s, &k, OFF),
                Err(Errno::Einval),
                "{what}"
            );
        }
        // A pending exception without the payload cap is dropped (pending is cleared).
        let mut s = state();
        let k = KvmVcpuEvents {
            exception_pending: 1,
            exception_nr: 6,
            ..base
        };
        set_vcpu_events(&mut s, &k, OFF).unwrap();
        assert!(!s.events.exception.pending && !s.events.exception.injected);
        // Vector 40 is fine when nothing is injected.
        let k = KvmVcpuEvents {
            exception_nr: 40,
            ..base
        };
        assert_eq!(set_vcpu_events(&mut s, &k, OFF), Ok(()));
        // NMIs collapse to 2, or 1 while masked.
        let k = KvmVcpuEvents {
            nmi_pending: 9,
            ..base
        };
        set_vcpu_events(&mut s, &k, OFF).unwrap();
        assert_eq!(get_vcpu_events(&mut s, OFF).nmi_pending, 2);
        let k = KvmVcpuEvents {
            nmi_pending: 9,
            nmi_masked: 1,
            ..base
        };
        set_vcpu_events(&mut s, &k, OFF).unwrap();
        assert_eq!(get_vcpu_events(&mut s, OFF).nmi_pending, 1);
        // Without VALID_NMI_PENDING the count is kept.
        let k = KvmVcpuEvents {
            nmi_pending: 0,
            flags: 0,
            ..base
        };
        set_vcpu_events(&mut s, &k, OFF).unwrap();
        assert_eq!(get_vcpu_events(&mut s, OFF).nmi_pending, 1);
    }

    #[test]
    fn soft_exceptions_and_payload() {
        let mut s = state();
        s.events.exception = QueuedException {
            injected: true,
            vector: 3,
            ..QueuedException::default()
        };
        assert_eq!(get_vcpu_events(&mut s, OFF).exception_injected, 0);
        s.events.exception = QueuedException {
            pending: true,
            vector: 14,
            has_payload: true,
            payload: 0xdead_b000,
            ..QueuedException::default()
        };
        let k = get_vcpu_events(&mut s, OFF);
        assert_eq!((k.exception_injected, k.exception_pending), (1, 1));
        assert_eq!(s.cr2, 0xdead_b000);
        assert_eq!(k.exception_has_payload, 0);
    }

    /// A #PF pending with its CR2 payload, and a #DB pending with DR6 bits (BS | B0).
    fn pending_pf(s: &mut CpuState) {
        s.events.exception = QueuedException {
            pending: true,
            vector: 14,
            has_error_code: true,
            error_code: 2,
            has_payload: true,
            payload: 0xdead_b000,
            ..QueuedException::default()
        };
    }

    #[test]
    fn payload_cap_keeps_pending_apart() {
        // Enabled: GET shows pending (not injected) with the payload; CR2 is not written.
        let mut s = state();
        s.cr2 = 0x1234;
        pending_pf(&mut s);
        let k = get_vcpu_events(&mut s, PAYLOAD);
        assert_eq!((k.exception_injected, k.exception_pending), (0, 1));
        assert_eq!(
            (k.exception_has_payload, k.exception_payload),
            (1, 0xdead_b000)
        );
        assert_eq!(k.flags & ev::VALID_PAYLOAD, ev::VALID_PAYLOAD);
        assert_eq!(s.cr2, 0x1234, "the payload is not delivered");
        assert!(s.events.exception.has_payload);
        let sk = get_debugregs(&mut s, PAYLOAD);
        assert_eq!(sk.dr6, 0xffff_0ff0);
        assert_eq!(s.cr2, 0x1234);
        // The state read back round-trips, payload included.
        let mut t = state();
        set_vcpu_events(&mut t, &k, PAYLOAD).unwrap();
        assert_eq!(t.events.exception, s.events.exception);
        assert_eq!(get_vcpu_events(&mut t, PAYLOAD), k);
        // Disabled: the same state is delivered first (CR2 written) and reported as injected.
        let k = get_vcpu_events(&mut s, OFF);
        assert_eq!((k.exception_injected, k.exception_pending), (1, 1));
        assert_eq!(k.exception_has_payload, 0);
        assert_eq!(k.flags & ev::VALID_PAYLOAD, 0);
        assert_eq!(s.cr2, 0xdead_b000);
        // KVM_GET_DEBUGREGS delivers a pending #DB's payload without the cap only.
        let mut s = state();
        s.events.exception = QueuedException {
            pending: true,
            vector: 1,
            has_payload: true,
            payload: 0x4001,
            ..QueuedException::default()
        };
        assert_eq!(get_debugregs(&mut s, PAYLOAD).dr6, 0xffff_0ff0);
        assert_eq!(get_debugregs(&mut s, OFF).dr6, 0xffff_4ff1);
        assert!(!s.events.exception.has_payload);
    }

    #[test]
    fn payload_cap_set_rules() {
        let mut s = state();
        let base = get_vcpu_events(&mut s, PAYLOAD);
        // VALID_PAYLOAD with pending: injected is dropped, the payload kept.
        let k = KvmVcpuEvents {
            flags: base.flags | ev::VALID_PAYLOAD,
            exception_pending: 1,
            exception_injected: 1,
            exception_nr: 14,
            exception_has_payload: 1,
            exception_payload: 0x5000,
            ..base
        };
        assert_eq!(set_vcpu_events(&mut s, &k, OFF), Err(Errno::Einval));
        set_vcpu_events(&mut s, &k, PAYLOAD).unwrap();
        let e = s.events.exception;
        assert!(e.pending && !e.injected && e.has_payload && e.payload == 0x5000);
        // VALID_PAYLOAD without pending: the payload is dropped, injected kept.
        let k = KvmVcpuEvents {
            exception_pending: 0,
            ..k
        };
        set_vcpu_events(&mut s, &k, PAYLOAD).unwrap();
        let e = s.events.exception;
        assert!(!e.pending && e.injected && !e.has_payload);
        // Without VALID_PAYLOAD (cap on or off): pending and the payload are dropped.
        let k = KvmVcpuEvents {
            flags: base.flags & !ev::VALID_PAYLOAD,
            exception_pending: 1,
            exception_injected: 0,
            ..k
        };
        set_vcpu_events(&mut s, &k, PAYLOAD).unwrap();
        let e = s.events.exception;
        assert!(!e.pending && !e.injected && !e.has_payload);
        // The vector checks apply to a pending exception too.
        let k = KvmVcpuEvents {
            flags: base.flags | ev::VALID_PAYLOAD,
            exception_pending: 1,
            exception_nr: 2,
            ..base
        };
        assert_eq!(set_vcpu_events(&mut s, &k, PAYLOAD), Err(Errno::Einval));
    }

    #[test]
    fn triple_fault_event_cap() {
        let mut s = state();
        s.events.triple_fault_pending = true;
        // Off: not reported, and VALID_TRIPLE_FAULT is EINVAL after the rest was written.
        let k = get_vcpu_events(&mut s, OFF);
        assert_eq!(
            (k.flags & ev::VALID_TRIPLE_FAULT, k.triple_fault_pending),
            (0, 0)
        );
        let set = KvmVcpuEvents {
            flags: k.flags | ev::VALID_TRIPLE_FAULT,
            nmi_masked: 1,
            triple_fault_pending: 0,
            ..k
        };
        assert_eq!(set_vcpu_events(&mut s, &set, OFF), Err(Errno::Einval));
        assert!(s.events.nmi_masked, "written before the check");
        assert!(s.events.triple_fault_pending, "not cleared");
        // On: reported, cleared and set through VALID_TRIPLE_FAULT.
        let k = get_vcpu_events(&mut s, TRIPLE);
        assert_eq!(k.flags & ev::VALID_TRIPLE_FAULT, ev::VALID_TRIPLE_FAULT);
        assert_eq!(k.triple_fault_pending, 1);
        set_vcpu_events(&mut s, &set, TRIPLE).unwrap();
        assert!(!s.events.triple_fault_pending);
        assert_eq!(get_vcpu_events(&mut s, TRIPLE).triple_fault_pending, 0);
        let set = KvmVcpuEvents {
            triple_fault_pending: 1,
            ..set
        };
        set_vcpu_events(&mut s, &set, TRIPLE).unwrap();
        assert!(s.events.triple_fault_pending);
        // Without the flag the pending state is left alone.
        let keep = KvmVcpuEvents {
            flags: set.flags & !ev::VALID_TRIPLE_FAULT,
            triple_fault_pending: 0,
            ..set
        };
        set_vcpu_events(&mut s, &keep, TRIPLE).unwrap();
        assert!(s.events.triple_fault_pending);
        // The round trip of what GET reports keeps it.
        let got = get_vcpu_events(&mut s, TRIPLE);
        let mut t = state();
        set_vcpu_events(&mut t, &got, TRIPLE).unwrap();
        assert_eq!(get_vcpu_events(&mut t, TRIPLE), got);
    }

    #[test]
    fn debugregs_rules() {
        let mut s = state();
        let k = get_debugregs(&mut s, OFF);
        assert_eq!((k.dr6, k.dr7, k.flags), (0xffff_0ff0, 0x400, 0));
        let mut n = k;
        n.db = [1, 2, 3, 4];
        n.dr7 = 0x401;
        set_debugregs(&mut s, &n).unwrap();
        assert_eq!(get_debugregs(&mut s, OFF), n);
        for bad in [
            KvmDebugregs { flags: 1, ..n },
            KvmDebugregs { dr6: 1 << 32, ..n },
            KvmDebugregs { dr7: 1 << 40, ..n },
        ] {
            assert_eq!(set_debugregs(&mut s, &bad), Err(Errno::Einval));
        }
        assert_eq!(get_debugregs(&mut s, OFF), n);
    }

    #[test]
    fn lapic_mp_state_rules() {
        let m = |v| lapic_mp_state(&KvmMpState { mp_state: v });
        // The uapi numbers (include/uapi/linux/kvm.h).
        assert_eq!(
            (
                mp_state::RUNNABLE,
                mp_state::UNINITIALIZED,
                mp_state::INIT_RECEIVED,
                mp_state::HALTED,
                mp_state::SIPI_RECEIVED,
                mp_state::AP_RESET_HOLD
            ),
            (0, 1, 2, 3, 4, 9)
        );
        for v in [0, 1, 2, 3, 9] {
            assert_eq!(m(v), Ok((v, false)), "{v}");
        }
        assert_eq!(m(4), Ok((2, true)));
        // STOPPED, CHECK_STOP, OPERATING, LOAD (s390), SUSPENDED (arm64), unknown.
        for v in [5, 6, 7, 8, 10, 11, 99, u32::MAX] {
            assert_eq!(m(v), Err(Errno::Einval), "{v}");
        }
    }

    #[test]
    fn mp_state_rules() {
        let mut s = state();
        assert_eq!(get_mp_state(&s).mp_state, mp_state::RUNNABLE);
        assert_eq!(set_mp_state(&mut s, &KvmMpState { mp_state: 0 }), Ok(()));
        for v in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, u32::MAX] {
            assert_eq!(
                set_mp_state(&mut s, &KvmMpState { mp_state: v }),
                Err(Errno::Einval),
                "{v}"
            );
        }
    }

    #[test]
    fn nested_state_without_nesting() {
        assert!(get_nested_state(127).is_none());
        let h = get_nested_state(128).unwrap();
        assert_eq!((h.flags, h.format, h.size), (NESTED_GIF_SET, 1, 128));
        assert_eq!(set_nested_state(&h), Ok(()));
        let bad = [
            KvmNestedState { size: 127, ..h },
            KvmNestedState { format: 0, ..h },
            KvmNestedState { flags: 0, ..h },
            KvmNestedState {
                flags: NESTED_GIF_SET | NESTED_GUEST_MODE,
                ..h
            },
            KvmNestedState {
                flags: NESTED_GIF_SET | NESTED_RUN_PENDING,
                ..h
            },
            KvmNestedState {
                flags: NESTED_GIF_SET | 0x10,
                ..h
            },
        ];
        for (i, k) in bad.iter().enumerate() {
            assert_eq!(set_nested_state(k), Err(Errno::Einval), "case {i}");
        }
    }

    #[test]
    fn real_mode_injection_drops_the_error_code() {
        let mut s = CpuState::default();
        s.events.exception.has_error_code = true;
        s.events.exception.error_code = 0;
        s.cr0 = crate::regs::cr0::PE;
        strip_real_mode_error_code(&mut s);
        assert!(s.events.exception.has_error_code, "protected mode keeps it");
        s.cr0 = 0;
        strip_real_mode_error_code(&mut s);
        assert!(!s.events.exception.has_error_code, "real mode drops it");
    }
}
