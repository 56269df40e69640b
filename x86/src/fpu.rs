// SPDX-License-Identifier: GPL-2.0-only
//! The FPU side of the state ABI: `KVM_GET/SET_FPU` (`struct kvm_fpu` ⇄ the FXSAVE image),
//! `KVM_GET/SET_XCRS` and the XCR0 rule (`__kvm_set_xcr`, also the guest's `XSETBV`), with
//! upstream 6.12's semantics (`arch/x86/kvm/x86.c`). The XSAVE images themselves are the
//! kernel's (`fpu_copy_guest_fpstate_to_uabi`/`fpu_copy_uabi_to_guest_fpstate`), reached by the
//! module.

use crate::cpuid::GuestCpu;
use crate::errno::{Errno, Result};
use crate::state::CpuState;
use core::mem::{offset_of, size_of};

/// `XFEATURE_MASK_FP`.
pub const XFEATURE_FP: u64 = 1 << 0;
/// `XFEATURE_MASK_SSE`.
pub const XFEATURE_SSE: u64 = 1 << 1;
/// `XFEATURE_MASK_YMM`.
pub const XFEATURE_YMM: u64 = 1 << 2;
/// `XFEATURE_MASK_BNDREGS | XFEATURE_MASK_BNDCSR`.
pub const XFEATURE_BND: u64 = 0b11 << 3;
/// `XFEATURE_MASK_AVX512` (opmask, ZMM_Hi256, Hi16_ZMM).
pub const XFEATURE_AVX512: u64 = 0b111 << 5;
/// `XFEATURE_MASK_XTILE` (XTILE_CFG, XTILE_DATA).
pub const XFEATURE_XTILE: u64 = 0b11 << 17;
/// `XFEATURE_MASK_EXTEND`: the components beyond x87/SSE (CPUID's XSAVE sizes follow them).
pub const XFEATURE_EXTEND: u64 = !(XFEATURE_FP | XFEATURE_SSE);

/// Upstream `__kvm_set_xcr` for XCR0 (index 0; any other index is refused): x87 always, AVX
/// needs SSE, only what the guest's CPUID allows (plus x87), MPX's two bits together, AVX-512's
/// three bits together and with AVX, AMX's two together. Returns whether the extended
/// components changed (the CPUID 0xD sizes then change: [`crate::cpuid::update_runtime`]).
pub fn set_xcr(s: &mut CpuState, guest: &GuestCpu, index: u32, xcr0: u64) -> Result<bool> {
    if index != 0 {
        return Err(Errno::Einval);
    }
    if xcr0 & XFEATURE_FP == 0 {
        return Err(Errno::Einval);
    }
    if xcr0 & XFEATURE_YMM != 0 && xcr0 & XFEATURE_SSE == 0 {
        return Err(Errno::Einval);
    }
    if xcr0 & !(guest.supported_xcr0 | XFEATURE_FP) != 0 {
        return Err(Errno::Einval);
    }
    // BNDREGS and BNDCSR go together.
    if (xcr0 & (1 << 3) == 0) != (xcr0 & (1 << 4) == 0) {
        return Err(Errno::Einval);
    }
    if xcr0 & XFEATURE_AVX512 != 0
        && (xcr0 & XFEATURE_YMM == 0 || xcr0 & XFEATURE_AVX512 != XFEATURE_AVX512)
    {
        return Err(Errno::Einval);
    }
    if xcr0 & XFEATURE_XTILE != 0 && xcr0 & XFEATURE_XTILE != XFEATURE_XTILE {
        return Err(Errno::Einval);
    }
    let changed = (xcr0 ^ s.xcr0) & XFEATURE_EXTEND != 0;
    s.xcr0 = xcr0;
    Ok(changed)
}

/// `KVM_MAX_XCRS`.
pub const KVM_MAX_XCRS: usize = 16;

/// `struct kvm_xcr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmXcr {
    pub xcr: u32,
    pub reserved: u32,
    pub value: u64,
}

/// `struct kvm_xcrs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmXcrs {
    pub nr_xcrs: u32,
    pub flags: u32,
    pub xcrs: [KvmXcr; KVM_MAX_XCRS],
    pub padding: [u64; 16],
}

const _: () = {
    assert!(size_of::<KvmXcr>() == 16);
    assert!(size_of::<KvmXcrs>() == 392);
    assert!(offset_of!(KvmXcrs, xcrs) == 8);
    assert!(offset_of!(KvmXcrs, padding) == 264);
};

/// `KVM_GET_XCRS` (`kvm_vcpu_ioctl_x86_get_xcrs`): XCR0 alone, or nothing on a host without
/// XSAVE.
pub fn get_xcrs(s: &CpuState, host_xsave: bool) -> KvmXcrs {
    let mut k = KvmXcrs::default();
    if host_xsave {
        k.nr_xcrs = 1;
        k.xcrs[0] = KvmXcr {
            xcr: 0,
            reserved: 0,
            value: s.xcr0,
        };
    }
    k
}

/// `KVM_SET_XCRS` (`kvm_vcpu_ioctl_x86_set_xcrs`): `EINVAL` without host XSAVE, for more than
/// `KVM_MAX_XCRS` entries or any flag; the first XCR0 entry is set with [`set_xcr`]'s rule
/// (a refusal is `EINVAL`); other XCRs are ignored. Returns [`set_xcr`]'s answer (false when no
/// XCR0 entry was there).
pub fn set_xcrs(s: &mut CpuState, guest: &GuestCpu, k: &KvmXcrs, host_xsave: bool) -> Result<bool> {
    if !host_xsave || k.nr_xcrs as usize > KVM_MAX_XCRS || k.flags != 0 {
        return Err(Errno::Einval);
    }
    match k.xcrs[..k.nr_xcrs as usize].iter().find(|x| x.xcr == 0) {
        Some(x) => set_xcr(s, guest, 0, x.value),
        None => Ok(false),
    }
}

/// `struct kvm_fpu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmFpu {
    pub fpr: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    pub ftwx: u8,
    pub pad1: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    pub xmm: [[u8; 16]; 16],
    pub mxcsr: u32,
    pub pad2: u32,
}

const _: () = {
    assert!(size_of::<KvmFpu>() == 416);
    assert!(offset_of!(KvmFpu, fcw) == 128);
    assert!(offset_of!(KvmFpu, ftwx) == 132);
    assert!(offset_of!(KvmFpu, last_opcode) == 134);
    assert!(offset_of!(KvmFpu, last_ip) == 136);
    assert!(offset_of!(KvmFpu, last_dp) == 144);
    assert!(offset_of!(KvmFpu, xmm) == 152);
    assert!(offset_of!(KvmFpu, mxcsr) == 408);
};

// SAFETY: `#[repr(C)]`, integers and integer arrays only; the asserts above show no padding.
unsafe impl crate::uapi::Pod for KvmFpu {}
// SAFETY: as above.
unsafe impl crate::uapi::Pod for KvmXcrs {}
// SAFETY: as above.
unsafe impl crate::uapi::Pod for KvmXcr {}

// The FXSAVE image (`struct fxregs_state`): cwd@0 swd@2 twd@4 fop@6 rip@8 rdp@16 mxcsr@24
// st_space@32 (8 × 16) xmm_space@160 (16 × 16).
fn rd16(b: &[u8; 512], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn rd64(b: &[u8; 512], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// `KVM_GET_FPU` (`kvm_arch_vcpu_ioctl_get_fpu`): the x87 and SSE registers of the FXSAVE image.
/// Like upstream, MXCSR is not reported (it stays 0).
pub fn get_fpu(fx: &[u8; 512]) -> KvmFpu {
    let mut k = KvmFpu::default();
    for (i, r) in k.fpr.iter_mut().enumerate() {
        r.copy_from_slice(&fx[32 + 16 * i..48 + 16 * i]);
    }
    k.fcw = rd16(fx, 0);
    k.fsw = rd16(fx, 2);
    k.ftwx = fx[4];
    k.last_opcode = rd16(fx, 6);
    k.last_ip = rd64(fx, 8);
    k.last_dp = rd64(fx, 16);
    for (i, r) in k.xmm.iter_mut().enumerate() {
        r.copy_from_slice(&fx[160 + 16 * i..176 + 16 * i]);
    }
    k
}

/// `KVM_SET_FPU` (`kvm_arch_vcpu_ioctl_set_fpu`): writes the same fields back (the abridged tag
/// word as given, its high byte cleared); MXCSR is left as it was, as upstream.
pub fn set_fpu(fx: &mut [u8; 512], k: &KvmFpu) {
    for (i, r) in k.fpr.iter().enumerate() {
        fx[32 + 16 * i..48 + 16 * i].copy_from_slice(r);
    }
    fx[0..2].copy_from_slice(&k.fcw.to_le_bytes());
    fx[2..4].copy_from_slice(&k.fsw.to_le_bytes());
    fx[4..6].copy_from_slice(&u16::from(k.ftwx).to_le_bytes());
    fx[6..8].copy_from_slice(&k.last_opcode.to_le_bytes());
    fx[8..16].copy_from_slice(&k.last_ip.to_le_bytes());
    fx[16..24].copy_from_slice(&k.last_dp.to_le_bytes());
    for (i, r) in k.xmm.iter().enumerate() {
        fx[160 + 16 * i..176 + 16 * i].copy_from_slice(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(xcr0: u64) -> GuestCpu {
        GuestCpu {
            supported_xcr0: xcr0,
            ..GuestCpu::default()
        }
    }

    #[test]
    fn xcr0_rules() {
        let mut s = CpuState {
            xcr0: 1,
            ..CpuState::default()
        };
        let g = guest(0xe7);
        assert_eq!(set_xcr(&mut s, &g, 0, 0x7), Ok(true));
        assert_eq!(s.xcr0, 7);
        assert_eq!(set_xcr(&mut s, &g, 0, 0x7), Ok(false));
        assert_eq!(set_xcr(&mut s, &g, 0, 0xe7), Ok(true));
        for (bad, what) in [
            (0x6, "no x87"),
            (0x5, "AVX without SSE"),
            (0x27, "part of AVX-512"),
            (0xe3, "AVX-512 without AVX"),
            (0x207, "PKRU not supported"),
            (1 << 63, "reserved"),
        ] {
            let before = s.xcr0;
            assert_eq!(set_xcr(&mut s, &g, 0, bad), Err(Errno::Einval), "{what}");
            assert_eq!(s.xcr0, before, "{what}");
        }
        assert_eq!(set_xcr(&mut s, &g, 1, 1), Err(Errno::Einval), "XCR1");
        // x87 alone is fine even without XSAVE in the guest's CPUID.
        assert_eq!(set_xcr(&mut s, &guest(0), 0, 1), Ok(true));
        // MPX's bits go together.
        let mpx = guest(0x1f);
        assert_eq!(set_xcr(&mut s, &mpx, 0, 0x0b), Err(Errno::Einval));
        assert_eq!(set_xcr(&mut s, &mpx, 0, 0x1b), Ok(true));
    }

    #[test]
    fn xcrs_rules() {
        let mut s = CpuState {
            xcr0: 1,
            ..CpuState::default()
        };
        let g = guest(7);
        let k = get_xcrs(&s, true);
        assert_eq!((k.nr_xcrs, k.xcrs[0].xcr, k.xcrs[0].value), (1, 0, 1));
        assert_eq!(get_xcrs(&s, false).nr_xcrs, 0);
        let mut n = k;
        n.xcrs[0].value = 7;
        assert_eq!(set_xcrs(&mut s, &g, &n, true), Ok(true));
        assert_eq!(get_xcrs(&s, true).xcrs[0].value, 7);
        let bad = [KvmXcrs { flags: 1, ..n }, KvmXcrs { nr_xcrs: 17, ..n }];
        for b in bad {
            assert_eq!(set_xcrs(&mut s, &g, &b, true), Err(Errno::Einval));
        }
        assert_eq!(set_xcrs(&mut s, &g, &n, false), Err(Errno::Einval));
        let mut z = n;
        z.xcrs[0].value = 0;
        assert_eq!(set_xcrs(&mut s, &g, &z, true), Err(Errno::Einval));
        // No XCR0 entry: nothing to do.
        let mut other = n;
        other.xcrs[0].xcr = 1;
        assert_eq!(set_xcrs(&mut s, &g, &other, true), Ok(false));
        assert_eq!(s.xcr0, 7);
    }

    #[test]
    fn fpu_round_trip_and_mxcsr() {
        let mut fx = [0u8; 512];
        fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        let mut k = KvmFpu {
            fcw: 0x37f,
            fsw: 0x1234,
            ftwx: 0xab,
            last_opcode: 0x7ff,
            last_ip: 0x1122_3344_5566_7788,
            last_dp: 0x99,
            ..KvmFpu::default()
        };
        k.fpr[7] = [7; 16];
        k.xmm[15] = [0xee; 16];
        k.mxcsr = 0xdead;
        set_fpu(&mut fx, &k);
        let got = get_fpu(&fx);
        assert_eq!(got, KvmFpu { mxcsr: 0, ..k });
        // MXCSR is neither written nor reported, as upstream.
        assert_eq!(u32::from_le_bytes([fx[24], fx[25], fx[26], fx[27]]), 0x1f80);
        assert_eq!(&fx[32 + 112..48 + 112], &[7; 16]);
        assert_eq!(&fx[160 + 240..176 + 240], &[0xee; 16]);
    }
}
