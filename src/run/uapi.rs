// SPDX-License-Identifier: GPL-2.0-only
//! The `struct kvm_run` fields the run loop writes (x86_64 uapi byte offsets, `linux/kvm.h`),
//! written volatile: userspace maps the page and may read or write it at any time.

/// `exit_reason` (u32).
pub(crate) const EXIT_REASON: usize = 8;
/// `ready_for_interrupt_injection` (u8).
pub(crate) const READY_FOR_INTERRUPT_INJECTION: usize = 12;
/// `if_flag` (u8).
pub(crate) const IF_FLAG: usize = 13;
/// `cr8` (u64).
pub(crate) const CR8: usize = 16;
/// `apic_base` (u64).
pub(crate) const APIC_BASE: usize = 24;
/// The exit union.
pub(crate) const U: usize = 32;
/// `io.direction` (u8), `io.size` (u8), `io.port` (u16), `io.count` (u32), `io.data_offset`
/// (u64).
pub(crate) const IO_DIRECTION: usize = U;
pub(crate) const IO_SIZE: usize = U + 1;
pub(crate) const IO_PORT: usize = U + 2;
pub(crate) const IO_COUNT: usize = U + 4;
pub(crate) const IO_DATA_OFFSET: usize = U + 8;
/// `fail_entry.hardware_entry_failure_reason` (u64), `fail_entry.cpu` (u32).
pub(crate) const FAIL_ENTRY_REASON: usize = U;
pub(crate) const FAIL_ENTRY_CPU: usize = U + 8;
/// `internal.suberror` (u32), `internal.ndata` (u32), `internal.data[16]` (u64).
pub(crate) const INTERNAL_SUBERROR: usize = U;
pub(crate) const INTERNAL_NDATA: usize = U + 4;
pub(crate) const INTERNAL_DATA: usize = U + 8;

pub(crate) const KVM_EXIT_IO: u32 = 2;
pub(crate) const KVM_EXIT_HLT: u32 = 5;
pub(crate) const KVM_EXIT_SHUTDOWN: u32 = 8;
pub(crate) const KVM_EXIT_FAIL_ENTRY: u32 = 9;
pub(crate) const KVM_EXIT_INTR: u32 = 10;
pub(crate) const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
pub(crate) const KVM_EXIT_IO_IN: u8 = 0;
pub(crate) const KVM_EXIT_IO_OUT: u8 = 1;
pub(crate) const KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: u32 = 4;

/// The vCPU's kvm_run page.
#[derive(Clone, Copy)]
pub(crate) struct RunPage(pub(crate) *mut u8);

impl RunPage {
    fn put<T: Copy>(self, off: usize, v: T) {
        // SAFETY: `self.0` is the vCPU's 4 KiB kvm_run page (alive while the vCPU is); every
        // offset used is a field inside the first 304 bytes with the field's alignment.
        unsafe { core::ptr::write_volatile(self.0.add(off).cast::<T>(), v) }
    }

    pub(crate) fn set_u8(self, off: usize, v: u8) {
        self.put(off, v)
    }
    pub(crate) fn set_u16(self, off: usize, v: u16) {
        self.put(off, v)
    }
    pub(crate) fn set_u32(self, off: usize, v: u32) {
        self.put(off, v)
    }
    pub(crate) fn set_u64(self, off: usize, v: u64) {
        self.put(off, v)
    }

    pub(crate) fn set_exit_reason(self, r: u32) {
        self.set_u32(EXIT_REASON, r)
    }

    /// `KVM_EXIT_INTERNAL_ERROR` with `suberror` and up to 16 data words.
    pub(crate) fn internal_error(self, suberror: u32, data: &[u64]) {
        self.set_exit_reason(KVM_EXIT_INTERNAL_ERROR);
        self.set_u32(INTERNAL_SUBERROR, suberror);
        let n = data.len().min(16);
        self.set_u32(INTERNAL_NDATA, n as u32);
        for (i, d) in data.iter().take(n).enumerate() {
            self.set_u64(INTERNAL_DATA + 8 * i, *d);
        }
    }
}
