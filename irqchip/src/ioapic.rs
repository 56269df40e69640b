// SPDX-License-Identifier: GPL-2.0-only
//! The IOAPIC (upstream `arch/x86/kvm/ioapic.c`, Linux 6.12): the index/data register pair at
//! 0xfec00000, the 24-entry redirection table with edge/level semantics and remote IRR, line
//! levels per interrupt source, EOI by vector, the RTC (GSI 8) coalescing tracker and
//! `KVM_GET/SET_IRQCHIP`.
//!
//! Concurrency: the model is plain data; the module keeps it under one spinlock (upstream's
//! `ioapic->lock`) and delivers through [`IoapicEnv`] while holding it, as upstream does. The ack
//! notifiers upstream calls with the lock dropped in the middle of an EOI are the reason the EOI
//! has two steps, [`Ioapic::eoi_begin`] and [`Ioapic::eoi_pin`]: the module drops its lock between
//! them to run the notifiers (irqfd resampler, PIT reinjection).
//!
//! Version 0x11 with 24 entries and no EOI register (upstream's `IOAPIC_VERSION_ID`); register 2
//! (arbitration ID) reads like register 0. The EOI-storm guard (10000 re-deliveries in a row
//! defer the next one by 10 ms) is kept: [`EoiOutcome::Deferred`] tells the module to call
//! [`Ioapic::inject_pending_level`] later.

pub mod redir;
mod rtc;
mod scan;
#[cfg(test)]
pub(crate) mod tests;
pub mod uapi;

pub use redir::RedirEntry;
pub use rtc::DestMap;
pub use scan::{scan_irq, set_vector, test_vector};
use uapi::{KvmIoapicState, KVM_IOAPIC_NUM_PINS};

use crate::irq::{DeliveryMode, LapicIrq};

/// Pins of the IOAPIC.
pub const NUM_PINS: usize = KVM_IOAPIC_NUM_PINS;
/// The default MMIO base (`IOAPIC_DEFAULT_BASE_ADDRESS`).
pub const DEFAULT_BASE_ADDRESS: u64 = 0xfec0_0000;
/// The MMIO window's length (`IOAPIC_MEM_LENGTH`).
pub const MEM_LENGTH: u64 = 0x100;
/// The version register's version field (`IOAPIC_VERSION_ID`).
pub const VERSION_ID: u32 = 0x11;
/// The RTC's GSI, whose deliveries `KVM_IRQ_LINE_STATUS` reports as coalesced until EOIed.
pub const RTC_GSI: usize = 8;
/// Re-deliveries in a row on EOI before the next one is deferred (upstream
/// `IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT`).
pub const SUCCESSIVE_IRQ_MAX_COUNT: u32 = 10000;
/// The deferral upstream uses after an EOI storm (`HZ / 100`): 10 ms.
pub const EOI_STORM_DELAY_NS: u64 = 10_000_000;
/// vCPU IDs the RTC tracker covers (`KVM_MAX_VCPU_IDS` on x86).
pub const MAX_VCPU_IDS: usize = 4096;

/// Interrupt source IDs (upstream `KVM_USERSPACE_IRQ_SOURCE_ID`): a line is asserted while any
/// source holds it; `KVM_IRQ_LINE` uses this one.
pub const USERSPACE_IRQ_SOURCE_ID: u32 = 0;
/// The source irqfd resamplers de-assert (upstream `KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID`).
pub const IRQFD_RESAMPLE_IRQ_SOURCE_ID: u32 = 1;
/// The first ID free for devices (the PIT takes it upstream, `kvm_request_irq_source_id`).
pub const FIRST_DEVICE_IRQ_SOURCE_ID: u32 = 2;
/// Source IDs are bits of one `unsigned long`.
pub const MAX_IRQ_SOURCE_IDS: u32 = 64;

const REG_SELECT: u64 = 0x00;
const REG_WINDOW: u64 = 0x10;
const REG_APIC_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARB_ID: u32 = 0x02;

/// Where the module sends what the IOAPIC delivers.
pub trait IoapicEnv {
    /// Upstream `kvm_irq_delivery_to_apic(kvm, NULL, irq, dest_map)`: the number of local
    /// APICs that accepted it (0 when the targets exist but none accepted, and also, on
    /// upstream's APIC-map fast path, for a physical destination no vCPU has), or -1 when no
    /// target was found on its slow path. With `dest_map`, every vCPU whose local APIC accepts
    /// a fixed or lowest-priority request is recorded ([`DestMap::set`], upstream
    /// `__apic_accept_irq`; the other modes are not): the RTC tracker counts the EOIs it waits
    /// for from it. An environment that records nothing disables the RTC coalescing report for
    /// fixed and lowest-priority RTC entries (never coalesced).
    fn deliver(&mut self, irq: &LapicIrq, dest_map: Option<&mut DestMap>) -> i32;

    /// Upstream `kvm_notify_irqfd_resampler(kvm, KVM_IRQCHIP_IOAPIC, pin)`, called (under the
    /// IOAPIC lock) when a guest unmasks a level-triggered pin whose IRR bit is set: if an
    /// irqfd resampler serves the GSI routed to this pin, signal its resample eventfd and
    /// answer `true` (the IOAPIC then drops the pending bit instead of delivering). The
    /// default answers `false`.
    fn notify_resampler(&mut self, pin: u8) -> bool {
        let _ = pin;
        false
    }

    /// The RTC tracker's rebuild (upstream `kvm_rtc_eoi_tracking_restore_all`, under the
    /// IOAPIC lock): for every vCPU that (`dest_id`, `logical`) addresses
    /// (`kvm_apic_match_dest` with no shorthand and no source APIC), call
    /// `found(vcpu_id, pending_eoi)`, where `pending_eoi` says whether `vector` is set in that
    /// vCPU's IRR or ISR (`kvm_apic_pending_eoi`). The default knows no vCPUs.
    fn rtc_scan(
        &mut self,
        dest_id: u32,
        logical: bool,
        vector: u8,
        found: &mut dyn FnMut(u32, bool),
    ) {
        let _ = (dest_id, logical, vector, found);
    }
}

/// What a guest write to the redirection table asks of the module besides delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteEffects {
    /// The mask bit of this pin changed to this value: fire the mask notifiers of the GSI the
    /// routing table maps (IOAPIC, pin) to (upstream `kvm_fire_mask_notifiers`).
    pub mask_changed: Option<(u8, bool)>,
    /// The vCPUs' EOI-exit bitmaps must be recomputed ([`Ioapic::scan_entry`]).
    pub rescan: Rescan,
}

/// Which vCPUs must recompute their EOI-exit bitmaps (upstream `KVM_REQ_SCAN_IOAPIC`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rescan {
    /// None.
    #[default]
    None,
    /// Every vCPU.
    All,
    /// The vCPUs a fixed-mode entry targets, now and (if it changed) before: each given as
    /// (destination, logical); upstream `kvm_make_scan_ioapic_request_mask`.
    Dests {
        /// The destination now.
        new: (u8, bool),
        /// The destination before the write, if it differs.
        old: Option<(u8, bool)>,
    },
}

/// What one redirection entry's EOI did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EoiOutcome {
    /// Edge trigger, directed EOI, or nothing pending: only the notifiers ran.
    Done,
    /// Remote IRR cleared; the line is still asserted, so it was delivered again (the result of
    /// the delivery, as [`IoapicEnv::deliver`]).
    Redelivered(i32),
    /// Remote IRR cleared, but this was the 10000th re-delivery in a row: call
    /// [`Ioapic::inject_pending_level`] after [`EOI_STORM_DELAY_NS`] instead.
    Deferred,
}

/// The IOAPIC.
#[derive(Clone, Debug)]
pub struct Ioapic {
    base_address: u64,
    ioregsel: u32,
    id: u32,
    irr: u32,
    pad: u32,
    redirtbl: [RedirEntry; NUM_PINS],
    /// Per pin, the sources that hold the line asserted.
    irq_states: [u64; NUM_PINS],
    irq_eoi: [u32; NUM_PINS],
    irr_delivered: u32,
    rtc_pending_eoi: i32,
    rtc_dest_map: DestMap,
}

impl Default for Ioapic {
    fn default() -> Self {
        Self::new()
    }
}

impl Ioapic {
    /// An IOAPIC as `KVM_CREATE_IRQCHIP` makes it (`kvm_ioapic_init`): every entry masked,
    /// base 0xfec00000, ID 0.
    pub fn new() -> Self {
        let mut s = Self {
            base_address: DEFAULT_BASE_ADDRESS,
            ioregsel: 0,
            id: 0,
            irr: 0,
            pad: 0,
            redirtbl: [RedirEntry(0); NUM_PINS],
            irq_states: [0; NUM_PINS],
            irq_eoi: [0; NUM_PINS],
            irr_delivered: 0,
            rtc_pending_eoi: 0,
            rtc_dest_map: DestMap::default(),
        };
        s.reset();
        s
    }

    /// Upstream `kvm_ioapic_reset`: masks every entry (other bits kept), base/IOREGSEL/IRR/ID
    /// cleared, the EOI-storm counters and RTC tracker reset; line levels are kept.
    pub fn reset(&mut self) {
        for e in &mut self.redirtbl {
            e.set_mask(true);
        }
        self.base_address = DEFAULT_BASE_ADDRESS;
        self.ioregsel = 0;
        self.irr = 0;
        self.irr_delivered = 0;
        self.id = 0;
        self.irq_eoi = [0; NUM_PINS];
        self.rtc_reset();
    }

    /// Redirection entry `pin` (`None` past the table).
    pub fn entry(&self, pin: usize) -> Option<RedirEntry> {
        self.redirtbl.get(pin).copied()
    }

    /// The IRR as upstream keeps it (edge pins stay set after delivery until de-asserted).
    pub fn irr(&self) -> u32 {
        self.irr
    }

    /// Whether `addr` is in the IOAPIC's window (upstream `ioapic_in_range`; the base is the one
    /// `KVM_SET_IRQCHIP` last stored, while the module's device stays at 0xfec00000).
    pub fn in_range(&self, addr: u64) -> bool {
        addr >= self.base_address && addr < self.base_address.wrapping_add(MEM_LENGTH)
    }

    /// An MMIO read of `len` bytes at guest physical `addr` (upstream `ioapic_mmio_read`):
    /// `None` if out of range (the access goes on to userspace), else the value, whose low `len`
    /// bytes the guest sees (a 1-, 2-, 4- or 8-byte read of the 32-bit register, zero-extended).
    pub fn mmio_read(&self, addr: u64, len: usize) -> Option<u64> {
        if !self.in_range(addr) {
            return None;
        }
        let result = match addr & 0xff {
            REG_SELECT => self.ioregsel,
            REG_WINDOW => self.read_indirect(),
            _ => 0,
        };
        Some(match len {
            1 => u64::from(result & 0xff),
            2 => u64::from(result & 0xffff),
            4 | 8 => u64::from(result),
            // Upstream warns and leaves the buffer alone; the module's buffer is zeroed.
            _ => 0,
        })
    }

    fn read_indirect(&self) -> u32 {
        match self.ioregsel {
            REG_VERSION => (((NUM_PINS as u32 - 1) & 0xff) << 16) | (VERSION_ID & 0xff),
            REG_APIC_ID | REG_ARB_ID => (self.id & 0xf) << 24,
            sel => {
                let index = (sel.wrapping_sub(0x10) >> 1) as usize;
                let content = self.redirtbl.get(index).map_or(!0u64, |e| e.0);
                if sel & 1 != 0 {
                    (content >> 32) as u32
                } else {
                    content as u32
                }
            }
        }
    }

    /// An MMIO write of `len` bytes (`data` holds them in its low bytes) at `addr` (upstream
    /// `ioapic_mmio_write`). `None` if out of range; otherwise the side effects the module must
    /// carry out (deliveries have already gone through `env`). Sizes other than 1, 2, 4 and 8
    /// are ignored; an 8-byte write writes its low 32 bits.
    pub fn mmio_write(
        &mut self,
        addr: u64,
        len: usize,
        data: u64,
        env: &mut dyn IoapicEnv,
    ) -> Option<WriteEffects> {
        if !self.in_range(addr) {
            return None;
        }
        let data = match len {
            8 | 4 => data as u32,
            2 => data as u32 & 0xffff,
            1 => data as u32 & 0xff,
            _ => return Some(WriteEffects::default()),
        };
        Some(match addr & 0xff {
            REG_SELECT => {
                self.ioregsel = data & 0xff;
                WriteEffects::default()
            }
            REG_WINDOW => self.write_indirect(data, env),
            _ => WriteEffects::default(),
        })
    }

    fn write_indirect(&mut self, val: u32, env: &mut dyn IoapicEnv) -> WriteEffects {
        let mut fx = WriteEffects::default();
        match self.ioregsel {
            REG_VERSION | REG_ARB_ID => {}
            REG_APIC_ID => self.id = (val >> 24) & 0xf,
            sel => {
                let index = (sel.wrapping_sub(0x10) >> 1) as usize;
                let Some(e) = self.redirtbl.get_mut(index) else {
                    return fx;
                };
                let old = *e;
                e.0 = if sel & 1 != 0 {
                    (e.0 & 0xffff_ffff) | (u64::from(val) << 32)
                } else {
                    (e.0 & !0xffff_ffff) | u64::from(val)
                };
                // Remote IRR and delivery status are read-only.
                e.set_remote_irr(old.remote_irr());
                e.set_delivery_status(old.delivery_status());
                // Linux and Xen expect remote IRR to clear when an entry turns edge-triggered
                // (an explicit EOI on IOAPICs without the EOI register).
                if !e.level_triggered() {
                    e.set_remote_irr(false);
                }
                let new = *e;
                if old.masked() != new.masked() {
                    fx.mask_changed = Some((index as u8, new.masked()));
                }
                if new.level_triggered()
                    && self.irr & (1 << index) != 0
                    && !new.masked()
                    && !new.remote_irr()
                {
                    // The pending bit may be stale: the line may have dropped while the pin
                    // was masked (a Linux IRQF_ONESHOT handler acks the device before
                    // unmasking). With a resampler the IRR bit is dropped and the resampler
                    // asks the device, which re-asserts if still pending; without one the
                    // interrupt is delivered (possibly once too often).
                    if env.notify_resampler(index as u8) {
                        self.irr &= !(1 << index);
                    } else {
                        self.service(index, false, env);
                    }
                }
                fx.rescan = if new.delivery_mode_bits() == 0 {
                    let changed =
                        old.dest_id() != new.dest_id() || old.dest_logical() != new.dest_logical();
                    Rescan::Dests {
                        new: (new.dest_id(), new.dest_logical()),
                        // Upstream pairs the old ID with the *new* mode here.
                        old: changed.then_some((old.dest_id(), new.dest_logical())),
                    }
                } else {
                    Rescan::All
                };
            }
        }
        fx
    }

    /// Upstream `ioapic_service`: delivers `pin` unless masked or a level interrupt awaiting
    /// EOI; returns -1 then, else the delivery's result.
    fn service(&mut self, pin: usize, line_status: bool, env: &mut dyn IoapicEnv) -> i32 {
        let Some(&entry) = self.redirtbl.get(pin) else {
            return -1;
        };
        if entry.masked() || (entry.level_triggered() && entry.remote_irr()) {
            return -1;
        }
        if !entry.level_triggered() {
            self.irr_delivered |= 1 << pin;
        }
        let rtc = pin == RTC_GSI && line_status;
        let irq = entry.to_lapic_irq();
        let ret = if rtc {
            let ret = env.deliver(&irq, Some(&mut self.rtc_dest_map));
            self.rtc_pending_eoi = match irq.delivery_mode {
                // Upstream takes `ret`: every APIC that accepts a fixed or lowest-priority
                // request sets its bit, so the two agree. Counting the bits keeps an
                // environment that does not fill the map from reporting every later RTC
                // interrupt as coalesced (no tracking instead).
                DeliveryMode::Fixed | DeliveryMode::LowestPriority => self.rtc_dest_map.count(),
                // The other modes (remote read included) are counted and never recorded,
                // as upstream: no EOI retires them, and the RTC stays coalesced until a
                // restore.
                _ => ret.max(0),
            };
            ret
        } else {
            env.deliver(&irq, None)
        };
        if ret != 0 && entry.level_triggered() {
            if let Some(e) = self.redirtbl.get_mut(pin) {
                e.set_remote_irr(true);
            }
        }
        ret
    }

    /// Upstream `kvm_ioapic_set_irq`: source `source_id` drives `pin` to `level`; the line is
    /// asserted while any source holds it. Returns upstream's value: 1 for a de-assertion, 0 if
    /// coalesced (edge already pending, or the RTC still awaiting EOI with `line_status`), -1 if
    /// masked / awaiting EOI / no destination, else the number of APICs it was delivered to.
    /// A pin past the table or a source ID of 64 or more answers -1 and changes nothing.
    pub fn set_irq(
        &mut self,
        pin: usize,
        source_id: u32,
        level: bool,
        line_status: bool,
        env: &mut dyn IoapicEnv,
    ) -> i32 {
        if source_id >= MAX_IRQ_SOURCE_IDS {
            return -1;
        }
        let Some(state) = self.irq_states.get_mut(pin) else {
            return -1;
        };
        if level {
            *state |= 1 << source_id;
        } else {
            *state &= !(1 << source_id);
        }
        let line = *state != 0;
        self.set_irq_level(pin, line, line_status, env)
    }

    /// Upstream `ioapic_set_irq`: the line's combined level changes.
    fn set_irq_level(
        &mut self,
        pin: usize,
        level: bool,
        line_status: bool,
        env: &mut dyn IoapicEnv,
    ) -> i32 {
        let Some(&entry) = self.redirtbl.get(pin) else {
            return -1;
        };
        let mask = 1u32 << pin;
        if !level {
            self.irr &= !mask;
            return 1;
        }
        if pin == RTC_GSI && line_status && self.rtc_pending_eoi > 0 {
            return 0;
        }
        let old_irr = self.irr;
        self.irr |= mask;
        if !entry.level_triggered() {
            self.irr_delivered &= !mask;
            if old_irr == self.irr {
                return 0;
            }
        }
        self.service(pin, line_status, env)
    }

    /// Upstream `kvm_ioapic_clear_all`: `source_id` lets go of every line (the levels are not
    /// re-evaluated, as upstream).
    pub fn clear_source(&mut self, source_id: u32) {
        if source_id < MAX_IRQ_SOURCE_IDS {
            for s in &mut self.irq_states {
                *s &= !(1 << source_id);
            }
        }
    }

    /// First step of an EOI of `vector` by `vcpu_id` (upstream `__kvm_ioapic_update_eoi` up to
    /// the ack notifiers): retires the RTC tracker's entry for this vCPU and returns the pins
    /// whose entry has this vector (bit n = pin n). For each, in pin order, the module runs the
    /// ack notifiers of (IOAPIC, pin) without the IOAPIC lock, then calls [`Self::eoi_pin`].
    /// (Upstream looks at each entry's vector when its loop reaches the pin, after the earlier
    /// pins' notifiers ran unlocked; a module that wants exactly that re-checks
    /// `entry(pin).vector()` after re-taking the lock.)
    pub fn eoi_begin(&mut self, vcpu_id: u32, vector: u8) -> u32 {
        if self.rtc_dest_map.get(vcpu_id) == Some(vector) {
            self.rtc_eoi(vcpu_id);
        }
        let mut pins = 0;
        for (i, e) in self.redirtbl.iter().enumerate() {
            if e.vector() == vector {
                pins |= 1 << i;
            }
        }
        pins
    }

    /// Second step for one `pin` of [`Self::eoi_begin`]'s answer: with a level-triggered EOI
    /// (`level_eoi`: the vector's TMR bit was set) and no directed EOI (the EOIing APIC's SVR
    /// bit 12 clear), clears remote IRR and delivers again if the line is still asserted.
    pub fn eoi_pin(
        &mut self,
        pin: usize,
        level_eoi: bool,
        directed_eoi: bool,
        env: &mut dyn IoapicEnv,
    ) -> EoiOutcome {
        if !level_eoi || directed_eoi {
            return EoiOutcome::Done;
        }
        let Some(e) = self.redirtbl.get_mut(pin) else {
            return EoiOutcome::Done;
        };
        e.set_remote_irr(false);
        let masked = e.masked();
        let Some(count) = self.irq_eoi.get_mut(pin) else {
            return EoiOutcome::Done;
        };
        if !masked && self.irr & (1 << pin) != 0 {
            *count += 1;
            if *count == SUCCESSIVE_IRQ_MAX_COUNT {
                // Real hardware does not deliver at once during an EOI broadcast; a guest that
                // mishandles a level interrupt makes slow progress instead of livelocking.
                *count = 0;
                EoiOutcome::Deferred
            } else {
                EoiOutcome::Redelivered(self.service(pin, false, env))
            }
        } else {
            *count = 0;
            EoiOutcome::Done
        }
    }

    /// Both steps of an EOI when the notifiers do not re-enter the IOAPIC: `notify(pin)` runs
    /// between them for each pin with this vector. Returns whether a deferred injection is
    /// needed ([`EoiOutcome::Deferred`] for some pin).
    pub fn update_eoi(
        &mut self,
        vcpu_id: u32,
        vector: u8,
        level_eoi: bool,
        directed_eoi: bool,
        env: &mut dyn IoapicEnv,
        notify: &mut dyn FnMut(u8),
    ) -> bool {
        self.eoi_begin(vcpu_id, vector);
        let mut deferred = false;
        for pin in 0..NUM_PINS {
            // As upstream, each entry's vector is looked at when the loop reaches it.
            if self.redirtbl[pin].vector() == vector {
                notify(pin as u8);
                deferred |= self.eoi_pin(pin, level_eoi, directed_eoi, env) == EoiOutcome::Deferred;
            }
        }
        deferred
    }

    /// Upstream `kvm_ioapic_eoi_inject_work`: delivers every asserted level-triggered pin that
    /// is not awaiting EOI (after an EOI storm's delay).
    pub fn inject_pending_level(&mut self, env: &mut dyn IoapicEnv) {
        for pin in 0..NUM_PINS {
            let e = self.redirtbl[pin];
            if e.level_triggered() && self.irr & (1 << pin) != 0 && !e.remote_irr() {
                self.service(pin, false, env);
            }
        }
    }

    /// `KVM_GET_IRQCHIP` for chip 2 (upstream `kvm_get_ioapic`): the registers; delivered edge
    /// interrupts are not reported in `irr`.
    pub fn get_state(&self) -> KvmIoapicState {
        let mut redirtbl = [0; NUM_PINS];
        for (d, e) in redirtbl.iter_mut().zip(self.redirtbl.iter()) {
            *d = e.0;
        }
        KvmIoapicState {
            base_address: self.base_address,
            ioregsel: self.ioregsel,
            id: self.id,
            irr: self.irr & !self.irr_delivered,
            pad: self.pad,
            redirtbl,
        }
    }

    /// `KVM_SET_IRQCHIP` for chip 2 (upstream `kvm_set_ioapic`): takes the registers as given,
    /// then asserts each pin set in `state.irr` once (delivering what is unmasked, the RTC with
    /// tracking), and rebuilds the RTC tracker from the vCPUs' IRR/ISR
    /// ([`IoapicEnv::rtc_scan`]). The module must then request an EOI-exit rescan on every
    /// vCPU. Line levels per source are kept, as upstream.
    pub fn set_state(&mut self, state: &KvmIoapicState, env: &mut dyn IoapicEnv) {
        self.base_address = state.base_address;
        self.ioregsel = state.ioregsel;
        self.id = state.id;
        self.pad = state.pad;
        for (e, s) in self.redirtbl.iter_mut().zip(state.redirtbl.iter()) {
            *e = RedirEntry(*s);
        }
        self.irr = 0;
        self.irr_delivered = 0;
        // kvm_ioapic_inject_all
        self.rtc_reset();
        for pin in 0..NUM_PINS {
            if state.irr & (1 << pin) != 0 {
                self.set_irq_level(pin, true, true, env);
            }
        }
        self.rtc_restore_all(env);
    }
}
