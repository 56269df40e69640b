// SPDX-License-Identifier: GPL-2.0-only
//! The 8259A PIC master/slave pair (upstream `arch/x86/kvm/i8259.c`, Linux 6.12): ICW1-4,
//! OCW1-3 (IMR, specific/non-specific/rotating EOI, priority rotation, poll, IRR/ISR reads),
//! the ELCR (ports 0x4d0/0x4d1), edge/level inputs with per-source line levels, the cascade on
//! the master's IR2, special fully nested and automatic-EOI modes, the INTA cycle
//! ([`Pic::read_irq`], spurious IRQ 7 / 15), the output line to the BSP's LINT0 and
//! `KVM_GET/SET_IRQCHIP` for chips 0 and 1.
//!
//! Concurrency: plain data under the module's PIC spinlock. What upstream does after dropping
//! the lock (ack notifiers for EOIed pins, mask notifiers, waking the vCPU that takes ExtINT)
//! accumulates in the model and comes out of [`Pic::take_effects`]; the module calls it before
//! unlocking and acts on it after. Upstream runs the ack notifiers in the middle of the
//! operation with the lock dropped; here they run at its end, which only differs when a
//! notifier changes a line of the same PIC (the irqfd resampler de-asserting a level line),
//! and then only in the output line being raised once more before the de-assertion.
//!
//! Special mask mode is stored but has no effect, and ICW1's single-mode and level-triggered
//! bits are ignored, as upstream.

#[cfg(test)]
mod tests;
pub mod uapi;

use uapi::KvmPicState;

/// Pins of the pair: master 0-7, slave 8-15 (`PIC_NUM_PINS`).
pub const NUM_PINS: usize = 16;
/// The ELCR bits that can be set on the master (IRQ 0, 1 and 2 are edge-only).
pub const MASTER_ELCR_MASK: u8 = 0xf8;
/// The ELCR bits that can be set on the slave (IRQ 8 and 13 are edge-only).
pub const SLAVE_ELCR_MASK: u8 = 0xde;

/// What the module must do after releasing the PIC lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PicEffects {
    /// Pins (bit n = pin n, 0-15) whose in-service bit was cleared: run the ack notifiers of
    /// the GSI mapped to (PIC chip of the pin, pin) (upstream `kvm_notify_acked_irq`).
    pub acked: u16,
    /// Pins whose IMR bit changed: fire the mask notifiers with the new mask state
    /// ([`Pic::masked`]).
    pub mask_changed: u16,
    /// The output may have risen: kick the vCPU that accepts PIC interrupts (upstream
    /// `wakeup_needed`).
    pub wakeup: bool,
}

/// The PIC pair.
#[derive(Clone, Debug)]
pub struct Pic {
    pics: [KvmPicState; 2],
    irq_states: [u64; NUM_PINS],
    output: bool,
    fx: PicEffects,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// The pair as `KVM_CREATE_IRQCHIP` makes it (`kvm_create_pic`): everything zero but the
    /// ELCR masks.
    pub fn new() -> Self {
        let mut pics = [KvmPicState::default(); 2];
        pics[0].elcr_mask = MASTER_ELCR_MASK;
        pics[1].elcr_mask = SLAVE_ELCR_MASK;
        Self {
            pics,
            irq_states: [0; NUM_PINS],
            output: false,
            fx: PicEffects::default(),
        }
    }

    /// Returns and clears what accumulated for the module to do outside the lock.
    pub fn take_effects(&mut self) -> PicEffects {
        core::mem::take(&mut self.fx)
    }

    /// The output line (INTR to the BSP's LINT0): an unmasked request of higher priority than
    /// what is in service (upstream `s->output`, `kvm_cpu_has_extint`).
    pub fn output(&self) -> bool {
        self.output
    }

    /// Whether `pin` (0-15) is masked in its chip's IMR.
    pub fn masked(&self, pin: usize) -> bool {
        self.pics
            .get(pin / 8)
            .is_some_and(|c| c.imr & (1 << (pin % 8)) != 0)
    }

    fn clear_isr(&mut self, chip: usize, irq: usize) {
        self.pics[chip & 1].isr &= !(1 << (irq & 7));
        self.fx.acked |= 1 << ((chip & 1) * 8 + (irq & 7));
    }

    /// Upstream `pic_set_irq1`: the edge/level logic of one input; -1 if masked, 0 if the
    /// request was already pending (coalesced), 1 otherwise.
    fn set_irq1(&mut self, chip: usize, irq: usize, level: bool) -> i32 {
        let s = &mut self.pics[chip & 1];
        let mask = 1u8 << (irq & 7);
        let mut ret = 1;
        if s.elcr & mask != 0 {
            if level {
                ret = i32::from(s.irr & mask == 0);
                s.irr |= mask;
                s.last_irr |= mask;
            } else {
                s.irr &= !mask;
                s.last_irr &= !mask;
            }
        } else if level {
            if s.last_irr & mask == 0 {
                ret = i32::from(s.irr & mask == 0);
                s.irr |= mask;
            }
            s.last_irr |= mask;
        } else {
            s.last_irr &= !mask;
        }
        if s.imr & mask != 0 {
            -1
        } else {
            ret
        }
    }

    /// Upstream `get_priority`: the highest priority in `mask` (0 = highest), 8 if none.
    fn priority(s: &KvmPicState, mask: u8) -> u32 {
        if mask == 0 {
            return 8;
        }
        let mut p = 0;
        while mask & (1 << ((p + u32::from(s.priority_add)) & 7)) == 0 {
            p += 1;
        }
        p
    }

    /// Upstream `pic_get_irq`: the IR line this chip would raise, if any.
    fn get_irq(&self, chip: usize) -> Option<usize> {
        let s = &self.pics[chip & 1];
        let priority = Self::priority(s, s.irr & !s.imr);
        if priority == 8 {
            return None;
        }
        // In special fully nested mode the master does not count the slave's in-service
        // request against the slave's further requests.
        let mut isr = s.isr;
        if s.special_fully_nested_mode != 0 && chip == 0 {
            isr &= !(1 << 2);
        }
        if priority < Self::priority(s, isr) {
            Some(((priority + u32::from(s.priority_add)) & 7) as usize)
        } else {
            None
        }
    }

    /// Upstream `pic_update_irq`: the slave's request drives the master's IR2 (an edge), and
    /// the master's request drives the output.
    fn update_irq(&mut self) {
        if self.get_irq(1).is_some() {
            self.set_irq1(0, 2, true);
            self.set_irq1(0, 2, false);
        }
        let level = self.get_irq(0).is_some();
        if !self.output {
            self.fx.wakeup = true;
        }
        self.output = level;
    }

    /// Upstream `kvm_pic_update_irq` (after `KVM_SET_IRQCHIP`): re-evaluates the output.
    pub fn update(&mut self) {
        self.update_irq();
    }

    /// Upstream `kvm_pic_set_irq`: source `source_id` drives pin `pin` (0-15) to `level`; the
    /// line is asserted while any source holds it. Returns -1 if masked (or the pin or source
    /// is out of range), 0 if coalesced, 1 otherwise.
    pub fn set_irq(&mut self, pin: usize, source_id: u32, level: bool) -> i32 {
        if source_id >= crate::ioapic::MAX_IRQ_SOURCE_IDS {
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
        let ret = self.set_irq1(pin >> 3, pin & 7, line);
        self.update_irq();
        ret
    }

    /// Upstream `kvm_pic_clear_all`: `source_id` lets go of every line (not re-evaluated).
    pub fn clear_source(&mut self, source_id: u32) {
        if source_id < crate::ioapic::MAX_IRQ_SOURCE_IDS {
            for s in &mut self.irq_states {
                *s &= !(1 << source_id);
            }
        }
    }

    /// Upstream `pic_intack`.
    fn intack(&mut self, chip: usize, irq: usize) {
        let s = &mut self.pics[chip & 1];
        let bit = 1u8 << (irq & 7);
        s.isr |= bit;
        // A level-sensitive request stays in the IRR.
        if s.elcr & bit == 0 {
            s.irr &= !bit;
        }
        if s.auto_eoi != 0 {
            if s.rotate_on_auto_eoi != 0 {
                s.priority_add = ((irq + 1) & 7) as u8;
            }
            self.clear_isr(chip, irq);
        }
    }

    /// The INTA cycle (upstream `kvm_pic_read_irq`, for ExtINT delivery): acknowledges the
    /// highest-priority request and returns its vector; with none, the spurious IRQ 7 of the
    /// master (or 15 via the slave when the master's IR2 has no slave request behind it).
    pub fn read_irq(&mut self) -> u8 {
        self.output = false;
        let intno = match self.get_irq(0) {
            Some(irq) => {
                self.intack(0, irq);
                if irq == 2 {
                    let irq2 = match self.get_irq(1) {
                        Some(i) => {
                            self.intack(1, i);
                            i
                        }
                        None => 7,
                    };
                    self.pics[1].irq_base.wrapping_add(irq2 as u8)
                } else {
                    self.pics[0].irq_base.wrapping_add(irq as u8)
                }
            }
            None => self.pics[0].irq_base.wrapping_add(7),
        };
        self.update_irq();
        intno
    }

    /// Upstream `kvm_pic_reset` (ICW1): `accept_pic_intr` is whether any vCPU's local APIC
    /// takes PIC interrupts (`kvm_apic_accept_pic_intr`).
    fn reset_chip(&mut self, chip: usize, accept_pic_intr: bool) {
        let s = &mut self.pics[chip & 1];
        let edge_irr = s.irr & !s.elcr;
        s.last_irr = 0;
        s.irr &= s.elcr;
        s.imr = 0;
        s.priority_add = 0;
        s.special_mask = 0;
        s.read_reg_select = 0;
        if s.init4 == 0 {
            s.special_fully_nested_mode = 0;
            s.auto_eoi = 0;
        }
        s.init_state = 1;
        if accept_pic_intr {
            for irq in 0..8 {
                if edge_irr & (1 << irq) != 0 {
                    self.clear_isr(chip, irq);
                }
            }
        }
    }

    /// A byte written to a PIC port (upstream `pic_ioport_write`): `chip` 0 (0x20/0x21) or 1
    /// (0xa0/0xa1), `a0` the port's low bit. `accept_pic_intr` as for ICW1 (see
    /// [`Self::ioport_write`]).
    fn chip_write(&mut self, chip: usize, a0: bool, val: u8, accept_pic_intr: bool) {
        let chip = chip & 1;
        if !a0 {
            if val & 0x10 != 0 {
                // ICW1
                self.pics[chip].init4 = val & 1;
                self.reset_chip(chip, accept_pic_intr);
            } else if val & 0x08 != 0 {
                // OCW3
                let s = &mut self.pics[chip];
                if val & 0x04 != 0 {
                    s.poll = 1;
                }
                if val & 0x02 != 0 {
                    s.read_reg_select = val & 1;
                }
                if val & 0x40 != 0 {
                    s.special_mask = (val >> 5) & 1;
                }
            } else {
                self.ocw2(chip, val);
            }
            return;
        }
        let s = &mut self.pics[chip];
        match s.init_state {
            0 => {
                // OCW1
                let diff = s.imr ^ val;
                s.imr = val;
                self.fx.mask_changed |= u16::from(diff) << (chip * 8);
                self.update_irq();
            }
            1 => {
                s.irq_base = val & 0xf8;
                s.init_state = 2;
            }
            2 => s.init_state = if s.init4 != 0 { 3 } else { 0 },
            3 => {
                s.special_fully_nested_mode = (val >> 4) & 1;
                s.auto_eoi = (val >> 1) & 1;
                s.init_state = 0;
            }
            // Only reachable through KVM_SET_IRQCHIP; upstream does nothing either.
            _ => {}
        }
    }

    /// OCW2: EOIs and rotation.
    fn ocw2(&mut self, chip: usize, val: u8) {
        let cmd = val >> 5;
        match cmd {
            0 | 4 => self.pics[chip].rotate_on_auto_eoi = cmd >> 2,
            1 | 5 => {
                let s = &self.pics[chip];
                let priority = Self::priority(s, s.isr);
                if priority != 8 {
                    let irq = ((priority + u32::from(s.priority_add)) & 7) as usize;
                    if cmd == 5 {
                        self.pics[chip].priority_add = ((irq + 1) & 7) as u8;
                    }
                    self.clear_isr(chip, irq);
                    self.update_irq();
                }
            }
            3 => {
                self.clear_isr(chip, usize::from(val & 7));
                self.update_irq();
            }
            6 => {
                self.pics[chip].priority_add = val.wrapping_add(1) & 7;
                self.update_irq();
            }
            7 => {
                let irq = usize::from(val & 7);
                self.pics[chip].priority_add = ((irq + 1) & 7) as u8;
                self.clear_isr(chip, irq);
                self.update_irq();
            }
            _ => {}
        }
    }

    /// Upstream `pic_poll_read`.
    fn poll_read(&mut self, chip: usize) -> u8 {
        match self.get_irq(chip) {
            Some(ret) => {
                if chip == 1 {
                    self.pics[0].isr &= !(1 << 2);
                    self.pics[0].irr &= !(1 << 2);
                }
                self.pics[chip].irr &= !(1 << ret);
                self.clear_isr(chip, ret);
                if chip == 1 || ret != 2 {
                    self.update_irq();
                }
                ret as u8
            }
            None => {
                self.update_irq();
                0x07
            }
        }
    }

    /// Upstream `pic_ioport_read`.
    fn chip_read(&mut self, chip: usize, a0: bool) -> u8 {
        let chip = chip & 1;
        if self.pics[chip].poll != 0 {
            let r = self.poll_read(chip);
            self.pics[chip].poll = 0;
            return r;
        }
        let s = &self.pics[chip];
        if a0 {
            s.imr
        } else if s.read_reg_select != 0 {
            s.isr
        } else {
            s.irr
        }
    }

    /// Whether the PIC device claims `port` (0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1).
    pub fn claims_port(port: u16) -> bool {
        matches!(port, 0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1)
    }

    /// A guest `IN` of `len` bytes from `port` (upstream `picdev_read`): `None` if the port is
    /// not the PIC's; accesses wider than a byte read 0.
    pub fn ioport_read(&mut self, port: u16, len: usize) -> Option<u8> {
        if !Self::claims_port(port) {
            return None;
        }
        if len != 1 {
            return Some(0);
        }
        Some(match port {
            0x4d0 | 0x4d1 => self.pics[usize::from(port & 1)].elcr,
            _ => self.chip_read(usize::from(port >> 7), port & 1 != 0),
        })
    }

    /// A guest `OUT` of `len` bytes to `port` (upstream `picdev_write`): `false` if the port is
    /// not the PIC's; writes wider than a byte are ignored. `accept_pic_intr`: whether any
    /// vCPU's local APIC takes PIC interrupts (only ICW1 looks at it).
    pub fn ioport_write(&mut self, port: u16, len: usize, val: u8, accept_pic_intr: bool) -> bool {
        if !Self::claims_port(port) {
            return false;
        }
        if len != 1 {
            return true;
        }
        match port {
            0x4d0 | 0x4d1 => {
                let s = &mut self.pics[usize::from(port & 1)];
                s.elcr = val & s.elcr_mask;
            }
            _ => self.chip_write(usize::from(port >> 7), port & 1 != 0, val, accept_pic_intr),
        }
        true
    }

    /// `KVM_GET_IRQCHIP` for chip 0 (master) or 1 (slave); `None` for other chips.
    pub fn get_state(&self, chip: u32) -> Option<KvmPicState> {
        self.pics.get(chip as usize).copied()
    }

    /// `KVM_SET_IRQCHIP` for chip 0 or 1: takes the state as given (the ELCR mask included,
    /// as upstream), then the output is re-evaluated. `false` for other chips.
    pub fn set_state(&mut self, chip: u32, state: &KvmPicState) -> bool {
        let Some(s) = self.pics.get_mut(chip as usize) else {
            return false;
        };
        *s = *state;
        self.update_irq();
        true
    }
}
