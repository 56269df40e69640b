// SPDX-License-Identifier: GPL-2.0-only
//! The metadata leaves: TDH.MNG.RD/WR (TD scope), TDH.VP.RD/WR (vCPU scope) and TDH.SYS.RD
//! (module scope), `tdh_mng_rd_wr.c`, `tdh_vp_rd_wr.c` and `tdh_sys_rd.c`.
//!
//! The TD and VP leaves check their operands and state as their families do, then share one
//! field access ([`MdOp`]); which fields exist and how they may be read and written is
//! [`super::fields`]'.

use super::fields;
use super::locks::Mode;
use super::measure::Sha512Compress;
use super::mem::PhysMem;
use super::state::TdState;
use super::vp::tdvps_mappable;
use super::SwTdxModule;
use crate::abi::{leaf, md, status, vcpu_state};
use crate::error::Operand;
use crate::seamcall::SeamArgs;
use crate::swmod::leaf_status::{LeafResult, Status};
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

/// `ATTRIBUTES.DEBUG`: the host may read (and write) more metadata of a DEBUG TD.
const ATTR_DEBUG: u64 = 1;

/// What tells the TD scope of the metadata leaves (TDH.MNG.RD/WR) from the VP scope
/// (TDH.VP.RD/WR) once the operand and state checks are done.
struct MdScope {
    /// The context code the id's own is replaced by.
    context: u64,
    /// The field table of the scope, in Intel's order.
    table: &'static [fields::Entry],
    /// [`fields::write`]'s `zero_full_write`: `md_vp_write_element` has it,
    /// `md_td_write_element` does not.
    zero_full_write: bool,
}

const TD_SCOPE: MdScope = MdScope {
    context: md::CONTEXT_TD,
    table: &fields::TD,
    zero_full_write: false,
};

const VP_SCOPE: MdScope = MdScope {
    context: md::CONTEXT_VP,
    table: &fields::VP,
    zero_full_write: true,
};

/// The operands of a metadata read or write leaf (TDH.MNG.RD/WR, TDH.VP.RD/WR).
struct MdOp {
    /// The field id as the host gave it (RDX).
    field: u64,
    /// The value (R8) and the write mask (R9) of a write.
    value: u64,
    mask: u64,
    write: bool,
    version: u64,
}

impl MdOp {
    /// Takes the operands as `tdh_mng_rd_wr.c` and `tdh_vp_rd_wr.c` both do before any check:
    /// R8 = 0 first, and at version 1 of a read RDX = `MD_FIELD_ID_NA`; version > 1 →
    /// `OPERAND_INVALID|RAX` (the writes come with version 0 only).
    fn take(a: &mut SeamArgs, write: bool, version: u64) -> LeafResult<Self> {
        let field = if !write && version > 0 {
            // The input id; RDX is an output (MD_FIELD_ID_NA until a next field is known).
            core::mem::replace(&mut a.rdx, md::FIELD_ID_NA)
        } else {
            a.rdx
        };
        let op = MdOp {
            field,
            value: a.r8,
            mask: a.r9,
            write,
            version,
        };
        a.r8 = 0;
        if version > 1 {
            return Err(Status::operand_invalid(Operand::RAX));
        }
        Ok(op)
    }

    /// The field id part, after the leaf's own operand and state checks: the context code of
    /// the id is replaced by the scope's → (read, version 1) the null id answers the first
    /// readable field in RDX with `TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT` →
    /// `md_check_as_single_element_id` → the element: unknown → `FIELD_ID_INCORRECT`; a read
    /// with read mask 0 → `NOT_READABLE`; a write as [`fields::write`] says, then `store` of
    /// the new value. Success: R8 = the value (read) or the old value (write); version-1
    /// reads: RDX = the next readable element. Version 0 leaves RDX alone.
    ///
    /// `value_of` gives an element's current value (entry, element number); `store` keeps a
    /// written one or refuses with a status.
    fn access(
        &self,
        a: &mut SeamArgs,
        scope: &MdScope,
        td: &TdState,
        value_of: impl FnOnce(&fields::Entry, u64) -> LeafResult<u64>,
        store: impl FnOnce(&fields::Entry, u64) -> LeafResult,
    ) -> LeafResult {
        let debug = td.attributes.load(Relaxed) & ATTR_DEBUG != 0;
        let field = md::with_context(self.field, scope.context);
        if !self.write && self.version > 0 && fields::is_null(field) {
            a.rdx = fields::next_readable(scope.table, field, debug);
            return Err(Status::new(status::METADATA_FIRST_FIELD_ID_IN_CONTEXT));
        }
        fields::check_single_element(field)?;
        let Some((i, elem)) = fields::find(scope.table, field) else {
            return Err(Status::new(status::METADATA_FIELD_ID_INCORRECT));
        };
        let e = &scope.table[i];
        let current = e.fit(value_of(e, elem)?);
        if self.write {
            let zero_full_write = scope.zero_full_write;
            let (new, old) =
                fields::write(e, debug, current, self.value, self.mask, zero_full_write)?;
            store(e, new)?;
            a.r8 = old;
            return Ok(());
        }
        let (rd, _) = e.masks(debug);
        if rd == 0 {
            return Err(Status::new(status::METADATA_FIELD_NOT_READABLE));
        }
        a.r8 = current & rd;
        if self.version > 0 {
            a.rdx = fields::next_readable(scope.table, field, debug);
        }
        Ok(())
    }
}

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    /// TDH.MNG.RD (version 0 or 1) and TDH.MNG.WR (`tdh_mng_rd_wr.c`).
    ///
    /// The operands are taken as [`MdOp::take`] says. Then: TDR(RCX, shared) → state(shared)
    /// → the field id in the TD context ([`MdOp::access`]).
    fn mng_rdwr(&self, a: &mut SeamArgs, write: bool, version: u64) -> LeafResult {
        let op = MdOp::take(a, write, version)?;
        let t = self.lock_tdr(a.rcx, Operand::RCX, Mode::Shared)?;
        let leaf_no = if write { leaf::MNG_WR } else { leaf::MNG_RD };
        let _op = self.check_state(t.td, Some(Mode::Shared), leaf_no)?;
        let td = t.td;
        op.access(
            a,
            &TD_SCOPE,
            td,
            |e, elem| self.td_value(td, e.value, elem),
            // No TD-scope field the software module has is host-writable (Intel's write masks
            // are all 0, see `fields::tests::no_td_scope_entry_is_host_writable`): `write`
            // refuses with NOT_WRITABLE before anything would be stored, and so would this.
            |_, _| Err(Status::new(status::METADATA_FIELD_NOT_WRITABLE)),
        )
    }

    pub(super) fn mng_rd(&self, a: &mut SeamArgs, version: u64) -> LeafResult {
        self.mng_rdwr(a, false, version)
    }

    pub(super) fn mng_wr(&self, a: &mut SeamArgs) -> LeafResult {
        self.mng_rdwr(a, true, 0)
    }

    /// Element `elem` of a TD-scope field; CPUID_VALUES of a leaf the module does not
    /// virtualize → `FIELD_ID_INCORRECT`.
    fn td_value(&self, td: &TdState, v: fields::Value, elem: u64) -> LeafResult<u64> {
        use fields::Value as V;
        Ok(match v {
            V::Hkid => td.hkid.load(Relaxed),
            V::NumVcpus => td.num_vcpus.load(Relaxed),
            V::NumAssocVcpus => td.num_assoc_vcpus.load(Relaxed),
            V::OpState => Self::op_state_of(td) as u64,
            V::Attributes => td.attributes.load(Relaxed),
            V::Xfam => td.xfam.load(Relaxed),
            V::MaxVcpus => td.max_vcpus.load(Relaxed),
            V::TdEpoch => td.td_epoch.load(Relaxed),
            // The words hold the digest big-endian; the element is 8 digest bytes read as a
            // little-endian u64, as they lie in the TDCS.
            V::Mrtd => td.mrtd[elem as usize % 6].load(Relaxed).swap_bytes(),
            V::CpuidValues => {
                let Some((i, reg_pair)) = super::cpuid::lookup_of_field_code(elem) else {
                    return Err(Status::new(status::METADATA_FIELD_ID_INCORRECT));
                };
                td.cpuid
                    .get(2 * i + reg_pair as usize)
                    .map_or(0, |w| w.load(Relaxed))
            }
            V::Hidden | V::Rtmr | V::Const(_) | V::Line(_) | V::Unmodelled => 0,
            V::GuestRcx | V::VcpuState | V::VcpuIndex | V::NumTdvpsPages => 0,
            V::CpuidConfigLeaves | V::CpuidConfigBits => 0,
        })
    }

    /// TDH.VP.RD (version 0 or 1) and TDH.VP.WR (`tdh_vp_rd_wr.c`).
    ///
    /// The operands are taken as [`MdOp::take`] says. Then: TDVPR(RCX, shared) → implicit TDR
    /// shared (`BUSY|TDR`) → state(shared) → TDVPS incomplete → `TDCX_NUM_INCORRECT` → vCPU
    /// state not READY → `VCPU_STATE_INCORRECT` (`| state` in 2.0) → the vCPU is associated with this LP
    /// (`check_and_associate_vcpu`: `num_assoc_vcpus++` if it was not) → the field id in the
    /// VP context ([`MdOp::access`]).
    fn vp_rdwr(&self, a: &mut SeamArgs, write: bool, version: u64) -> LeafResult {
        let op = MdOp::take(a, write, version)?;
        let leaf_no = if write { leaf::VP_WR } else { leaf::VP_RD };
        let vp = self.vp_prologue(a.rcx, Operand::RCX, Mode::Shared, Mode::Shared, leaf_no)?;
        let (v, td) = (vp.v, vp.t.td);
        if !tdvps_mappable(td, v) {
            return Err(Status::new(status::TDCX_NUM_INCORRECT));
        }
        // No DISABLED state in the software module: READY is the only state VP.RD/WR accept.
        let state = v.state.load(Acquire);
        if state != vcpu_state::READY as u64 {
            return Err(Status::with_detail(
                status::VCPU_STATE_INCORRECT,
                self.line.vcpu_state_operand(state),
            ));
        }
        if v.associated.compare_exchange(0, 1, AcqRel, Acquire).is_ok() {
            td.num_assoc_vcpus.fetch_add(1, AcqRel);
        }
        op.access(
            a,
            &VP_SCOPE,
            td,
            |e, _| {
                Ok(match e.value {
                    fields::Value::GuestRcx => v.guest_rcx.load(Relaxed),
                    fields::Value::VcpuState => state,
                    fields::Value::VcpuIndex => v.index.load(Relaxed),
                    fields::Value::NumTdvpsPages => v.num_tdvps_pages.load(Relaxed),
                    _ => 0,
                })
            },
            |e, new| {
                // Only guest RCX is host-writable (DEBUG TDs); the others have write masks of 0.
                if e.value == fields::Value::GuestRcx {
                    v.guest_rcx.store(new, Relaxed);
                }
                Ok(())
            },
        )
    }

    pub(super) fn vp_rd(&self, a: &mut SeamArgs, version: u64) -> LeafResult {
        self.vp_rdwr(a, false, version)
    }

    pub(super) fn vp_wr(&self, a: &mut SeamArgs) -> LeafResult {
        self.vp_rdwr(a, true, 0)
    }

    /// TDH.SYS.RD (`tdh_sys_rd.c`): RDX = `MD_FIELD_ID_NA` and R8 = 0 first → the context
    /// code of the id is replaced by SYS's → the null id answers the first readable field in
    /// RDX with `TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT` → `md_check_as_single_element_id` →
    /// the element in the line's copy of Intel's global table ([`fields::sys_table`]): no
    /// entry, or an entry whose value
    /// the software module does not have → `FIELD_ID_INCORRECT`. Success: R8 = the value,
    /// RDX = the next readable element in the table's order (`MD_FIELD_ID_NA` after the last).
    pub(super) fn sys_rd(&self, a: &mut SeamArgs) -> LeafResult {
        let field = md::with_context(a.rdx, md::CONTEXT_SYS);
        a.rdx = md::FIELD_ID_NA;
        a.r8 = 0;
        let table = fields::sys_table(self.line);
        if fields::is_null(field) {
            a.rdx = fields::next_readable(table, field, false);
            return Err(Status::new(status::METADATA_FIRST_FIELD_ID_IN_CONTEXT));
        }
        fields::check_single_element(field)?;
        let Some((i, elem)) = fields::find(table, field) else {
            return Err(Status::new(status::METADATA_FIELD_ID_INCORRECT));
        };
        let Some(e) = table.get(i) else {
            return Err(Status::new(status::METADATA_FIELD_ID_INCORRECT));
        };
        let (rd, _) = e.masks(false);
        if rd == 0 {
            return Err(Status::new(status::METADATA_FIELD_NOT_READABLE));
        }
        let value = match e.value {
            fields::Value::Const(v) => v,
            fields::Value::Line(v) => v.of(self.line),
            fields::Value::CpuidConfigLeaves => super::cpuid::config_leaf(elem),
            fields::Value::CpuidConfigBits => super::cpuid::config_value(elem / 2, elem % 2),
            _ => return Err(Status::new(status::METADATA_FIELD_ID_INCORRECT)),
        };
        a.r8 = e.fit(value) & rd;
        a.rdx = fields::next_readable(table, field, false);
        Ok(())
    }
}
