// SPDX-License-Identifier: GPL-2.0-only
//! Port I/O exits to userspace and their completion (upstream `kvm_fast_pio`,
//! `complete_fast_pio_in` / `complete_fast_pio_out`).
//!
//! A non-string IN or OUT exits with `KVM_EXIT_IO`: `count` 1, the data in the PIO page (page 1
//! of the vCPU mapping) at `data_offset` 4096 — for OUT the value of AL/AX/EAX, for IN where
//! userspace puts the answer. The next `KVM_RUN` completes it before anything else (also with
//! `immediate_exit`): IN copies the data into RAX with the size's semantics (AL and AX merge,
//! EAX zero-extends into RAX), and both advance RIP to the next instruction (from EXITINFO2,
//! which SVM provides for IOIO even without next-RIP save) — unless userspace moved RIP
//! meanwhile (upstream's linear-RIP check), then the completion is dropped. OUT to port 0x7e
//! advances RIP before the exit (upstream's `KVM_X86_QUIRK_OUT_7E_INC_RIP`, on by default).

use super::uapi::*;
use crate::abi::KVM_PIO_PAGE_OFFSET;
use x86::state::{CpuState, SegReg};

/// An I/O exit waiting for its completion.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingIo {
    is_in: bool,
    size: u8,
    next_rip: u64,
    /// CS.base + RIP at the exit.
    linear_rip: u64,
}

fn linear_rip(st: &CpuState) -> u64 {
    st.seg(SegReg::Cs).base.wrapping_add(st.rip)
}

/// Fills `kvm_run` and the PIO page for a plain IN/OUT; returns the completion to remember.
pub(crate) fn exit_to_user(
    st: &mut CpuState,
    run: RunPage,
    pio: *mut u8,
    port: u16,
    size: u8,
    is_in: bool,
    next_rip: u64,
) -> Option<PendingIo> {
    run.set_exit_reason(KVM_EXIT_IO);
    run.set_u8(
        IO_DIRECTION,
        if is_in {
            KVM_EXIT_IO_IN
        } else {
            KVM_EXIT_IO_OUT
        },
    );
    run.set_u8(IO_SIZE, size);
    run.set_u16(IO_PORT, port);
    run.set_u32(IO_COUNT, 1);
    run.set_u64(IO_DATA_OFFSET, (KVM_PIO_PAGE_OFFSET * 4096) as u64);
    if !is_in {
        let v = st.gprs[0].to_le_bytes();
        for (i, b) in v.iter().take(size as usize).enumerate() {
            // SAFETY: `pio` is the vCPU's 4 KiB PIO page; at most 4 bytes are written.
            unsafe { core::ptr::write_volatile(pio.add(i), *b) };
        }
        if port == 0x7e {
            st.rip = next_rip;
            return None;
        }
    }
    Some(PendingIo {
        is_in,
        size,
        next_rip,
        linear_rip: linear_rip(st),
    })
}

/// Completes `p` at the start of the next `KVM_RUN`.
pub(crate) fn complete(st: &mut CpuState, pio: *const u8, p: PendingIo) {
    if linear_rip(st) != p.linear_rip {
        return;
    }
    if p.is_in {
        let mut data = [0u8; 4];
        for (i, d) in data.iter_mut().take(p.size as usize).enumerate() {
            // SAFETY: `pio` is the vCPU's 4 KiB PIO page, read volatile (userspace writes it).
            *d = unsafe { core::ptr::read_volatile(pio.add(i)) };
        }
        let v = u64::from(u32::from_le_bytes(data));
        let rax = st.gprs[0];
        st.gprs[0] = match p.size {
            1 => (rax & !0xff) | (v & 0xff),
            2 => (rax & !0xffff) | (v & 0xffff),
            _ => v,
        };
    }
    st.rip = p.next_rip;
}
