// SPDX-License-Identifier: GPL-2.0-only
//! Register offsets and bit fields of the local APIC (upstream
//! `arch/x86/include/asm/apicdef.h`, KVM's `lapic.h`/`lapic.c` constants).
//!
//! Offsets are byte offsets into the 4 KiB xAPIC page; the x2APIC MSR `0x800 + n` is the
//! register at offset `n << 4`. Only the first 1 KiB (`0x000..0x400`) holds registers.

/// Local APIC ID.
pub const APIC_ID: u32 = 0x20;
/// Version register (read-only).
pub const APIC_LVR: u32 = 0x30;
/// Task priority.
pub const APIC_TASKPRI: u32 = 0x80;
/// Arbitration priority (reads 0 in KVM; absent in x2APIC mode).
pub const APIC_ARBPRI: u32 = 0x90;
/// Processor priority (read-only).
pub const APIC_PROCPRI: u32 = 0xa0;
/// End of interrupt (write-only).
pub const APIC_EOI: u32 = 0xb0;
/// Remote read (not implemented by KVM).
pub const APIC_RRR: u32 = 0xc0;
/// Logical destination.
pub const APIC_LDR: u32 = 0xd0;
/// Destination format (xAPIC only).
pub const APIC_DFR: u32 = 0xe0;
/// Spurious-interrupt vector register (software enable, EOI broadcast suppression).
pub const APIC_SPIV: u32 = 0xf0;
/// In-service register, 8 × 32 bits at 0x10 strides.
pub const APIC_ISR: u32 = 0x100;
/// Trigger-mode register, 8 × 32 bits.
pub const APIC_TMR: u32 = 0x180;
/// Interrupt-request register, 8 × 32 bits.
pub const APIC_IRR: u32 = 0x200;
/// Error status.
pub const APIC_ESR: u32 = 0x280;
/// LVT corrected-machine-check interrupt (only with `MCG_CMCI_P`).
pub const APIC_LVTCMCI: u32 = 0x2f0;
/// Interrupt command, low half (the whole 64-bit ICR at MSR 0x830 in x2APIC mode).
pub const APIC_ICR: u32 = 0x300;
/// Interrupt command, high half (destination; xAPIC only as a register of its own).
pub const APIC_ICR2: u32 = 0x310;
/// LVT timer.
pub const APIC_LVTT: u32 = 0x320;
/// LVT thermal sensor.
pub const APIC_LVTTHMR: u32 = 0x330;
/// LVT performance counter.
pub const APIC_LVTPC: u32 = 0x340;
/// LVT LINT0.
pub const APIC_LVT0: u32 = 0x350;
/// LVT LINT1.
pub const APIC_LVT1: u32 = 0x360;
/// LVT error.
pub const APIC_LVTERR: u32 = 0x370;
/// Timer initial count.
pub const APIC_TMICT: u32 = 0x380;
/// Timer current count (read-only).
pub const APIC_TMCCT: u32 = 0x390;
/// Timer divide configuration.
pub const APIC_TDCR: u32 = 0x3e0;
/// Self IPI (x2APIC only, write-only).
pub const APIC_SELF_IPI: u32 = 0x3f0;

/// The version KVM reports (`APIC_VERSION`: Xeon/Pentium 4 integrated APIC).
pub const APIC_VERSION: u32 = 0x14;
/// LVR: EOI-broadcast suppression ("directed EOI") supported.
pub const APIC_LVR_DIRECTED_EOI: u32 = 1 << 24;

/// SPIV: APIC software enable.
pub const APIC_SPIV_APIC_ENABLED: u32 = 1 << 8;
/// SPIV: focus processor checking disabled.
pub const APIC_SPIV_FOCUS_DISABLED: u32 = 1 << 9;
/// SPIV: EOI-broadcast suppression (only writable when the LVR advertises it).
pub const APIC_SPIV_DIRECTED_EOI: u32 = 1 << 12;

/// LDR: the xAPIC logical ID lives in bits 31:24.
pub const APIC_LDR_MASK: u32 = 0xff << 24;
/// DFR value of the flat model.
pub const APIC_DFR_FLAT: u32 = 0xffff_ffff;
/// DFR value of the cluster model.
pub const APIC_DFR_CLUSTER: u32 = 0x0fff_ffff;

/// ICR / LVT vector field.
pub const APIC_VECTOR_MASK: u32 = 0xff;
/// ICR / LVT delivery-mode field.
pub const APIC_MODE_MASK: u32 = 0x700;
/// Delivery mode: fixed.
pub const APIC_DM_FIXED: u32 = 0x000;
/// Delivery mode: lowest priority.
pub const APIC_DM_LOWEST: u32 = 0x100;
/// Delivery mode: SMI.
pub const APIC_DM_SMI: u32 = 0x200;
/// Delivery mode: remote read (KVM's PV unhalt).
pub const APIC_DM_REMRD: u32 = 0x300;
/// Delivery mode: NMI.
pub const APIC_DM_NMI: u32 = 0x400;
/// Delivery mode: INIT.
pub const APIC_DM_INIT: u32 = 0x500;
/// Delivery mode: start-up.
pub const APIC_DM_STARTUP: u32 = 0x600;
/// Delivery mode: ExtINT.
pub const APIC_DM_EXTINT: u32 = 0x700;
/// ICR: logical destination mode.
pub const APIC_DEST_LOGICAL: u32 = 0x800;
/// ICR / LVT: delivery status (send pending / busy).
pub const APIC_ICR_BUSY: u32 = 0x1000;
/// ICR: level assert.
pub const APIC_INT_ASSERT: u32 = 0x4000;
/// ICR: level triggered.
pub const APIC_INT_LEVELTRIG: u32 = 0x8000;
/// ICR: destination shorthand field.
pub const APIC_SHORT_MASK: u32 = 0xc0000;
/// Shorthand: self.
pub const APIC_DEST_SELF: u32 = 0x40000;
/// Shorthand: all including self.
pub const APIC_DEST_ALLINC: u32 = 0x80000;
/// Shorthand: all excluding self.
pub const APIC_DEST_ALLBUT: u32 = 0xc0000;
/// Reserved bits of the 64-bit x2APIC ICR (a WRMSR with any of them set is #GP).
pub const X2APIC_ICR_RESERVED_BITS: u64 = (0xfff << 20) | (3 << 16) | (1 << 13);

/// LVT: masked.
pub const APIC_LVT_MASKED: u32 = 1 << 16;
/// LVT: level triggered (LINT0/LINT1).
pub const APIC_LVT_LEVEL_TRIGGER: u32 = 1 << 15;
/// LVT: remote IRR (LINT0/LINT1).
pub const APIC_LVT_REMOTE_IRR: u32 = 1 << 14;
/// LVT: input polarity (LINT0/LINT1).
pub const APIC_INPUT_POLARITY: u32 = 1 << 13;
/// LVT: delivery status.
pub const APIC_SEND_PENDING: u32 = 1 << 12;
/// LVTT timer mode: one-shot.
pub const APIC_LVT_TIMER_ONESHOT: u32 = 0;
/// LVTT timer mode: periodic.
pub const APIC_LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// LVTT timer mode: TSC deadline.
pub const APIC_LVT_TIMER_TSCDEADLINE: u32 = 2 << 17;

/// IA32_APIC_BASE: this is the bootstrap processor.
pub const MSR_IA32_APICBASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE: x2APIC mode (EXTD).
pub const X2APIC_ENABLE: u64 = 1 << 10;
/// IA32_APIC_BASE: APIC global enable.
pub const MSR_IA32_APICBASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE: the xAPIC page's physical address.
pub const MSR_IA32_APICBASE_BASE: u64 = 0xffff_f000;
/// The architectural reset base of the xAPIC page.
pub const APIC_DEFAULT_PHYS_BASE: u64 = 0xfee0_0000;

/// The first x2APIC MSR (`APIC_BASE_MSR`); 0x800..=0x8ff are the x2APIC registers.
pub const APIC_BASE_MSR: u32 = 0x800;
/// The last MSR of the x2APIC range.
pub const APIC_LAST_MSR: u32 = 0x8ff;
/// IA32_TSC_DEADLINE.
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;

/// The xAPIC broadcast destination.
pub const APIC_BROADCAST: u32 = 0xff;
/// The x2APIC broadcast destination.
pub const X2APIC_BROADCAST: u32 = 0xffff_ffff;

/// Upstream's `APIC_BUS_CYCLE_NS_DEFAULT`: one bus cycle per nanosecond (1 GHz).
pub const APIC_BUS_CYCLE_NS_DEFAULT: u64 = 1;
/// Upstream's `min_timer_period_us` default: periodic timers are clamped to 200 µs.
pub const MIN_TIMER_PERIOD_NS: u64 = 200 * 1000;

/// Number of LVT entries with CMCI (`KVM_APIC_MAX_NR_LVT_ENTRIES`: timer, thermal,
/// performance counter, LINT0, LINT1, error, CMCI); one less without `MCG_CMCI_P`.
pub const KVM_APIC_MAX_NR_LVT_ENTRIES: usize = 7;

/// `KVM_CAP_X2APIC_API` flag: 32-bit x2APIC IDs in `KVM_GET/SET_LAPIC` and MSI routes.
pub const KVM_X2APIC_API_USE_32BIT_IDS: u64 = 1 << 0;
/// `KVM_CAP_X2APIC_API` flag: a device's destination 0xff is not an x2APIC broadcast.
pub const KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK: u64 = 1 << 1;
/// The valid `KVM_CAP_X2APIC_API` flags (others: `-EINVAL`).
pub const KVM_X2APIC_API_VALID_FLAGS: u64 =
    KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK;

/// `KVM_MP_STATE_RUNNABLE`.
pub const KVM_MP_STATE_RUNNABLE: u32 = 0;
/// `KVM_MP_STATE_UNINITIALIZED`.
pub const KVM_MP_STATE_UNINITIALIZED: u32 = 1;
/// `KVM_MP_STATE_INIT_RECEIVED`.
pub const KVM_MP_STATE_INIT_RECEIVED: u32 = 2;
/// `KVM_MP_STATE_HALTED`.
pub const KVM_MP_STATE_HALTED: u32 = 3;
/// `KVM_MP_STATE_SIPI_RECEIVED`.
pub const KVM_MP_STATE_SIPI_RECEIVED: u32 = 4;

/// The LVT entries in upstream's index order (`enum lapic_lvt_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Lvt {
    /// LVTT (0x320).
    Timer = 0,
    /// Thermal monitor (0x330).
    Thermal = 1,
    /// Performance counter (0x340).
    PerfCounter = 2,
    /// LINT0 (0x350).
    Lint0 = 3,
    /// LINT1 (0x360).
    Lint1 = 4,
    /// Error (0x370).
    Error = 5,
    /// CMCI (0x2f0).
    Cmci = 6,
}

impl Lvt {
    /// Every entry, in index order.
    pub const ALL: [Lvt; KVM_APIC_MAX_NR_LVT_ENTRIES] = [
        Lvt::Timer,
        Lvt::Thermal,
        Lvt::PerfCounter,
        Lvt::Lint0,
        Lvt::Lint1,
        Lvt::Error,
        Lvt::Cmci,
    ];

    /// The register offset (`APIC_LVTx`).
    pub const fn offset(self) -> u32 {
        match self {
            Lvt::Cmci => APIC_LVTCMCI,
            other => APIC_LVTT + 0x10 * other as u32,
        }
    }

    /// The entry at a register offset (`get_lvt_index`), if it is an LVT register.
    pub const fn from_offset(reg: u32) -> Option<Lvt> {
        Some(match reg {
            APIC_LVTT => Lvt::Timer,
            APIC_LVTTHMR => Lvt::Thermal,
            APIC_LVTPC => Lvt::PerfCounter,
            APIC_LVT0 => Lvt::Lint0,
            APIC_LVT1 => Lvt::Lint1,
            APIC_LVTERR => Lvt::Error,
            APIC_LVTCMCI => Lvt::Cmci,
            _ => return None,
        })
    }

    /// The writable bits of the entry (`apic_lvt_mask`; the timer's mode bits are added
    /// from CPUID at run time).
    pub const fn write_mask(self) -> u32 {
        const LVT_MASK: u32 = APIC_LVT_MASKED | APIC_SEND_PENDING | APIC_VECTOR_MASK;
        const LINT_MASK: u32 = LVT_MASK
            | APIC_MODE_MASK
            | APIC_INPUT_POLARITY
            | APIC_LVT_REMOTE_IRR
            | APIC_LVT_LEVEL_TRIGGER;
        match self {
            Lvt::Timer | Lvt::Error => LVT_MASK,
            Lvt::Thermal | Lvt::PerfCounter | Lvt::Cmci => LVT_MASK | APIC_MODE_MASK,
            Lvt::Lint0 | Lvt::Lint1 => LINT_MASK,
        }
    }
}
