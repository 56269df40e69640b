// SPDX-License-Identifier: GPL-2.0-only
//! Kernel-free models of the interrupt controllers and timers that upstream KVM emulates in
//! the kernel (`arch/x86/kvm/{lapic.c,ioapic.c,i8259.c,i8254.c,irq_comm.c}`), without any
//! kernel API.
//!
//! It is `#![no_std]` and uses `core` only, like the other core crates: the kernel module links
//! it as an rlib built with the kernel's flags and host tests link it unchanged. The models are
//! state machines: the module owns the locks, the timers (hrtimers), the vCPU kicks and the
//! guest-memory access, and feeds the models register accesses and time; the models answer
//! with register values and with what must be delivered ([`irq::LapicIrq`]).
//!
//! Map of the crate:
//! - [`irq`]: an interrupt request on its way to local APICs (upstream `struct kvm_lapic_irq`),
//!   the common currency of the IOAPIC, MSIs, IPIs and the routing table.
//! - [`lapic`]: the local APIC of one vCPU (xAPIC MMIO page and x2APIC MSRs, priorities,
//!   IRR/ISR/TMR, EOI, ICR, LVT, the timer's arithmetic, `KVM_GET/SET_LAPIC`).
//! - [`ioapic`]: the IOAPIC (redirection table, remote IRR, EOI).
//! - [`pic`]: the 8259A master/slave pair (ICW/OCW, ELCR, INTA).
//! - [`pit`]: the 8254 PIT (counter modes, latches, read-back, the speaker gate).
//! - [`routing`]: the GSI routing table (`KVM_SET_GSI_ROUTING`) and MSI message decoding.

#![no_std]
#![deny(missing_docs)]

pub mod ioapic;
pub mod irq;
pub mod lapic;
pub mod pic;
pub mod pit;
pub mod routing;
