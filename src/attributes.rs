// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_SET_MEMORY_ATTRIBUTES` (upstream `kvm_vm_ioctl_set_mem_attributes` and
//! `kvm_vm_set_mem_attributes`, 6.12; the TDX series' zap filter of 6.16).
//!
//! A conversion zaps the side that loses the range, only where memslots are: setting PRIVATE
//! zaps the shared root, clearing it zaps the private mappings (for a TD the mirror root through
//! BLOCK/TRACK/REMOVE; the guest_memfd pages stay in their file). As upstream reserves the
//! xarray before changing anything, the map's room is made first: `ENOMEM` changes nothing.
//! A range that already has the attributes returns 0 without zapping. A TD's 2 MiB private
//! leaf that the range covers only in part is split (TDH.MEM.PAGE.DEMOTE) rather than zapped
//! whole, with the VM's split cache ([`crate::memslot::MemState::split`]).
//!
//! Locking: `slots_lock` (the VM's [`crate::memslot::Memslots`]) → the MMU lock.

use crate::mem_abi::KvmMemoryAttributes;
use crate::memslot::{err, has_private_mem};
use crate::vm::Vm;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
use memcore::uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE;
use mmu::tdp::ZapTarget;
use mmu::Gfn;

/// `KVM_SET_MEMORY_ATTRIBUTES` on `vm`.
pub(crate) fn set(vm: &Vm, arg: usize) -> Result<isize> {
    let a: KvmMemoryAttributes = UserSlice::new(arg, core::mem::size_of::<KvmMemoryAttributes>())
        .reader()
        .read()?;
    let req = memcore::attributes::check_request(
        has_private_mem(vm),
        a.address,
        a.size,
        a.attributes,
        a.flags,
    )
    .map_err(err)?;
    let mut st = vm.memslots().lock();
    if st.attrs.range_has(req.start, req.end, !0, req.attrs) {
        return Ok(0);
    }
    let need = st.attrs.room_needed();
    st.attrs.store_mut().reserve(need)?;
    let target = if req.attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE != 0 {
        ZapTarget::Shared
    } else {
        ZapTarget::Mirror
    };
    // What a TD needs to DEMOTE the 2 MiB leaves the range cuts, allocated before anything
    // changes: ENOMEM here changes nothing, as upstream's xarray reservation.
    let st = &mut *st;
    vm.mmu().topup_split_cache(&mut st.split)?;
    let inv = vm.memslots().invalidation().scope();
    for s in st.slots.slots() {
        let start = s.base_gfn.max(req.start);
        let end = s.end_gfn().min(req.end);
        if start < end {
            // A 2 MiB private leaf cut by the range is split (DEMOTE), not zapped whole: the
            // guest keeps the rest of it accepted. A zap that cannot finish marked the VM
            // bugged; the attributes change regardless, as upstream (its zap cannot fail).
            vm.mmu()
                .zap_gfns_split(target, start, end, &mut st.split)
                .ok();
        }
    }
    let r = st.attrs.set(req.start, req.end, req.attrs).map_err(err);
    drop(inv);
    r.map(|_| 0)
}

/// Whether `gfn` is private (upstream `kvm_mem_is_private`); for the fault side.
#[allow(dead_code)]
pub(crate) fn is_private(vm: &Vm, gfn: Gfn) -> bool {
    has_private_mem(vm) && vm.memslots().lock().attrs.is_private(gfn)
}
