// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_GET_LAPIC` / `KVM_SET_LAPIC`: the register page as userspace sees it (upstream
//! `kvm_apic_get_state`, `kvm_apic_set_state`, `kvm_apic_state_fixup`).

use super::dest::x2apic_ldr;
use super::regs::*;
use super::{Effects, Lapic, Now};

/// `KVM_APIC_REG_SIZE`.
pub const KVM_APIC_REG_SIZE: usize = 0x400;

/// Upstream `struct kvm_lapic_state { char regs[KVM_APIC_REG_SIZE]; }`: the first 1 KiB of
/// the register page, registers little-endian at their xAPIC offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct LapicState {
    /// The registers.
    pub regs: [u8; KVM_APIC_REG_SIZE],
}

const _: () = assert!(core::mem::size_of::<LapicState>() == 1024);
const _: () = assert!(core::mem::align_of::<LapicState>() == 1);

impl Default for LapicState {
    fn default() -> Self {
        LapicState {
            regs: [0; KVM_APIC_REG_SIZE],
        }
    }
}

impl LapicState {
    /// The 32-bit register at `offset` (0 outside the page).
    pub fn reg(&self, offset: u32) -> u32 {
        let o = offset as usize;
        match self.regs.get(o..o.wrapping_add(4)) {
            Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
            _ => 0,
        }
    }

    /// Sets the 32-bit register at `offset` (ignored outside the page).
    pub fn set_reg(&mut self, offset: u32, val: u32) {
        let o = offset as usize;
        if let Some(dst) = self.regs.get_mut(o..o.wrapping_add(4)) {
            dst.copy_from_slice(&val.to_le_bytes());
        }
    }
}

/// `KVM_SET_LAPIC` refused: the x2APIC ID in the state is not the vCPU's while userspace
/// uses 32-bit x2APIC IDs (`-EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateError;

impl Lapic {
    /// `kvm_apic_state_fixup`: the x2APIC ID format (32-bit with `KVM_X2APIC_API_USE_32BIT_IDS`,
    /// else the legacy ID << 24), the LDR derived from the ID on SET. The ICR is kept split in
    /// ICR/ICR2 as on SVM (`x2apic_icr_is_split`), so it needs no fix-up.
    fn state_fixup(
        &self,
        s: &mut LapicState,
        set: bool,
        x2apic_format: bool,
    ) -> Result<(), StateError> {
        if !self.x2apic_mode() {
            return Ok(());
        }
        let id = self.vcpu_id;
        if x2apic_format {
            if s.reg(APIC_ID) != id {
                return Err(StateError);
            }
        } else if set {
            s.set_reg(APIC_ID, id);
        } else {
            s.set_reg(APIC_ID, id << 24);
        }
        if set {
            s.set_reg(APIC_LDR, x2apic_ldr(id));
        }
        Ok(())
    }

    /// `KVM_GET_LAPIC` (`kvm_apic_get_state`): the page with TMCCT computed for `now` (0 in
    /// TSC-deadline mode); `x2apic_format` is `KVM_X2APIC_API_USE_32BIT_IDS`. Fails only when
    /// the x2APIC ID register does not hold the vCPU ID with 32-bit IDs, which KVM's own
    /// register writes never allow.
    pub fn get_state(&self, now: &Now, x2apic_format: bool) -> Result<LapicState, StateError> {
        let mut s = LapicState::default();
        for (i, w) in self.regs.iter().enumerate() {
            s.set_reg((i * 4) as u32, *w);
        }
        s.set_reg(APIC_TMCCT, self.read_tmcct(now.ns));
        self.state_fixup(&mut s, false, x2apic_format)?;
        Ok(s)
    }

    /// `KVM_SET_LAPIC` (`kvm_apic_set_state`). SPIV is applied first, even when the state is
    /// then refused, as upstream; the timer restarts from the state's TMCCT (see
    /// `start_timer_from`); the version register is recomputed.
    pub fn set_state(
        &mut self,
        s: &LapicState,
        now: &Now,
        x2apic_format: bool,
    ) -> Result<Effects, StateError> {
        let mut fx = Effects {
            dest_changed: true,
            recheck: true,
            ..Effects::default()
        };
        self.set_spiv(s.reg(APIC_SPIV));
        let mut s = *s;
        self.state_fixup(&mut s, true, x2apic_format)?;
        for (i, w) in self.regs.iter_mut().enumerate() {
            *w = s.reg((i * 4) as u32);
        }
        self.set_version();
        self.update_ppr();
        self.cancel_timer(&mut fx);
        self.update_lvtt(&mut fx);
        self.manage_nmi_watchdog(&mut fx);
        self.update_divide_count();
        self.start_timer_from(APIC_TMCCT, now, &mut fx);
        self.set_reg(APIC_TMCCT, 0);
        Ok(fx)
    }
}
