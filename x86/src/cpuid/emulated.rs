// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_GET_EMULATED_CPUID`: the CPUID bits KVM emulates whatever the host has (upstream
//! `__do_cpuid_func_emulated` driven by `kvm_dev_ioctl_get_cpuid`), because the #UD intercept
//! emulates the instruction (`x86emu`'s `EmuOptions::trap_ud`): MOVBE in leaf 1 ECX, RDPID
//! in leaf 7 ECX (only when the module supports RDTSCP, i.e. virtualises `MSR_TSC_AUX`), and
//! leaf 0 with EAX = 7 so the table's own leaves are in range.
//!
//! The walk is upstream's to the letter, including its E2BIG quirks: every leaf visited checks
//! for a free slot before it decides whether it adds anything, so after the three entries the
//! next base leaf (0x80000000) still needs a free slot — a 3-entry buffer is E2BIG, 4 suffice.

use super::feat;
use crate::errno::{Errno, Result};
use crate::uapi::{KvmCpuidEntry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// The most entries the table has.
pub const MAX_ENTRIES: usize = 3;

/// `CENTAUR_CPUID_SIGNATURE`: walked only on a Centaur host.
const CENTAUR_SIGNATURE: u32 = 0xc000_0000;
/// `KVM_CPUID_SIGNATURE`.
const KVM_SIGNATURE: u32 = 0x4000_0000;

/// The entries being built, with upstream's `maxnent` (the caller's `nent`, capped at
/// `KVM_MAX_CPUID_ENTRIES`).
struct Array<'a> {
    out: &'a mut [KvmCpuidEntry2; MAX_ENTRIES],
    nent: usize,
    maxnent: usize,
}

/// `__do_cpuid_func_emulated`.
fn do_func(a: &mut Array<'_>, func: u32, rdtscp: bool) -> Result {
    if a.nent >= a.maxnent {
        return Err(Errno::E2big);
    }
    let mut e = KvmCpuidEntry2 {
        function: func,
        ..KvmCpuidEntry2::default()
    };
    match func {
        0 => e.eax = 7,
        1 => e.ecx = 1 << feat::MOVBE.bit,
        7 => {
            e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
            if rdtscp {
                e.ecx = 1 << feat::RDPID.bit;
            }
        }
        _ => return Ok(()),
    }
    // Never more than MAX_ENTRIES: leaves 0, 1 and 7 are each visited once.
    let slot = a.out.get_mut(a.nent).ok_or(Errno::E2big)?;
    *slot = e;
    a.nent += 1;
    Ok(())
}

/// `get_cpuid_func`: a base leaf, then every leaf up to the EAX of the last entry so far.
fn get_func(a: &mut Array<'_>, func: u32, rdtscp: bool, centaur: bool) -> Result {
    if func == CENTAUR_SIGNATURE && !centaur {
        return Ok(());
    }
    do_func(a, func, rdtscp)?;
    // Upstream reads `entries[nent - 1]`; `nent` is at least 1 here because leaf 0, the first
    // base leaf, always adds an entry.
    let limit = a.nent.checked_sub(1).map_or(0, |i| a.out[i].eax);
    let mut f = func;
    while f < limit {
        f += 1;
        do_func(a, f, rdtscp)?;
    }
    Ok(())
}

/// The emulated-CPUID table for a caller buffer of `nent` entries (`nent` ≥ 1, at most
/// `KVM_MAX_CPUID_ENTRIES`: the ioctl checks both first): the number of entries written to
/// `out`, or E2BIG. `rdtscp`: the module supports RDTSCP (`kvm_cpu_cap_has(RDTSCP)`);
/// `centaur`: the host is a Centaur CPU.
pub fn emulated_cpuid(
    nent: usize,
    rdtscp: bool,
    centaur: bool,
    out: &mut [KvmCpuidEntry2; MAX_ENTRIES],
) -> Result<usize> {
    let mut a = Array {
        out,
        nent: 0,
        maxnent: nent,
    };
    for func in [0, 0x8000_0000, CENTAUR_SIGNATURE, KVM_SIGNATURE] {
        get_func(&mut a, func, rdtscp, centaur)?;
    }
    Ok(a.nent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(nent: usize, rdtscp: bool) -> Result<([KvmCpuidEntry2; MAX_ENTRIES], usize)> {
        let mut out = [KvmCpuidEntry2::default(); MAX_ENTRIES];
        emulated_cpuid(nent, rdtscp, false, &mut out).map(|n| (out, n))
    }

    #[test]
    fn upstream_table_movbe_rdpid_and_leaf_0() {
        let (e, n) = run(256, true).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            (e[0].function, e[0].index, e[0].flags, e[0].eax),
            (0, 0, 0, 7)
        );
        assert_eq!((e[0].ebx, e[0].ecx, e[0].edx), (0, 0, 0));
        assert_eq!((e[1].function, e[1].flags, e[1].ecx), (1, 0, 1 << 22));
        assert_eq!((e[1].eax, e[1].ebx, e[1].edx), (0, 0, 0));
        assert_eq!(
            (e[2].function, e[2].index, e[2].flags),
            (7, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX)
        );
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx, e[2].edx), (0, 0, 1 << 22, 0));
        // MOVBE is CPUID.1:ECX[22], RDPID CPUID.7.0:ECX[22].
        assert_eq!((feat::MOVBE.function, feat::MOVBE.bit), (1, 22));
    }

    #[test]
    fn rdpid_only_with_rdtscp() {
        let (e, n) = run(256, false).unwrap();
        assert_eq!(n, 3);
        assert_eq!((e[2].function, e[2].ecx), (7, 0));
    }

    #[test]
    fn e2big_below_four_entries_as_upstream() {
        for nent in 1..=3 {
            assert_eq!(run(nent, true).map(|r| r.1), Err(Errno::E2big), "{nent}");
        }
        assert_eq!(run(4, true).map(|r| r.1), Ok(3));
    }

    #[test]
    fn centaur_host_visits_its_leaf_too() {
        let mut out = [KvmCpuidEntry2::default(); MAX_ENTRIES];
        // One more base leaf to visit: still 4 slots suffice (nothing is added for it).
        assert_eq!(emulated_cpuid(4, true, true, &mut out), Ok(3));
    }
}
