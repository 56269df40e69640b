// SPDX-License-Identifier: GPL-2.0-only
//! The local APIC of one vCPU (upstream `arch/x86/kvm/lapic.c`, Linux 6.12).
//!
//! [`Lapic`] is the state the vCPU owns under its lock: the 1 KiB register page exactly as
//! upstream keeps it (so `KVM_GET/SET_LAPIC` is a copy plus upstream's fix-ups), the
//! IA32_APIC_BASE MSR and the timer's state. Register accesses (xAPIC MMIO, x2APIC MSRs),
//! INIT/reset, EOI and acknowledgement run on it and answer with [`Effects`]: an IPI to
//! deliver, an EOI to forward to the IOAPIC, a timer command, "republish the
//! [`DestInfo`]".
//!
//! Other threads never touch a `Lapic`: they match destinations against the target's
//! published [`DestInfo`] ([`match_dest`]) and post into its [`Pir`]; the owner merges the
//! [`Pir`] before it looks for interrupts ([`Lapic::sync_pir`]).
//!
//! The life of an IPI, as the module wires it (one `Lapic` + `Pir` + published
//! `DestInfo` per vCPU):
//!
//! ```
//! use core::sync::atomic::{AtomicU64, Ordering};
//! use irqchip::lapic::{deliver_irq, regs::*, DeliveryCtx, DestInfo, Lapic, Now, Pir, VmApicConfig};
//!
//! let now = Now::ns(1_000);
//! let pirs = [Pir::new(), Pir::new()];
//! let published = [AtomicU64::new(0), AtomicU64::new(0)];
//! let mut apics = [0, 1].map(|id| Lapic::new(id, VmApicConfig::default()));
//! for (i, a) in apics.iter_mut().enumerate() {
//!     a.set_cpuid(true, true);
//!     let _ = a.reset(false, i == 0, true, &pirs[i]);
//!     let _ = a.mmio_write(APIC_SPIV, 4, 0x1ff, &now); // software-enable
//!     published[i].store(a.dest_info().to_bits(), Ordering::Release);
//! }
//! // vCPU 0 writes ICR2/ICR: fixed IPI, vector 0x40, physical destination 1.
//! let _ = apics[0].mmio_write(APIC_ICR2, 4, 1 << 24, &now);
//! let fx = apics[0].mmio_write(APIC_ICR, 4, 0x40, &now);
//! let irq = fx.ipi.unwrap();
//! let dest = |i: usize| DestInfo::from_bits(published[i].load(Ordering::Acquire));
//! let r = deliver_irq(&irq, Some(0), 2, dest, DeliveryCtx::default(), |i, irq| {
//!     let ok = pirs[i].post(dest(i), irq); // then kick vCPU i
//!     ok as i32
//! });
//! assert_eq!(r, 1);
//! // vCPU 1, under its lock, before entering the guest:
//! let _ = apics[1].sync_pir(&pirs[1], &now);
//! assert_eq!(apics[1].ack(), Some(0x40)); // inject vector 0x40
//! let fx = apics[1].mmio_write(APIC_EOI, 4, 0, &now);
//! assert_eq!(fx.eoi.map(|e| (e.vector, e.level)), Some((0x40, false)));
//! ```
//!
//! Deviations from upstream, all invisible to the guest: no APICv/AVIC, no PV EOI, no
//! Hyper-V SynIC hooks, no timer advancement, no TPR-access reporting; ICR delivery mode 3
//! (remote read, used by KVM only for the PV unhalt hypercall) is dropped; lowest-priority
//! arbitration is vector hashing (upstream's default, see [`dest`]).

pub mod deliver;
pub mod dest;
pub mod pir;
pub mod regs;
pub mod state;
pub mod timer;

#[cfg(test)]
mod tests;

pub use deliver::{deliver_irq, phys_map_target, DeliveryCtx};
pub use dest::{
    fixup_phys_broadcast_lowest, icr_to_irq, is_lowest_priority, lowest_priority_index, match_dest,
    x2apic_ldr, DestInfo, DfrModel, Sender,
};
pub use pir::{accept_events, InitSipi, Pir};
pub use regs::Lvt;
pub use state::{LapicState, StateError};
pub use timer::{divide_count, tmict_to_ns, valid_bus_cycle_ns, Now, TimerCmd};

use crate::irq::LapicIrq;
use regs::*;
use timer::Timer;

/// A register access the architecture refuses: #GP for a guest WRMSR/RDMSR, a failed
/// `KVM_SET_MSRS`/`KVM_GET_MSRS` entry (upstream returns 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault;

/// An EOI that cleared an in-service vector (upstream `apic_set_eoi` →
/// `kvm_ioapic_send_eoi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eoi {
    /// The vector whose ISR bit was cleared.
    pub vector: u8,
    /// Its TMR bit: level-triggered (the in-kernel IOAPIC clears remote IRR for these).
    pub level: bool,
    /// SPIV's EOI-broadcast suppression is on: the in-kernel IOAPIC leaves remote IRR
    /// alone (the guest EOIs the IOAPIC directly).
    pub directed: bool,
}

/// What a call asks of the module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Effects {
    /// An IPI from this APIC (ICR or SELF_IPI write): deliver it with this vCPU as the
    /// source (`kvm_irq_delivery_to_apic(kvm, apic, irq)`).
    pub ipi: Option<LapicIrq>,
    /// An EOI to forward (split irqchip: `KVM_EXIT_IOAPIC_EOI` if the vector is one the
    /// IOAPIC routes; in-kernel: `kvm_ioapic_update_eoi` with [`Eoi::level`]).
    pub eoi: Option<Eoi>,
    /// The timer command.
    pub timer: TimerCmd,
    /// ID, LDR, DFR, software or hardware enable or x2APIC mode may have changed:
    /// publish [`Lapic::dest_info`] again.
    pub dest_changed: bool,
    /// Re-evaluate pending interrupts before entering the guest (upstream
    /// `KVM_REQ_EVENT`), e.g. the PPR dropped below a pending vector, or the timer expired.
    pub recheck: bool,
    /// LVT0's "NMI watchdog" mode changed to this value (upstream `vapics_in_nmi_mode`,
    /// a VM-wide count the PIT consults).
    pub lvt0_nmi_mode: Option<bool>,
    /// IA32_APIC_BASE.EN or EXTD changed (CPUID.1:EDX.APIC follows EN; the xAPIC MMIO page
    /// appears or disappears; x2APIC MSR interception changes).
    pub mode_changed: bool,
}

impl Effects {
    /// Folds the effects of a later call into these (later timer command and IPI win).
    pub fn merge(&mut self, o: Effects) {
        if o.ipi.is_some() {
            self.ipi = o.ipi;
        }
        if o.eoi.is_some() {
            self.eoi = o.eoi;
        }
        if o.timer != TimerCmd::Keep {
            self.timer = o.timer;
        }
        self.dest_changed |= o.dest_changed;
        self.recheck |= o.recheck;
        if o.lvt0_nmi_mode.is_some() {
            self.lvt0_nmi_mode = o.lvt0_nmi_mode;
        }
        self.mode_changed |= o.mode_changed;
    }
}

/// The mode IA32_APIC_BASE selects (`enum lapic_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    /// EN = 0, EXTD = 0.
    Disabled,
    /// EN = 0, EXTD = 1: never valid.
    Invalid,
    /// EN = 1, EXTD = 0.
    XApic,
    /// EN = 1, EXTD = 1.
    X2Apic,
}

impl ApicMode {
    /// `kvm_apic_mode`.
    pub const fn of(apic_base: u64) -> Self {
        match (
            apic_base & MSR_IA32_APICBASE_ENABLE != 0,
            apic_base & X2APIC_ENABLE != 0,
        ) {
            (false, false) => ApicMode::Disabled,
            (false, true) => ApicMode::Invalid,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
        }
    }
}

/// VM-wide settings fixed before vCPUs exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmApicConfig {
    /// The IOAPIC is in the kernel (`KVM_CREATE_IRQCHIP`, not split): the LVR then never
    /// advertises EOI-broadcast suppression.
    pub ioapic_in_kernel: bool,
    /// `KVM_CAP_X86_APIC_BUS_CYCLES_NS` (default [`APIC_BUS_CYCLE_NS_DEFAULT`]).
    pub bus_cycle_ns: u64,
}

impl Default for VmApicConfig {
    fn default() -> Self {
        VmApicConfig {
            ioapic_in_kernel: true,
            bus_cycle_ns: APIC_BUS_CYCLE_NS_DEFAULT,
        }
    }
}

/// One vCPU's local APIC.
#[derive(Clone, Debug)]
pub struct Lapic {
    /// The first 1 KiB of the register page, word `i` at offset `4 * i`.
    regs: [u32; 256],
    /// The vCPU ID, which is the x2APIC ID.
    vcpu_id: u32,
    /// IA32_APIC_BASE.
    apic_base: u64,
    /// SPIV bit 8 as last applied.
    sw_enabled: bool,
    /// LVT entries (6, or 7 with CMCI).
    nr_lvt: usize,
    /// Guest CPUID has x2APIC.
    x2apic_cpuid: bool,
    ioapic_in_kernel: bool,
    bus_cycle_ns: u64,
    /// LVT0 is in NMI mode.
    lvt0_nmi: bool,
    /// Upstream's `isr_count`: ISR bits set, as acknowledges and EOIs track them (recounted
    /// at reset and after a state restore).
    isr_count: u32,
    /// Upstream's `highest_isr_cache`: the vector of the last acknowledge, until an EOI.
    highest_isr_cache: Option<u8>,
    timer: Timer,
}

/// The IA32_APIC_BASE a TD vCPU gets at `KVM_TDX_INIT_VCPU` (upstream `tdx_vcpu_init`: "TDX
/// requires X2APIC"): the default base, enabled, in x2APIC mode (`LAPIC_MODE_X2APIC`), with
/// the BSP bit for the reset BSP (`kvm_vcpu_is_reset_bsp`). It is set host-initiated
/// ([`Lapic::set_base`] with `host_initiated`), so it fails only on reserved bits: without
/// x2APIC in the guest CPUID.
pub const fn td_apic_base(reset_bsp: bool) -> u64 {
    APIC_DEFAULT_PHYS_BASE
        | MSR_IA32_APICBASE_ENABLE
        | X2APIC_ENABLE
        | if reset_bsp { MSR_IA32_APICBASE_BSP } else { 0 }
}

impl Lapic {
    /// A new local APIC (`kvm_create_lapic`): IA32_APIC_BASE = EN only, software-disabled,
    /// all registers 0, 6 LVT entries, no timer modes until CPUID is set. Call
    /// [`Lapic::reset`] (`init_event = false`) next, as `kvm_vcpu_reset` does.
    pub fn new(vcpu_id: u32, vm: VmApicConfig) -> Self {
        Lapic {
            regs: [0; 256],
            vcpu_id,
            apic_base: MSR_IA32_APICBASE_ENABLE,
            sw_enabled: false,
            nr_lvt: KVM_APIC_MAX_NR_LVT_ENTRIES - 1,
            x2apic_cpuid: false,
            ioapic_in_kernel: vm.ioapic_in_kernel,
            bus_cycle_ns: if vm.bus_cycle_ns == 0 {
                APIC_BUS_CYCLE_NS_DEFAULT
            } else {
                vm.bus_cycle_ns
            },
            lvt0_nmi: false,
            isr_count: 0,
            highest_isr_cache: None,
            timer: Timer {
                divide: 2,
                ..Timer::default()
            },
        }
    }

    // ----- raw register page -----

    /// The raw register at `offset` (0 outside the 1 KiB page).
    pub fn reg(&self, offset: u32) -> u32 {
        self.regs.get((offset >> 2) as usize).copied().unwrap_or(0)
    }

    fn set_reg(&mut self, offset: u32, val: u32) {
        if let Some(r) = self.regs.get_mut((offset >> 2) as usize) {
            *r = val;
        }
    }

    fn vec_reg(base: u32, vector: u8) -> (u32, u32) {
        (base + ((vector as u32) >> 5) * 0x10, 1 << (vector & 31))
    }

    fn test_vec(&self, base: u32, vector: u8) -> bool {
        let (r, b) = Self::vec_reg(base, vector);
        self.reg(r) & b != 0
    }

    fn set_vec(&mut self, base: u32, vector: u8, on: bool) {
        let (r, b) = Self::vec_reg(base, vector);
        let v = self.reg(r);
        self.set_reg(r, if on { v | b } else { v & !b });
    }

    /// `apic_find_highest_vector` over IRR/ISR/TMR-style bitmaps.
    fn highest(&self, base: u32) -> Option<u8> {
        (0..8u32).rev().find_map(|i| {
            let v = self.reg(base + i * 0x10);
            (v != 0).then(|| (i * 32 + 31 - v.leading_zeros()) as u8)
        })
    }

    /// The highest vector in IRR.
    pub fn highest_irr(&self) -> Option<u8> {
        self.highest(APIC_IRR)
    }

    /// The highest vector in ISR.
    pub fn highest_isr(&self) -> Option<u8> {
        self.highest(APIC_ISR)
    }

    /// `apic_find_highest_isr`: the ISR as upstream's caches see it (no vector while
    /// `isr_count` is 0, else the last acknowledged vector, else a scan). The caches only
    /// differ from the register inside `set_state`, as upstream's do.
    fn find_highest_isr(&self) -> Option<u8> {
        if self.isr_count == 0 {
            return None;
        }
        self.highest_isr_cache.or_else(|| self.highest_isr())
    }

    /// `kvm_apic_update_apicv`'s cache refresh (no APICv): recount ISR, forget the cache.
    fn refresh_isr_caches(&mut self) {
        self.isr_count = (0..8u32)
            .map(|i| self.reg(APIC_ISR + 0x10 * i).count_ones())
            .sum();
        self.highest_isr_cache = None;
    }

    /// Whether `vector` is requested or in service (`kvm_apic_pending_eoi`).
    pub fn pending_eoi(&self, vector: u8) -> bool {
        self.test_vec(APIC_ISR, vector) || self.test_vec(APIC_IRR, vector)
    }

    /// Every vector requested or in service (IRR | ISR as a 256-bit map, bit v of word
    /// v / 64): [`Self::pending_eoi`] for all vectors at once, which the module publishes for
    /// readers that cannot take the vCPU lock (the IOAPIC's RTC tracker rebuild).
    pub fn pending_eoi_map(&self) -> [u64; 4] {
        let mut m = [0u64; 4];
        for (i, w) in m.iter_mut().enumerate() {
            for half in 0..2u32 {
                let r = (i as u32) * 2 + half;
                let bits = self.reg(APIC_ISR + r * 0x10) | self.reg(APIC_IRR + r * 0x10);
                *w |= u64::from(bits) << (32 * half);
            }
        }
        m
    }

    // ----- mode, base, identity -----

    /// The vCPU ID (x2APIC ID).
    pub fn vcpu_id(&self) -> u32 {
        self.vcpu_id
    }

    /// IA32_APIC_BASE.
    pub fn apic_base(&self) -> u64 {
        self.apic_base
    }

    /// The xAPIC page's guest-physical address.
    pub fn base_address(&self) -> u64 {
        self.apic_base & MSR_IA32_APICBASE_BASE
    }

    /// IA32_APIC_BASE.EN (`kvm_apic_hw_enabled`).
    pub fn hw_enabled(&self) -> bool {
        self.apic_base & MSR_IA32_APICBASE_ENABLE != 0
    }

    /// SPIV software enable (`kvm_apic_sw_enabled`).
    pub fn sw_enabled(&self) -> bool {
        self.sw_enabled
    }

    /// Hardware and software enabled (`apic_enabled`).
    pub fn enabled(&self) -> bool {
        self.sw_enabled && self.hw_enabled()
    }

    /// x2APIC mode (`apic_x2apic_mode`).
    pub fn x2apic_mode(&self) -> bool {
        self.apic_base & X2APIC_ENABLE != 0
    }

    /// IA32_APIC_BASE.BSP (`kvm_vcpu_is_bsp`).
    pub fn is_bsp(&self) -> bool {
        self.apic_base & MSR_IA32_APICBASE_BSP != 0
    }

    /// The xAPIC MMIO page answers: enabled and not in x2APIC mode. Otherwise accesses to
    /// the page hit the hole (`KVM_X86_QUIRK_LAPIC_MMIO_HOLE`: reads all ones, writes
    /// dropped) or, with the quirk disabled, are ordinary MMIO exits.
    pub fn mmio_active(&self) -> bool {
        self.hw_enabled() && !self.x2apic_mode()
    }

    /// The addressing state to publish (see [`DestInfo`]).
    pub fn dest_info(&self) -> DestInfo {
        DestInfo::new(
            self.vcpu_id,
            (self.reg(APIC_ID) >> 24) as u8,
            (self.reg(APIC_LDR) >> 24) as u8,
            DfrModel::from_dfr(self.reg(APIC_DFR)),
            self.hw_enabled(),
            self.sw_enabled,
            self.x2apic_mode(),
        )
        .with_ldr_nonzero(self.reg(APIC_LDR) != 0)
    }

    /// Guest CPUID changed (`kvm_vcpu_after_set_cpuid`): x2APIC support (IA32_APIC_BASE.EXTD
    /// becomes writable, EOI-broadcast suppression is advertised without an in-kernel
    /// IOAPIC) and TSC-deadline support (LVTT mode bits 18:17 vs 17 only).
    pub fn set_cpuid(&mut self, x2apic: bool, tsc_deadline: bool) {
        self.x2apic_cpuid = x2apic;
        self.timer.mode_mask = if tsc_deadline {
            3 << 17
        } else {
            APIC_LVT_TIMER_PERIODIC
        };
        self.set_version();
    }

    /// Only the x2APIC bit of the guest CPUID changed (a TD vCPU's CPUID as the TDX module
    /// virtualizes it, where x2APIC is fixed to 1; see [`td_apic_base`]): IA32_APIC_BASE.EXTD
    /// becomes writable, the timer modes stay.
    pub fn set_x2apic_cpuid(&mut self, x2apic: bool) {
        self.x2apic_cpuid = x2apic;
        self.set_version();
    }

    /// MCG_CAP changed (`kvm_apic_after_set_mcg_cap`): with `MCG_CMCI_P` the APIC has 7
    /// LVT entries (LVTCMCI, masked when it appears).
    pub fn set_mcg_cmci(&mut self, cmci: bool) {
        let n = KVM_APIC_MAX_NR_LVT_ENTRIES - usize::from(!cmci);
        if n == self.nr_lvt {
            return;
        }
        for lvt in Lvt::ALL
            .iter()
            .skip(self.nr_lvt)
            .take(n.saturating_sub(self.nr_lvt))
        {
            self.set_reg(lvt.offset(), APIC_LVT_MASKED);
        }
        self.nr_lvt = n;
        self.set_version();
    }

    fn lvt_supported(&self, lvt: Lvt) -> bool {
        (lvt as usize) < self.nr_lvt
    }

    /// `kvm_apic_set_version`.
    fn set_version(&mut self) {
        let mut v = APIC_VERSION | ((self.nr_lvt as u32 - 1) << 16);
        if self.x2apic_cpuid && !self.ioapic_in_kernel {
            v |= APIC_LVR_DIRECTED_EOI;
        }
        self.set_reg(APIC_LVR, v);
    }

    fn set_xapic_id(&mut self, id: u8) {
        self.set_reg(APIC_ID, (id as u32) << 24);
    }

    fn set_x2apic_id(&mut self) {
        self.set_reg(APIC_ID, self.vcpu_id);
        self.set_reg(APIC_LDR, x2apic_ldr(self.vcpu_id));
    }

    fn set_spiv(&mut self, val: u32) {
        self.set_reg(APIC_SPIV, val);
        self.sw_enabled = val & APIC_SPIV_APIC_ENABLED != 0;
    }

    /// `__kvm_apic_set_base` without checks.
    fn set_base_raw(&mut self, value: u64, fx: &mut Effects) {
        let old = self.apic_base;
        self.apic_base = value;
        let changed = old ^ value;
        if changed & MSR_IA32_APICBASE_ENABLE != 0 && value & MSR_IA32_APICBASE_ENABLE != 0 {
            self.set_xapic_id(self.vcpu_id as u8);
        }
        if changed & X2APIC_ENABLE != 0 {
            if value & X2APIC_ENABLE != 0 {
                self.set_x2apic_id();
            } else if value & MSR_IA32_APICBASE_ENABLE != 0 {
                self.set_xapic_id(self.vcpu_id as u8);
            }
        }
        if changed & (MSR_IA32_APICBASE_ENABLE | X2APIC_ENABLE) != 0 {
            fx.mode_changed = true;
        }
        fx.dest_changed = true;
    }

    /// IA32_APIC_BASE write (6.12's `kvm_apic_set_base`): reserved bits (above
    /// `maxphyaddr`, 7:0, 9, and EXTD without x2APIC in CPUID) or EN=0/EXTD=1 fail; a guest
    /// may not go x2APIC → xAPIC or disabled → x2APIC directly (the host may). The module
    /// updates CPUID.1:EDX.APIC when [`Effects::mode_changed`] says EN may have changed.
    pub fn set_base(
        &mut self,
        value: u64,
        host_initiated: bool,
        maxphyaddr: u8,
    ) -> Result<Effects, Fault> {
        let mut fx = Effects::default();
        let gpa_rsvd = if maxphyaddr >= 64 {
            0
        } else {
            u64::MAX << maxphyaddr
        };
        let reserved = gpa_rsvd | 0x2ff | if self.x2apic_cpuid { 0 } else { X2APIC_ENABLE };
        let old_mode = ApicMode::of(self.apic_base);
        let new_mode = ApicMode::of(value);
        if value & reserved != 0 || new_mode == ApicMode::Invalid {
            return Err(Fault);
        }
        if !host_initiated
            && ((old_mode == ApicMode::X2Apic && new_mode == ApicMode::XApic)
                || (old_mode == ApicMode::Disabled && new_mode == ApicMode::X2Apic))
        {
            return Err(Fault);
        }
        self.set_base_raw(value, &mut fx);
        fx.recheck = true;
        Ok(fx)
    }

    /// `kvm_lapic_reset`: RESET (`init_event = false`: IA32_APIC_BASE = 0xfee00000 | EN |
    /// BSP for the boot vCPU, xAPIC ID = vCPU ID) or INIT (ID, APIC_BASE and x2APIC LDR
    /// kept). `reset_bsp` is `kvm_vcpu_is_reset_bsp` (the boot vCPU ID), `lint0_quirk`
    /// `KVM_X86_QUIRK_LINT0_REENABLED` (LVT0 = ExtINT on the boot vCPU). Vectors posted in
    /// `pir` and not yet merged are dropped with IRR; NMIs/SMI there are the vCPU reset's
    /// business.
    pub fn reset(
        &mut self,
        init_event: bool,
        reset_bsp: bool,
        lint0_quirk: bool,
        pir: &Pir,
    ) -> Effects {
        let mut fx = Effects {
            dest_changed: true,
            recheck: true,
            ..Effects::default()
        };
        if !init_event {
            let mut base = APIC_DEFAULT_PHYS_BASE | MSR_IA32_APICBASE_ENABLE;
            if reset_bsp {
                base |= MSR_IA32_APICBASE_BSP;
            }
            self.set_base_raw(base, &mut fx);
        }
        for i in 0..4 {
            let _ = pir.take_word(i);
        }
        let _ = pir.take_timer();
        self.cancel_hrtimer(&mut fx);
        if !init_event {
            self.set_xapic_id(self.vcpu_id as u8);
        }
        self.set_version();
        for lvt in Lvt::ALL.iter().take(self.nr_lvt) {
            self.set_reg(lvt.offset(), APIC_LVT_MASKED);
        }
        self.update_lvtt(&mut fx);
        if reset_bsp && lint0_quirk {
            self.set_reg(APIC_LVT0, APIC_DM_EXTINT);
        }
        self.manage_nmi_watchdog(&mut fx);
        self.set_reg(APIC_DFR, APIC_DFR_FLAT);
        self.set_spiv(0xff);
        self.set_reg(APIC_TASKPRI, 0);
        if !self.x2apic_mode() {
            self.set_reg(APIC_LDR, 0);
        }
        self.set_reg(APIC_ESR, 0);
        self.set_reg(APIC_ICR, 0);
        if self.x2apic_mode() {
            // Upstream clears the ICR as one 64-bit register here (`kvm_lapic_set_reg64`)
            // even where x2APIC keeps it split in ICR/ICR2 (SVM): the word at 0x304, not
            // ICR2, is cleared, so ICR2 survives an INIT in x2APIC mode.
            self.set_reg(APIC_ICR + 4, 0);
        } else {
            self.set_reg(APIC_ICR2, 0);
        }
        self.set_reg(APIC_TDCR, 0);
        self.set_reg(APIC_TMICT, 0);
        for i in 0..8 {
            self.set_reg(APIC_IRR + 0x10 * i, 0);
            self.set_reg(APIC_ISR + 0x10 * i, 0);
            self.set_reg(APIC_TMR + 0x10 * i, 0);
        }
        self.refresh_isr_caches();
        self.update_divide_count();
        self.timer.pending = false;
        self.update_ppr();
        fx
    }

    /// `apic_manage_nmi_watchdog` for an LVT0 value (upstream passes a guest write's raw
    /// value, before the software-disable mask is applied).
    fn manage_nmi_watchdog_val(&mut self, lvt0: u32, fx: &mut Effects) {
        let nmi = lvt0 & (APIC_MODE_MASK | APIC_LVT_MASKED) == APIC_DM_NMI;
        if nmi != self.lvt0_nmi {
            self.lvt0_nmi = nmi;
            fx.lvt0_nmi_mode = Some(nmi);
        }
    }

    fn manage_nmi_watchdog(&mut self, fx: &mut Effects) {
        self.manage_nmi_watchdog_val(self.reg(APIC_LVT0), fx);
    }

    /// LVT0 is unmasked in NMI mode (counts towards `vapics_in_nmi_mode`).
    pub fn lvt0_in_nmi_mode(&self) -> bool {
        self.lvt0_nmi
    }

    // ----- priorities -----

    /// `__apic_update_ppr`: recompute PPR; true if it dropped.
    fn update_ppr_inner(&mut self) -> (u32, bool) {
        let old = self.reg(APIC_PROCPRI);
        let tpr = self.reg(APIC_TASKPRI);
        let isrv = self.find_highest_isr().map_or(0, u32::from);
        let ppr = if (tpr & 0xf0) >= (isrv & 0xf0) {
            tpr & 0xff
        } else {
            isrv & 0xf0
        };
        if ppr != old {
            self.set_reg(APIC_PROCPRI, ppr);
        }
        (ppr, ppr < old)
    }

    /// `apic_update_ppr`: recompute PPR; true if an interrupt became deliverable.
    fn update_ppr(&mut self) -> bool {
        let (ppr, dropped) = self.update_ppr_inner();
        dropped && self.has_interrupt_for_ppr(ppr).is_some()
    }

    fn has_interrupt_for_ppr(&self, ppr: u32) -> Option<u8> {
        let irr = self.highest_irr()?;
        ((irr as u32 & 0xf0) > ppr).then_some(irr)
    }

    /// The processor priority (updated first).
    pub fn ppr(&mut self) -> u8 {
        self.update_ppr_inner().0 as u8
    }

    /// The arbitration-priority input for lowest-priority delivery: KVM reads ARBPRI as 0
    /// and arbitrates by vector hashing; this is the PPR for a caller that wants to
    /// compare priorities itself (not what upstream does by default).
    pub fn arbitration_priority(&mut self) -> u8 {
        self.ppr()
    }

    /// `apic_set_tpr`.
    fn set_tpr(&mut self, tpr: u32, fx: &mut Effects) {
        self.set_reg(APIC_TASKPRI, tpr);
        fx.recheck |= self.update_ppr();
    }

    /// CR8 write (`kvm_lapic_set_tpr`): TPR = CR8 bits 3:0, shifted left by 4.
    pub fn set_cr8(&mut self, cr8: u64) -> Effects {
        let mut fx = Effects::default();
        self.set_tpr(((cr8 & 0xf) << 4) as u32, &mut fx);
        fx
    }

    /// CR8 read (`kvm_lapic_get_cr8`).
    pub fn cr8(&self) -> u64 {
        ((self.reg(APIC_TASKPRI) & 0xf0) >> 4) as u64
    }

    /// `kvm_apic_has_interrupt`: the vector the APIC would deliver now (highest IRR above
    /// PPR), if the APIC is enabled in IA32_APIC_BASE. Merge the [`Pir`] first.
    pub fn has_interrupt(&mut self) -> Option<u8> {
        if !self.hw_enabled() {
            return None;
        }
        let (ppr, _) = self.update_ppr_inner();
        self.has_interrupt_for_ppr(ppr)
    }

    /// `kvm_get_apic_interrupt`: take the vector to inject (IRR → ISR, PPR raised).
    pub fn ack(&mut self) -> Option<u8> {
        let v = self.has_interrupt()?;
        self.ack_vector(v);
        Some(v)
    }

    /// `kvm_apic_ack_interrupt`: move `vector` from IRR to ISR and raise PPR.
    pub fn ack_vector(&mut self, vector: u8) {
        self.set_vec(APIC_IRR, vector, false);
        // apic_set_isr: the caches change only if the bit was clear.
        if !self.test_vec(APIC_ISR, vector) {
            self.set_vec(APIC_ISR, vector, true);
            self.isr_count += 1;
            self.highest_isr_cache = Some(vector);
        }
        self.update_ppr_inner();
    }

    /// `apic_set_eoi`: clear the highest ISR bit; `None` when nothing is in service.
    pub fn eoi(&mut self) -> Option<Eoi> {
        let vector = self.find_highest_isr()?;
        // apic_clear_isr: the caches change only if the bit was set.
        if self.test_vec(APIC_ISR, vector) {
            self.set_vec(APIC_ISR, vector, false);
            self.isr_count = self.isr_count.saturating_sub(1);
            self.highest_isr_cache = None;
        }
        self.update_ppr();
        Some(Eoi {
            vector,
            level: self.test_vec(APIC_TMR, vector),
            directed: self.reg(APIC_SPIV) & APIC_SPIV_DIRECTED_EOI != 0,
        })
    }

    /// Puts a vector into IRR/TMR directly (the owner's own deliveries; upstream
    /// `__apic_accept_irq` for fixed mode). Returns whether it was accepted.
    pub fn accept_vector(&mut self, vector: u8, level_triggered: bool) -> bool {
        if !self.enabled() {
            return false;
        }
        self.set_vec(APIC_TMR, vector, level_triggered);
        self.set_vec(APIC_IRR, vector, true);
        true
    }

    /// Upstream `__apic_accept_irq` on the owner's side (under the vCPU lock): fixed and
    /// lowest-priority requests go straight into IRR/TMR, the other modes into `pir`; same
    /// acceptance rules as [`Pir::post`].
    pub fn accept(&mut self, irq: &LapicIrq, pir: &Pir) -> bool {
        use crate::irq::DeliveryMode;
        match irq.delivery_mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if irq.level_triggered && !irq.level {
                    return false;
                }
                self.accept_vector(irq.vector, irq.level_triggered)
            }
            _ => pir.post(self.dest_info(), irq),
        }
    }

    /// Merges the inbox into IRR/TMR, handles an expired timer token (latch, periodic
    /// re-arm) and delivers a pending timer interrupt (`kvm_inject_apic_timer_irqs`). Call
    /// under the vCPU lock before looking for interrupts and before sleeping in HLT; then
    /// take NMIs/SMI/INIT/SIPI from the [`Pir`].
    pub fn sync_pir(&mut self, pir: &Pir, now: &Now) -> Effects {
        let mut fx = Effects::default();
        for i in 0..4u32 {
            let Some((irr, tmr)) = pir.take_word(i as usize) else {
                continue;
            };
            if irr == 0 {
                continue;
            }
            fx.recheck = true;
            for half in 0..2u32 {
                let bits = (irr >> (32 * half)) as u32;
                if bits == 0 {
                    continue;
                }
                let lvl = (tmr >> (32 * half)) as u32;
                let off = 0x10 * (2 * i + half);
                let t = self.reg(APIC_TMR + off);
                self.set_reg(APIC_TMR + off, (t & !bits) | (lvl & bits));
                let r = self.reg(APIC_IRR + off);
                self.set_reg(APIC_IRR + off, r | bits);
            }
        }
        let token = pir.take_timer();
        if token != 0 {
            self.timer_token_expired(token, now, &mut fx);
        }
        if self.timer_pending() {
            self.local_deliver(Lvt::Timer, pir);
            if self.lvtt_tscdeadline() {
                self.timer.tscdeadline = 0;
            } else if self.lvtt_oneshot() {
                self.timer.tscdeadline = 0;
                self.timer.target = 0;
            }
            self.timer.pending = false;
            fx.recheck = true;
        }
        fx
    }

    /// `kvm_apic_local_deliver`: deliver an LVT entry's interrupt to this APIC if EN is set
    /// and the entry is unmasked (fixed into IRR directly; NMI/SMI/INIT/SIPI into `pir`).
    /// The NMI watchdog (PIT → LINT0) is `local_deliver(Lvt::Lint0, ..)`.
    pub fn local_deliver(&mut self, lvt: Lvt, pir: &Pir) -> bool {
        let reg = self.reg(lvt.offset());
        if !self.hw_enabled() || reg & APIC_LVT_MASKED != 0 {
            return false;
        }
        let vector = (reg & APIC_VECTOR_MASK) as u8;
        let trig = reg & APIC_LVT_LEVEL_TRIGGER != 0;
        match reg & APIC_MODE_MASK {
            APIC_DM_FIXED | APIC_DM_LOWEST => self.accept_vector(vector, trig),
            APIC_DM_SMI => {
                pir.post_smi();
                true
            }
            APIC_DM_NMI => {
                pir.post_nmi();
                true
            }
            APIC_DM_INIT => {
                pir.post_init();
                true
            }
            APIC_DM_STARTUP => {
                pir.post_sipi(vector);
                true
            }
            _ => false,
        }
    }

    /// `kvm_apic_accept_pic_intr`: the PIC's output (ExtINT) reaches this vCPU: APIC
    /// disabled in IA32_APIC_BASE, or LVT0 unmasked in ExtINT mode.
    pub fn accept_pic_intr(&self) -> bool {
        if !self.hw_enabled() {
            return true;
        }
        let lvt0 = self.reg(APIC_LVT0);
        lvt0 & APIC_LVT_MASKED == 0 && lvt0 & APIC_MODE_MASK == APIC_DM_EXTINT
    }

    // ----- register access -----

    /// `kvm_lapic_readable_reg_mask`.
    fn readable(&self, offset: u32) -> bool {
        let mask = |r: u32| 1u64 << (r >> 4);
        let mut m = mask(APIC_ID)
            | mask(APIC_LVR)
            | mask(APIC_TASKPRI)
            | mask(APIC_PROCPRI)
            | mask(APIC_LDR)
            | mask(APIC_SPIV)
            | mask(APIC_ESR)
            | mask(APIC_ICR)
            | mask(APIC_LVTT)
            | mask(APIC_LVTTHMR)
            | mask(APIC_LVTPC)
            | mask(APIC_LVT0)
            | mask(APIC_LVT1)
            | mask(APIC_LVTERR)
            | mask(APIC_TMICT)
            | mask(APIC_TMCCT)
            | mask(APIC_TDCR);
        for i in 0..8 {
            m |= mask(APIC_ISR + 0x10 * i) | mask(APIC_TMR + 0x10 * i) | mask(APIC_IRR + 0x10 * i);
        }
        if self.lvt_supported(Lvt::Cmci) {
            m |= mask(APIC_LVTCMCI);
        }
        if !self.x2apic_mode() {
            m |= mask(APIC_ARBPRI) | mask(APIC_DFR) | mask(APIC_ICR2);
        }
        offset <= 0x3f0 && m & mask(offset) != 0
    }

    /// `__apic_read` of an aligned register.
    fn read_aligned(&mut self, offset: u32, now_ns: u64) -> u32 {
        match offset {
            APIC_ARBPRI => 0,
            APIC_TMCCT => self.read_tmcct(now_ns),
            APIC_PROCPRI => {
                self.update_ppr_inner();
                self.reg(APIC_PROCPRI)
            }
            _ => self.reg(offset),
        }
    }

    /// `kvm_lapic_reg_read`: `len` bytes at `offset` (1, 2 or 4, within one 32-bit
    /// register). `None` when upstream refuses (misaligned or crossing, unreadable or
    /// reserved register, other sizes): the MMIO data is then left untouched upstream;
    /// the module returns zeros.
    pub fn reg_read(&mut self, offset: u32, len: u32, now_ns: u64) -> Option<u32> {
        let align = offset & 0xf;
        if align.checked_add(len)? > 4 {
            return None;
        }
        if !self.readable(offset) {
            return None;
        }
        let v = self.read_aligned(offset & !0xf, now_ns);
        // align + len <= 4: a 4-byte alignment only comes with len 0 (no data).
        let v = v.checked_shr(8 * align).unwrap_or(0);
        match len {
            1 => Some(v & 0xff),
            2 => Some(v & 0xffff),
            4 => Some(v),
            _ => None,
        }
    }

    /// xAPIC MMIO read at `offset` into the page (`apic_mmio_read` when
    /// [`Lapic::mmio_active`]).
    pub fn mmio_read(&mut self, offset: u32, len: u32, now_ns: u64) -> Option<u32> {
        self.reg_read(offset, len, now_ns)
    }

    /// xAPIC MMIO write (`apic_mmio_write` when [`Lapic::mmio_active`]): only aligned
    /// 4-byte writes reach a register; everything else is dropped silently.
    pub fn mmio_write(&mut self, offset: u32, len: u32, val: u32, now: &Now) -> Effects {
        if len != 4 || offset & 0xf != 0 {
            return Effects::default();
        }
        self.reg_write(offset & 0xff0, val, now).unwrap_or_default()
    }

    /// x2APIC RDMSR (`kvm_x2apic_msr_read`): `Err` (#GP) outside x2APIC mode, for
    /// write-only, reserved or xAPIC-only registers; ICR (0x830) reads 64 bits.
    pub fn x2apic_read(&mut self, msr: u32, now_ns: u64) -> Result<u64, Fault> {
        if !self.x2apic_mode() {
            return Err(Fault);
        }
        let reg = Self::msr_to_reg(msr)?;
        if reg == APIC_ICR {
            return Ok(self.reg(APIC_ICR) as u64 | (self.reg(APIC_ICR2) as u64) << 32);
        }
        self.reg_read(reg, 4, now_ns).map(u64::from).ok_or(Fault)
    }

    /// x2APIC WRMSR (`kvm_x2apic_msr_write`): `Err` (#GP) outside x2APIC mode, for
    /// read-only/reserved registers, bits 63:32 set (except ICR), reserved ICR bits, a
    /// non-zero ESR write, a SELF_IPI with bits above 7.
    pub fn x2apic_write(&mut self, msr: u32, data: u64, now: &Now) -> Result<Effects, Fault> {
        if !self.x2apic_mode() {
            return Err(Fault);
        }
        let reg = Self::msr_to_reg(msr)?;
        if reg == APIC_ICR {
            return self.x2apic_icr_write(data);
        }
        if data >> 32 != 0 {
            return Err(Fault);
        }
        self.reg_write(reg, data as u32, now)
    }

    fn msr_to_reg(msr: u32) -> Result<u32, Fault> {
        if !(APIC_BASE_MSR..=APIC_LAST_MSR).contains(&msr) {
            return Err(Fault);
        }
        Ok((msr - APIC_BASE_MSR) << 4)
    }

    /// `kvm_x2apic_icr_write`: reserved bits #GP, BUSY cleared, IPI sent, stored split in
    /// ICR/ICR2 (as SVM keeps it).
    fn x2apic_icr_write(&mut self, data: u64) -> Result<Effects, Fault> {
        if data & X2APIC_ICR_RESERVED_BITS != 0 {
            return Err(Fault);
        }
        let data = data & !(APIC_ICR_BUSY as u64);
        let fx = Effects {
            ipi: Some(icr_to_irq(data as u32, (data >> 32) as u32, true)),
            ..Effects::default()
        };
        self.set_reg(APIC_ICR, data as u32);
        self.set_reg(APIC_ICR2, (data >> 32) as u32);
        Ok(fx)
    }

    /// `kvm_lapic_reg_write` of an aligned register (also the backend of MMIO and MSR
    /// writes). `Err` where upstream returns 1 (ignored for MMIO, #GP for MSRs).
    pub fn reg_write(&mut self, reg: u32, val: u32, now: &Now) -> Result<Effects, Fault> {
        let mut fx = Effects::default();
        match reg {
            APIC_ID => {
                if self.x2apic_mode() {
                    return Err(Fault);
                }
                self.set_xapic_id((val >> 24) as u8);
                fx.dest_changed = true;
            }
            APIC_TASKPRI => self.set_tpr(val & 0xff, &mut fx),
            APIC_EOI => {
                fx.eoi = self.eoi();
                fx.recheck = true;
            }
            APIC_LDR => {
                if self.x2apic_mode() {
                    return Err(Fault);
                }
                self.set_reg(APIC_LDR, val & APIC_LDR_MASK);
                fx.dest_changed = true;
            }
            APIC_DFR => {
                if self.x2apic_mode() {
                    return Err(Fault);
                }
                self.set_reg(APIC_DFR, val | 0x0fff_ffff);
                fx.dest_changed = true;
            }
            APIC_SPIV => {
                let mut mask = 0x3ff;
                if self.reg(APIC_LVR) & APIC_LVR_DIRECTED_EOI != 0 {
                    mask |= APIC_SPIV_DIRECTED_EOI;
                }
                let was = self.sw_enabled;
                self.set_spiv(val & mask);
                if was != self.sw_enabled {
                    fx.dest_changed = true;
                }
                if val & APIC_SPIV_APIC_ENABLED == 0 {
                    for lvt in Lvt::ALL.iter().take(self.nr_lvt) {
                        let v = self.reg(lvt.offset());
                        self.set_reg(lvt.offset(), v | APIC_LVT_MASKED);
                    }
                    self.update_lvtt(&mut fx);
                    self.timer.pending = false;
                }
            }
            APIC_ICR => {
                if self.x2apic_mode() {
                    // Upstream WARNs: x2APIC ICR writes go through the 64-bit path.
                    return self.x2apic_icr_write(val as u64);
                }
                let val = val & !APIC_ICR_BUSY;
                fx.ipi = Some(icr_to_irq(val, self.reg(APIC_ICR2), false));
                self.set_reg(APIC_ICR, val);
            }
            APIC_ICR2 => {
                if self.x2apic_mode() {
                    return Err(Fault);
                }
                self.set_reg(APIC_ICR2, val & 0xff00_0000);
            }
            APIC_LVT0 | APIC_LVTTHMR | APIC_LVTPC | APIC_LVT1 | APIC_LVTERR | APIC_LVTCMCI => {
                let lvt = Lvt::from_offset(reg).ok_or(Fault)?;
                if lvt == Lvt::Lint0 {
                    self.manage_nmi_watchdog_val(val, &mut fx);
                }
                if !self.lvt_supported(lvt) {
                    return Err(Fault);
                }
                let mut val = val;
                if !self.sw_enabled {
                    val |= APIC_LVT_MASKED;
                }
                self.set_reg(reg, val & lvt.write_mask());
            }
            APIC_LVTT => {
                let mut val = val;
                if !self.sw_enabled {
                    val |= APIC_LVT_MASKED;
                }
                self.set_reg(
                    APIC_LVTT,
                    val & (Lvt::Timer.write_mask() | self.timer.mode_mask),
                );
                self.update_lvtt(&mut fx);
            }
            APIC_TMICT => self.write_tmict(val, now, &mut fx),
            APIC_TDCR => self.write_tdcr(val, now, &mut fx),
            APIC_ESR => {
                if self.x2apic_mode() && val != 0 {
                    return Err(Fault);
                }
            }
            APIC_SELF_IPI => {
                if !self.x2apic_mode() || val & !APIC_VECTOR_MASK != 0 {
                    return Err(Fault);
                }
                fx.ipi = Some(icr_to_irq(APIC_DEST_SELF | val, 0, true));
            }
            _ => return Err(Fault),
        }
        Ok(fx)
    }
}
