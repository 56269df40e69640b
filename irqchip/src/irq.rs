// SPDX-License-Identifier: GPL-2.0-only
//! An interrupt request on its way to local APICs: upstream `struct kvm_lapic_irq`.
//!
//! The IOAPIC's redirection entries, MSIs (routing table, `KVM_SIGNAL_MSI`, irqfd), the
//! LAPIC's ICR (IPIs) and the PIC's ExtINT all end up as one of these; the module resolves its
//! destination against the vCPUs' local APICs and posts the vector to each target.

/// The delivery mode (ICR / redirection entry / MSI data bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DeliveryMode {
    /// Fixed: the vector to every destination.
    Fixed = 0,
    /// Lowest priority: the vector to one destination.
    LowestPriority = 1,
    /// SMI.
    Smi = 2,
    /// Remote read, reserved on x86 since the P6; KVM uses it as its PV-unhalt kick
    /// (upstream `APIC_DM_REMRD` in `__apic_accept_irq`: the target gets `pv_unhalted`, an
    /// event request and a kick, and counts as delivered). `KVM_HC_KICK_CPU` sends it; an
    /// ICR write, IOAPIC entry or MSI with mode 3 does the same.
    RemoteRead = 3,
    /// NMI.
    Nmi = 4,
    /// INIT (or INIT level de-assert).
    Init = 5,
    /// Start-up IPI.
    StartUp = 6,
    /// ExtINT: the vector comes from the PIC's INTA cycle.
    ExtInt = 7,
}

impl DeliveryMode {
    /// Decodes bits 2:0 of a delivery-mode field.
    pub fn from_bits(v: u32) -> Self {
        match v & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            3 => Self::RemoteRead,
            4 => Self::Nmi,
            5 => Self::Init,
            6 => Self::StartUp,
            _ => Self::ExtInt,
        }
    }
}

/// The destination shorthand of an ICR write (none for IOAPIC and MSI requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Shorthand {
    /// The destination field selects the targets.
    #[default]
    None = 0,
    /// The sending APIC only.
    SelfOnly = 1,
    /// Every APIC, the sender included.
    AllIncludingSelf = 2,
    /// Every APIC but the sender.
    AllExcludingSelf = 3,
}

/// One interrupt request (upstream `struct kvm_lapic_irq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LapicIrq {
    /// The vector (ignored for NMI, INIT and SMI; the start-up page for SIPI).
    pub vector: u8,
    /// How it is delivered.
    pub delivery_mode: DeliveryMode,
    /// Logical (`true`) or physical destination mode.
    pub dest_logical: bool,
    /// Level (`true`) or edge triggered.
    pub level_triggered: bool,
    /// The level: asserted (`true`) or de-asserted (an INIT level de-assert).
    pub level: bool,
    /// The shorthand (ICR only).
    pub shorthand: Shorthand,
    /// The destination: an APIC ID or logical destination; 8 bits in xAPIC form, 32 bits in
    /// x2APIC form (0xffff_ffff is the x2APIC broadcast).
    pub dest_id: u32,
    /// Whether a message-signalled interrupt (MSI) made this request.
    pub msi_redir_hint: bool,
}
