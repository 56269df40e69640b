// SPDX-License-Identifier: GPL-2.0-only
//! The measurement leaves: TDH.MR.EXTEND hashes TD memory into MRTD, TDH.MR.FINALIZE closes it and
//! makes the TD runnable (`tdh_mr_extend.c`, `tdh_mr_finalize.c`). The SHA-384 itself, and the
//! block format, are [`super::measure`]'s.

use super::locks::Mode;
use super::measure::Sha512Compress;
use super::measure::{mr_block, sha384_finish};
use super::mem::words;
use super::mem::PhysMem;
use super::sept::{details, hpa, is_leaf, state_of, St, R, TDEL, W, X};
use super::state::TdState;
use super::SwTdxModule;
use crate::abi::{leaf, op_state, status, SeptLevel};
use crate::error::Operand;
use crate::seamcall::SeamArgs;
use crate::swmod::leaf_status::{LeafResult, Status};
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use mmu::Pfn;

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    pub(super) fn mr_extend(&self, a: &mut SeamArgs) -> LeafResult {
        let (rcx, rdx) = (a.rcx, a.rdx);
        a.rcx = 0;
        a.rdx = 0;
        let t = self.lock_tdr(rdx, Operand::RDX, Mode::Exclusive)?;
        let td = t.td;
        self.check_state(td, None, leaf::MR_EXTEND)?;
        if rcx & 0xff != 0 || rcx >> (td.gpaw.load(Acquire) - 1) != 0 {
            return Err(Status::operand_invalid(Operand::RCX));
        }
        // Walk to whatever leaf maps the GPA.
        let Some(w) = self.walk(td, rcx, SeptLevel(0)) else {
            return Err(Status::with_operand(
                status::EPT_ENTRY_NOT_PRESENT,
                Operand::RCX,
            ));
        };
        let v = w.entry.load(Acquire) & !TDEL;
        let s = state_of(v);
        // SEPT_WALK_TO_LEAF fails on a non-leaf or a leaf without R/W/Xs (PENDING, BLOCKED,
        // PENDING_BLOCKED): reported with the entry where the walk stopped.
        if !is_leaf(s) || v & (R | W | X) == 0 {
            details(a, v, w.level);
            return Err(Status::with_operand(
                status::EPT_ENTRY_NOT_PRESENT,
                Operand::RCX,
            ));
        }
        // A present leaf that is not MAPPED (none reachable here): bare status.
        if s != St::Mapped {
            return Err(Status::new(status::EPT_ENTRY_NOT_PRESENT));
        }
        let offset = rcx & ((w.level.pages() << 12) - 1);
        let page = hpa(v).add(offset >> 12);
        let Some(p) = words(&self.mem, page) else {
            return Err(Status::new(status::EPT_ENTRY_NOT_PRESENT));
        };
        self.measure(td, &mr_block(b"MR.EXTEND", rcx));
        let first = ((offset & 0xfff) / 8) as usize;
        for half in 0..2 {
            let mut block = [0u8; 128];
            for i in 0..16 {
                let w = p.0[first + half * 16 + i].load(Relaxed);
                block[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
            }
            self.measure(td, &block);
        }
        Ok(())
    }

    pub(super) fn mr_finalize(&self, a: &mut SeamArgs) -> LeafResult {
        let t = self.lock_tdr(a.rcx, Operand::RCX, Mode::Exclusive)?;
        let td = t.td;
        self.check_state(td, None, leaf::MR_FINALIZE)?;
        if td.num_vcpus.load(Acquire) == 0 {
            return Err(Status::new(status::NO_VCPUS));
        }
        let mut state = [0u64; 8];
        for (s, w) in state.iter_mut().zip(td.sha_state.iter()) {
            *s = w.load(Relaxed);
        }
        let mrtd = sha384_finish(&self.hash, state, td.sha_bytes.load(Relaxed), &[]);
        for (i, w) in td.mrtd.iter().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&mrtd[i * 8..i * 8 + 8]);
            w.store(u64::from_be_bytes(b), Relaxed);
        }
        td.finalized.store(1, Release);
        Self::set_op_state(td, op_state::RUNNABLE);
        Ok(())
    }

    /// Hashes one 128-byte block into the TD's MRTD. Caller holds the TDR exclusively.
    pub(crate) fn measure(&self, td: &TdState, block: &[u8; 128]) {
        let mut state = [0u64; 8];
        for (s, w) in state.iter_mut().zip(td.sha_state.iter()) {
            *s = w.load(Relaxed);
        }
        self.hash.compress(&mut state, block);
        for (s, w) in state.iter().zip(td.sha_state.iter()) {
            w.store(*s, Relaxed);
        }
        td.sha_bytes.fetch_add(128, Relaxed);
    }

    /// MRTD of a finalised TD (48 bytes), or `None` before MR.FINALIZE (inspection API).
    pub fn mrtd(&self, tdr: Pfn) -> Option<[u8; 48]> {
        let td = self.td_state(tdr)?;
        if td.finalized.load(Acquire) == 0 {
            return None;
        }
        let mut out = [0u8; 48];
        for (i, w) in td.mrtd.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.load(Relaxed).to_be_bytes());
        }
        Some(out)
    }
}
