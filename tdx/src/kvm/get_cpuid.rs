// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_TDX_GET_CPUID`: the TD's CPUID as the TDX module virtualizes it, read leaf by leaf with
//! TDH.MNG.RD of CPUID_VALUES, as upstream's `tdx_vcpu_get_cpuid` (6.16) walks it: leaf 0 for
//! the highest basic leaf, each leaf up to it (without a sub-leaf, else sub-leaves 0, 1, ...
//! until one fails), then the same from 0x80000000.

use super::errno::Errno;
use super::td_conf::set_guest_phys_addr_bits;
use super::uapi::{KvmCpuidEntry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES};
use crate::abi::md::td::CPUID_VALUES;
use crate::error::TdxError;

/// Leaf bits the CPUID_VALUES field id cannot name (`TDX_MD_UNREADABLE_LEAF_MASK`, 30:7).
const UNREADABLE_LEAF: u32 = 0x7fff_ff80;
/// Sub-leaf bits it cannot name (`TDX_MD_UNREADABLE_SUBLEAF_MASK`, 31:7).
const UNREADABLE_SUBLEAF: u32 = 0xffff_ff80;

/// Why one leaf read stopped (`tdx_read_cpuid`'s -EINVAL and -EIO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadError {
    /// The leaf or sub-leaf cannot be named, or the output is full.
    Invalid,
    /// The module has no such leaf (TDH.MNG.RD failed).
    Io,
}

/// The CPUID_VALUES field id of `leaf`/`sub_leaf`, element 0 (`None`: no sub-leaf).
#[must_use]
pub const fn field_id(leaf: u32, sub_leaf: Option<u32>) -> u64 {
    let mut id = CPUID_VALUES | ((leaf >> 31) as u64) << 16 | ((leaf & 0x7f) as u64) << 9;
    id |= match sub_leaf {
        Some(s) => ((s & 0x7f) as u64) << 1,
        None => 0x1fe,
    };
    id
}

/// The walk: `read` is TDH.MNG.RD of the TD, `gpaw` its guest physical address width (48 or
/// 52, reported in 0x80000008 EAX[23:16] as upstream does for old modules), `out` the entries
/// (at least [`KVM_MAX_CPUID_ENTRIES`]).
struct Walk<'a, R> {
    read: R,
    gpaw: u32,
    out: &'a mut [KvmCpuidEntry2],
    n: usize,
}

impl<R: FnMut(u64) -> Result<u64, TdxError>> Walk<'_, R> {
    /// `tdx_read_cpuid`: one entry at `self.n`.
    fn read_one(&mut self, leaf: u32, sub_leaf: Option<u32>) -> Result<(), ReadError> {
        let s = sub_leaf.unwrap_or(0);
        if s > 0x7f || self.n >= KVM_MAX_CPUID_ENTRIES as usize || self.n >= self.out.len() {
            return Err(ReadError::Invalid);
        }
        if leaf & UNREADABLE_LEAF != 0 || s & UNREADABLE_SUBLEAF != 0 {
            return Err(ReadError::Invalid);
        }
        let id = field_id(leaf, sub_leaf);
        let ebx_eax = (self.read)(id).map_err(|_| ReadError::Io)?;
        let edx_ecx = (self.read)(id + 1).map_err(|_| ReadError::Io)?;
        let mut e = KvmCpuidEntry2 {
            function: leaf,
            index: s,
            flags: if sub_leaf.is_some() {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: ebx_eax as u32,
            ebx: (ebx_eax >> 32) as u32,
            ecx: edx_ecx as u32,
            edx: (edx_ecx >> 32) as u32,
            ..KvmCpuidEntry2::default()
        };
        if leaf == 0x8000_0008 {
            e.eax = set_guest_phys_addr_bits(e.eax, self.gpaw);
        }
        self.out[self.n] = e;
        self.n += 1;
        Ok(())
    }

    /// `tdx_vcpu_get_cpuid_leaf`: the leaf without a sub-leaf, else its sub-leaves from 0 until
    /// one fails. Whether anything was read (a leaf the TD lacks is skipped).
    fn leaf(&mut self, leaf: u32) -> bool {
        match self.read_one(leaf, None) {
            Ok(()) => return true,
            Err(ReadError::Invalid) => return false,
            Err(ReadError::Io) => {}
        }
        let mut s = 0;
        while self.read_one(leaf, Some(s)).is_ok() {
            s += 1;
        }
        s != 0
    }

    /// EAX of the last entry read (the highest leaf of a range, right after its first leaf).
    fn last_eax(&self) -> u32 {
        self.n
            .checked_sub(1)
            .and_then(|i| self.out.get(i))
            .map_or(0, |e| e.eax)
    }
}

/// `tdx_vcpu_get_cpuid` without the copies: fills `out` and returns how many entries there are.
/// Leaves above 0x7f (0x8000007f) cannot be named by a field id, so the walks stop there
/// (upstream tries them and gets EINVAL each time).
///
/// # Errors
///
/// EIO if leaf 0 or 0x80000000 cannot be read.
pub fn get_cpuid(
    read: impl FnMut(u64) -> Result<u64, TdxError>,
    gpaw: u32,
    out: &mut [KvmCpuidEntry2],
) -> Result<usize, Errno> {
    let mut w = Walk {
        read,
        gpaw,
        out,
        n: 0,
    };
    if !w.leaf(0) {
        return Err(Errno::EIO);
    }
    let level = w.out.first().map_or(0, |e| e.eax);
    for leaf in 1..=level.min(0x7f) {
        w.leaf(leaf);
    }
    if !w.leaf(0x8000_0000) {
        return Err(Errno::EIO);
    }
    for leaf in 0x8000_0001..=w.last_eax().min(0x8000_007f) {
        w.leaf(leaf);
    }
    Ok(w.n)
}
