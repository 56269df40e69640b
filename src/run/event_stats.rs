// SPDX-License-Identifier: GPL-2.0-only
//! The vCPU stats of event injection and halting (upstream `struct kvm_vcpu_stat` /
//! `kvm_vcpu_stat_generic` fields of the same names, on the binary stats fd), counted where
//! upstream counts them:
//!
//! - `irq_injections` / `nmi_injections`: each entry that injects an external (or re-injected
//!   soft) interrupt or an NMI through EVENTINJ (`svm_inject_irq`, `svm_inject_nmi`), new or
//!   re-injected after an exit cut its delivery short, counted when the entry is prepared
//!   (upstream counts before a late entry cancel too, and injects again after it);
//! - `irq_window_exits` / `nmi_window_exits`: VINTR exits (`interrupt_window_interception`)
//!   and IRET exits (`iret_interception`; the NMI single-step's #DB is not counted, as
//!   upstream);
//! - `request_irq_exits`: `KVM_EXIT_IRQ_WINDOW_OPEN` exits (`vcpu_run`);
//! - `halt_wakeup`: kicks that woke the vCPU thread from its halt (or wait-for-SIPI) sleep
//!   (`kvm_vcpu_wake_up`).
//!
//! Halt polling is not done here, so its counters (`halt_attempted_poll`,
//! `halt_successful_poll`, `halt_poll_invalid`, the poll and wait times) are not published;
//! nor is `req_event`: this loop evaluates events before every entry, not on a request.

use crate::vcpu::{Vcpu, VcpuLocked};
use core::sync::atomic::{AtomicU64, Ordering};

/// The counters (cumulative), in the vCPU's [`crate::run::RunStats`].
#[derive(Default)]
pub(crate) struct EventStats {
    pub(crate) irq_injections: AtomicU64,
    pub(crate) nmi_injections: AtomicU64,
    pub(crate) irq_window_exits: AtomicU64,
    pub(crate) nmi_window_exits: AtomicU64,
    pub(crate) request_irq_exits: AtomicU64,
    pub(crate) halt_wakeup: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn stats(vcpu: &Vcpu) -> &EventStats {
    &vcpu.stats.run.events
}

/// After the events for the next entry were decided: what EVENTINJ will carry (the backend
/// injects a pending or re-injected exception first, then an interrupt, then an NMI).
pub(crate) fn injections(vcpu: &Vcpu, l: &VcpuLocked) {
    let e = &l.arch.events;
    if e.exception.pending || e.exception.injected {
        return;
    }
    if e.interrupt.injected {
        bump(&stats(vcpu).irq_injections);
    } else if e.nmi_injected {
        bump(&stats(vcpu).nmi_injections);
    }
}

/// An event-window exit with the backend's raw exit code.
pub(crate) fn window_exit(vcpu: &Vcpu, code: u64) {
    match code {
        x86::svm::exit::VINTR => bump(&stats(vcpu).irq_window_exits),
        x86::svm::exit::IRET => bump(&stats(vcpu).nmi_window_exits),
        _ => {}
    }
}

/// `KVM_RUN` returns with `KVM_EXIT_IRQ_WINDOW_OPEN`.
pub(crate) fn request_irq_exit(vcpu: &Vcpu) {
    bump(&stats(vcpu).request_irq_exits);
}

/// A kick woke the vCPU thread from its halt wait.
pub(crate) fn halt_wakeup(vcpu: &Vcpu) {
    bump(&stats(vcpu).halt_wakeup);
}
