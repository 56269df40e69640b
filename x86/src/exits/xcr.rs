// SPDX-License-Identifier: GPL-2.0-only
//! XSETBV's check (upstream `__kvm_set_xcr`): only XCR0; x87 always on; AVX needs SSE; nothing
//! outside what the guest's CPUID allows (x87 is always allowed); MPX's two components
//! together; the AVX-512 trio together and with AVX; AMX's two components together. A refused
//! value is #GP(0).

/// XCR0 component bits.
const FP: u64 = 1 << 0;
const SSE: u64 = 1 << 1;
const YMM: u64 = 1 << 2;
const BNDREGS: u64 = 1 << 3;
const BNDCSR: u64 = 1 << 4;
const AVX512: u64 = 0xe0;
const XTILE: u64 = (1 << 17) | (1 << 18);

/// Whether XSETBV with ECX = `index` and EDX:EAX = `xcr0` is accepted for a guest whose CPUID
/// allows `guest_supported` (`guest_supported_xcr0`).
pub fn valid(index: u32, xcr0: u64, guest_supported: u64) -> bool {
    if index != 0 || xcr0 & FP == 0 {
        return false;
    }
    if xcr0 & YMM != 0 && xcr0 & SSE == 0 {
        return false;
    }
    if xcr0 & !(guest_supported | FP) != 0 {
        return false;
    }
    if (xcr0 & BNDREGS == 0) != (xcr0 & BNDCSR == 0) {
        return false;
    }
    if xcr0 & AVX512 != 0 && (xcr0 & YMM == 0 || xcr0 & AVX512 != AVX512) {
        return false;
    }
    if xcr0 & XTILE != 0 && xcr0 & XTILE != XTILE {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let all = 0x7 | AVX512 | XTILE | BNDREGS | BNDCSR;
        assert!(valid(0, 1, 0));
        assert!(valid(0, 3, 3));
        assert!(valid(0, 7, 7));
        assert!(!valid(1, 7, 7));
        assert!(!valid(0, 0, 7));
        assert!(!valid(0, 2, 7));
        assert!(!valid(0, 5, 7));
        assert!(!valid(0, 7, 3));
        assert!(valid(0, 7 | AVX512, all));
        assert!(!valid(0, 3 | AVX512, all));
        assert!(!valid(0, 7 | 0x20, all));
        assert!(!valid(0, 7 | BNDREGS, all));
        assert!(valid(0, 7 | BNDREGS | BNDCSR, all));
        assert!(!valid(0, 7 | (1 << 17), all));
        assert!(valid(0, 7 | XTILE, all));
        assert!(!valid(0, 1 << 63 | 7, all));
    }
}
