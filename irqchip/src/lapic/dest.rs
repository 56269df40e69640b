// SPDX-License-Identifier: GPL-2.0-only
//! Destination matching without the target's lock: [`DestInfo`] is the part of a local APIC
//! that decides whether an interrupt request is addressed to it (upstream
//! `kvm_apic_match_dest` and the helpers it calls), packed into a `u64` the owner publishes
//! in an `AtomicU64` after every change of ID, LDR, DFR, SPIV software enable or
//! IA32_APIC_BASE.
//!
//! Lowest-priority arbitration: upstream KVM uses vector hashing by default
//! (`vector_hashing=1`): among the matching targets whose APIC is software-enabled, in vCPU
//! index order, the one at index `vector % count` gets the interrupt
//! (`__kvm_irq_delivery_to_apic`'s slow path; [`lowest_priority_index`]). The
//! `apic_arb_prio` counter of the non-hashing mode is not modelled.

use super::regs::*;
use crate::irq::{DeliveryMode, LapicIrq, Shorthand};

/// The DFR's destination model as KVM's matcher sees it (it compares the whole register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DfrModel {
    /// `0xffff_ffff`: flat.
    Flat = 0,
    /// `0x0fff_ffff`: cluster.
    Cluster = 1,
    /// Anything else (possible through `KVM_SET_LAPIC`): logical destinations never match.
    Invalid = 2,
}

impl DfrModel {
    /// Classifies a DFR register value.
    pub const fn from_dfr(dfr: u32) -> Self {
        match dfr {
            APIC_DFR_FLAT => DfrModel::Flat,
            APIC_DFR_CLUSTER => DfrModel::Cluster,
            _ => DfrModel::Invalid,
        }
    }
}

/// A local APIC's addressing state, small enough for one `AtomicU64`.
///
/// Layout: bits 31:0 x2APIC ID (= vCPU ID in KVM), 39:32 xAPIC ID (ID register bits 31:24),
/// 47:40 xAPIC logical ID (LDR bits 31:24), 49:48 [`DfrModel`], bit 52 APIC globally enabled
/// (IA32_APIC_BASE.EN: upstream `kvm_apic_present`), bit 53 software-enabled (SPIV bit 8),
/// bit 54 x2APIC mode, bit 55 valid (0 means "no local APIC": never matches), bit 56 the LDR
/// register is non-zero (it can hold bits below 24 after `KVM_SET_LAPIC`; upstream's logical
/// map looks at the whole register).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DestInfo(u64);

const VALID: u64 = 1 << 55;
const X2APIC: u64 = 1 << 54;
const SW_EN: u64 = 1 << 53;
const HW_EN: u64 = 1 << 52;
const LDR_NZ: u64 = 1 << 56;

impl DestInfo {
    /// "No local APIC" (what an unpublished slot holds).
    pub const NONE: DestInfo = DestInfo(0);

    /// Builds the value from the register state.
    pub const fn new(
        x2apic_id: u32,
        xapic_id: u8,
        logical_id: u8,
        dfr: DfrModel,
        hw_enabled: bool,
        sw_enabled: bool,
        x2apic_mode: bool,
    ) -> Self {
        let mut v = x2apic_id as u64
            | (xapic_id as u64) << 32
            | (logical_id as u64) << 40
            | (dfr as u64) << 48
            | VALID;
        if hw_enabled {
            v |= HW_EN;
        }
        if sw_enabled {
            v |= SW_EN;
        }
        if x2apic_mode {
            v |= X2APIC | LDR_NZ;
        }
        if logical_id != 0 {
            v |= LDR_NZ;
        }
        DestInfo(v)
    }

    /// Records whether the whole LDR register is non-zero (see the layout; [`DestInfo::new`]
    /// assumes it is exactly when the logical ID is, or in x2APIC mode).
    pub const fn with_ldr_nonzero(self, nonzero: bool) -> Self {
        if nonzero {
            DestInfo(self.0 | LDR_NZ)
        } else {
            DestInfo(self.0 & !LDR_NZ)
        }
    }

    /// The LDR register is non-zero.
    pub const fn ldr_nonzero(self) -> bool {
        self.0 & LDR_NZ != 0
    }

    /// The packed value (for `AtomicU64::store`).
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// Unpacks a value read from an `AtomicU64`.
    pub const fn from_bits(v: u64) -> Self {
        DestInfo(v)
    }

    /// Whether a local APIC stands behind this value.
    pub const fn valid(self) -> bool {
        self.0 & VALID != 0
    }

    /// Upstream `kvm_apic_present`: the APIC exists and IA32_APIC_BASE.EN is set. Only
    /// present APICs are matched against destinations.
    pub const fn present(self) -> bool {
        self.valid() && self.0 & HW_EN != 0
    }

    /// Software-enabled (SPIV bit 8); lowest-priority candidates must be.
    pub const fn sw_enabled(self) -> bool {
        self.valid() && self.0 & SW_EN != 0
    }

    /// Upstream `apic_enabled`: hardware and software enabled (fixed and lowest-priority
    /// interrupts are dropped otherwise).
    pub const fn enabled(self) -> bool {
        self.present() && self.0 & SW_EN != 0
    }

    /// x2APIC mode.
    pub const fn x2apic_mode(self) -> bool {
        self.0 & X2APIC != 0
    }

    /// The x2APIC ID (the vCPU ID).
    pub const fn x2apic_id(self) -> u32 {
        self.0 as u32
    }

    /// The xAPIC ID (ID register bits 31:24).
    pub const fn xapic_id(self) -> u8 {
        (self.0 >> 32) as u8
    }

    /// The xAPIC logical ID (LDR bits 31:24).
    pub const fn logical_id(self) -> u8 {
        (self.0 >> 40) as u8
    }

    /// The DFR model.
    pub const fn dfr(self) -> DfrModel {
        match (self.0 >> 48) & 3 {
            0 => DfrModel::Flat,
            1 => DfrModel::Cluster,
            _ => DfrModel::Invalid,
        }
    }

    /// Physical destination match (`kvm_apic_match_physical_addr`), with KVM's hotplug
    /// hack: an xAPIC-mode APIC also answers to its x2APIC ID when the destination does
    /// not fit in 8 bits.
    pub const fn match_physical(self, mda: u32) -> bool {
        if self.is_broadcast(mda) {
            return true;
        }
        if self.x2apic_mode() || mda > 0xff {
            return mda == self.x2apic_id();
        }
        mda == self.xapic_id() as u32
    }

    /// Logical destination match (`kvm_apic_match_logical_addr`).
    pub const fn match_logical(self, mda: u32) -> bool {
        if self.is_broadcast(mda) {
            return true;
        }
        if self.x2apic_mode() {
            let ldr = x2apic_ldr(self.x2apic_id());
            return (ldr >> 16) == (mda >> 16) && (ldr & mda & 0xffff) != 0;
        }
        let lid = self.logical_id() as u32;
        match self.dfr() {
            DfrModel::Flat => lid & mda != 0,
            DfrModel::Cluster => (lid >> 4) == (mda >> 4) && (lid & mda & 0xf) != 0,
            DfrModel::Invalid => false,
        }
    }

    /// `kvm_apic_broadcast`.
    const fn is_broadcast(self, mda: u32) -> bool {
        mda == if self.x2apic_mode() {
            X2APIC_BROADCAST
        } else {
            APIC_BROADCAST
        }
    }
}

/// The x2APIC LDR derived from the x2APIC ID (`kvm_apic_calc_x2apic_ldr`): cluster in bits
/// 31:16, one bit of 16 in bits 15:0.
pub const fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xf))
}

/// Who sends the request being matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// A device: IOAPIC, MSI, PIC, `KVM_SIGNAL_MSI` (upstream `source == NULL`).
    Device,
    /// A local APIC's ICR (an IPI); `is_target` tells whether the APIC being matched is the
    /// sender itself.
    Apic {
        /// The target is the sending APIC.
        is_target: bool,
    },
}

/// Upstream `kvm_apic_match_dest`: does `irq` address `target`?
///
/// `broadcast_quirk_disabled` is `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`: without it a
/// device's 0xff destination is the broadcast for x2APIC-mode targets too. The caller skips
/// targets that are not [`DestInfo::present`] (except for the self shorthand, which
/// upstream delivers to the sender directly).
pub fn match_dest(
    target: DestInfo,
    irq: &LapicIrq,
    sender: Sender,
    broadcast_quirk_disabled: bool,
) -> bool {
    if !target.valid() {
        return false;
    }
    let is_target = matches!(sender, Sender::Apic { is_target: true });
    match irq.shorthand {
        Shorthand::None => {
            let ipi = matches!(sender, Sender::Apic { .. });
            let mut mda = irq.dest_id;
            if !broadcast_quirk_disabled && !ipi && mda == APIC_BROADCAST && target.x2apic_mode() {
                mda = X2APIC_BROADCAST;
            }
            if irq.dest_logical {
                target.match_logical(mda)
            } else {
                target.match_physical(mda)
            }
        }
        Shorthand::SelfOnly => is_target,
        Shorthand::AllIncludingSelf => true,
        Shorthand::AllExcludingSelf => !is_target,
    }
}

/// Upstream `kvm_lowest_prio_delivery`: lowest-priority mode or an MSI with the
/// redirection hint.
pub fn is_lowest_priority(irq: &LapicIrq) -> bool {
    irq.delivery_mode == DeliveryMode::LowestPriority || irq.msi_redir_hint
}

/// Upstream's "phys broadcast and lowest prio" fix-up in `__kvm_irq_delivery_to_apic`: a
/// physical 0xff destination with lowest priority is delivered as fixed to every match.
/// Apply before matching.
pub fn fixup_phys_broadcast_lowest(irq: &mut LapicIrq) {
    if !irq.dest_logical && irq.dest_id == 0xff && is_lowest_priority(irq) {
        irq.delivery_mode = DeliveryMode::Fixed;
    }
}

/// Vector hashing (`kvm_vector_to_index`): the index, among `candidates` software-enabled
/// matching targets in vCPU index order, of the one that receives a lowest-priority
/// interrupt. `None` when there is no candidate.
pub fn lowest_priority_index(vector: u8, candidates: usize) -> Option<usize> {
    (vector as usize).checked_rem(candidates)
}

/// Decodes an ICR write into a request (`kvm_icr_to_lapic_irq`): `icr_high` is ICR2 in
/// xAPIC mode (destination in bits 31:24) or bits 63:32 of the x2APIC ICR. Delivery mode 3
/// is [`DeliveryMode::RemoteRead`] (KVM's PV-unhalt kick), sent like the others.
pub fn icr_to_irq(icr_low: u32, icr_high: u32, x2apic_mode: bool) -> LapicIrq {
    let delivery_mode = DeliveryMode::from_bits((icr_low & APIC_MODE_MASK) >> 8);
    let shorthand = match icr_low & APIC_SHORT_MASK {
        0 => Shorthand::None,
        APIC_DEST_SELF => Shorthand::SelfOnly,
        APIC_DEST_ALLINC => Shorthand::AllIncludingSelf,
        _ => Shorthand::AllExcludingSelf,
    };
    LapicIrq {
        vector: (icr_low & APIC_VECTOR_MASK) as u8,
        delivery_mode,
        dest_logical: icr_low & APIC_DEST_LOGICAL != 0,
        level_triggered: icr_low & APIC_INT_LEVELTRIG != 0,
        level: icr_low & APIC_INT_ASSERT != 0,
        shorthand,
        dest_id: if x2apic_mode {
            icr_high
        } else {
            icr_high >> 24
        },
        msi_redir_hint: false,
    }
}
