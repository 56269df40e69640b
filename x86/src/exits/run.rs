// SPDX-License-Identifier: GPL-2.0-only
//! The exit half of `struct kvm_run` (x86_64 uapi): exit reasons, the offsets of the exit
//! union's members this crate fills, and [`Exit`], which encodes one exit into the 256-byte
//! union. The module writes `exit_reason` and the union into the vCPU's kvm_run page; on the
//! next `KVM_RUN` the completions read back what userspace answered with the `read_*` helpers.

use super::{le_u32, le_u64};

/// `KVM_EXIT_IO`.
pub const KVM_EXIT_IO: u32 = 2;
/// `KVM_EXIT_HYPERCALL`.
pub const KVM_EXIT_HYPERCALL: u32 = 3;
/// `KVM_EXIT_DEBUG`.
pub const KVM_EXIT_DEBUG: u32 = 4;
/// `KVM_EXIT_MMIO`.
pub const KVM_EXIT_MMIO: u32 = 6;
/// `KVM_EXIT_INTERNAL_ERROR`.
pub const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
/// `KVM_EXIT_X86_RDMSR`.
pub const KVM_EXIT_X86_RDMSR: u32 = 29;
/// `KVM_EXIT_X86_WRMSR`.
pub const KVM_EXIT_X86_WRMSR: u32 = 30;

/// `KVM_EXIT_IO_IN`.
pub const KVM_EXIT_IO_IN: u8 = 0;
/// `KVM_EXIT_IO_OUT`.
pub const KVM_EXIT_IO_OUT: u8 = 1;

/// Offset of `exit_reason` (u32) in `struct kvm_run`.
pub const OFF_EXIT_REASON: usize = 8;
/// Offset of the exit union in `struct kvm_run`.
pub const OFF_UNION: usize = 32;
/// Size of the exit union (`char padding[256]`).
pub const UNION_SIZE: usize = 256;

/// Offsets inside the union (add [`OFF_UNION`] for the kvm_run offset).
pub mod off {
    /// `mmio.phys_addr` (u64).
    pub const MMIO_PHYS_ADDR: usize = 0;
    /// `mmio.data[8]`.
    pub const MMIO_DATA: usize = 8;
    /// `mmio.len` (u32).
    pub const MMIO_LEN: usize = 16;
    /// `mmio.is_write` (u8).
    pub const MMIO_IS_WRITE: usize = 20;
    /// `io.direction` (u8).
    pub const IO_DIRECTION: usize = 0;
    /// `io.size` (u8).
    pub const IO_SIZE: usize = 1;
    /// `io.port` (u16).
    pub const IO_PORT: usize = 2;
    /// `io.count` (u32).
    pub const IO_COUNT: usize = 4;
    /// `io.data_offset` (u64).
    pub const IO_DATA_OFFSET: usize = 8;
    /// `hypercall.nr` (u64).
    pub const HC_NR: usize = 0;
    /// `hypercall.args[6]`.
    pub const HC_ARGS: usize = 8;
    /// `hypercall.ret` (u64).
    pub const HC_RET: usize = 56;
    /// `hypercall.flags` (u64; `longmode` in older headers).
    pub const HC_FLAGS: usize = 64;
    /// `debug.arch.exception` (u32).
    pub const DBG_EXCEPTION: usize = 0;
    /// `debug.arch.pc` (u64).
    pub const DBG_PC: usize = 8;
    /// `debug.arch.dr6` (u64).
    pub const DBG_DR6: usize = 16;
    /// `debug.arch.dr7` (u64).
    pub const DBG_DR7: usize = 24;
    /// `msr.error` (u8).
    pub const MSR_ERROR: usize = 0;
    /// `msr.reason` (u32), after 7 bytes of padding.
    pub const MSR_REASON: usize = 8;
    /// `msr.index` (u32).
    pub const MSR_INDEX: usize = 12;
    /// `msr.data` (u64).
    pub const MSR_DATA: usize = 16;
    /// `internal.suberror` / `emulation_failure.suberror` (u32).
    pub const INT_SUBERROR: usize = 0;
    /// `internal.ndata` (u32).
    pub const INT_NDATA: usize = 4;
    /// `internal.data[16]` (u64 each); `emulation_failure.flags` is `data[0]`.
    pub const INT_DATA: usize = 8;
}

/// `KVM_EXIT_HYPERCALL_LONG_MODE` in `hypercall.flags`.
pub const HYPERCALL_LONG_MODE: u64 = 1;

/// One exit to userspace, as this crate produces them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `KVM_EXIT_IO`; the data is in the PIO page at `data_offset`.
    Io {
        /// `KVM_EXIT_IO_IN` / `_OUT`.
        direction: u8,
        /// Bytes per element (1, 2, 4).
        size: u8,
        /// The port.
        port: u16,
        /// Elements.
        count: u32,
        /// Offset of the data in the vCPU mapping (the PIO page: 4096).
        data_offset: u64,
    },
    /// `KVM_EXIT_MMIO`.
    Mmio {
        /// Guest physical address.
        phys_addr: u64,
        /// Data of a write (little-endian, `len` bytes); zero for a read.
        data: [u8; 8],
        /// Bytes (1..=8).
        len: u32,
        /// Write or read.
        is_write: bool,
    },
    /// `KVM_EXIT_HYPERCALL`.
    Hypercall {
        /// Hypercall number.
        nr: u64,
        /// Arguments.
        args: [u64; 6],
        /// `KVM_EXIT_HYPERCALL_LONG_MODE` or 0.
        flags: u64,
    },
    /// `KVM_EXIT_DEBUG` (x86 `kvm_debug_exit_arch`).
    Debug {
        /// Vector (#DB 1, #BP 3).
        exception: u32,
        /// Linear address of the instruction (CS base + RIP).
        pc: u64,
        /// DR6.
        dr6: u64,
        /// DR7.
        dr7: u64,
    },
    /// `KVM_EXIT_X86_RDMSR` (`write` false) or `KVM_EXIT_X86_WRMSR`; `error` starts at 0.
    Msr {
        /// WRMSR.
        write: bool,
        /// `KVM_MSR_EXIT_REASON_*`.
        reason: u32,
        /// The MSR.
        index: u32,
        /// WRMSR's value (0 for RDMSR).
        data: u64,
    },
    /// `KVM_EXIT_INTERNAL_ERROR` with `ndata` words of `data` (the emulation-failure form
    /// is built by [`super::emulation`]).
    Internal {
        /// `KVM_INTERNAL_ERROR_*`.
        suberror: u32,
        /// Valid words in `data`.
        ndata: u32,
        /// `internal.data`.
        data: [u64; 16],
    },
}

fn put(u: &mut [u8; UNION_SIZE], at: usize, bytes: &[u8]) {
    u[at..at + bytes.len()].copy_from_slice(bytes);
}

impl Exit {
    /// `exit_reason`.
    pub fn reason(&self) -> u32 {
        match self {
            Exit::Io { .. } => KVM_EXIT_IO,
            Exit::Mmio { .. } => KVM_EXIT_MMIO,
            Exit::Hypercall { .. } => KVM_EXIT_HYPERCALL,
            Exit::Debug { .. } => KVM_EXIT_DEBUG,
            Exit::Msr { write: false, .. } => KVM_EXIT_X86_RDMSR,
            Exit::Msr { write: true, .. } => KVM_EXIT_X86_WRMSR,
            Exit::Internal { .. } => KVM_EXIT_INTERNAL_ERROR,
        }
    }

    /// The exit union's bytes (everything this exit does not use is zero, as upstream's
    /// explicit `memset`s of padding leave it).
    pub fn encode(&self) -> [u8; UNION_SIZE] {
        let mut u = [0u8; UNION_SIZE];
        match *self {
            Exit::Io {
                direction,
                size,
                port,
                count,
                data_offset,
            } => {
                u[off::IO_DIRECTION] = direction;
                u[off::IO_SIZE] = size;
                put(&mut u, off::IO_PORT, &port.to_le_bytes());
                put(&mut u, off::IO_COUNT, &count.to_le_bytes());
                put(&mut u, off::IO_DATA_OFFSET, &data_offset.to_le_bytes());
            }
            Exit::Mmio {
                phys_addr,
                data,
                len,
                is_write,
            } => {
                put(&mut u, off::MMIO_PHYS_ADDR, &phys_addr.to_le_bytes());
                put(&mut u, off::MMIO_DATA, &data);
                put(&mut u, off::MMIO_LEN, &len.to_le_bytes());
                u[off::MMIO_IS_WRITE] = is_write as u8;
            }
            Exit::Hypercall { nr, args, flags } => {
                put(&mut u, off::HC_NR, &nr.to_le_bytes());
                for (i, a) in args.iter().enumerate() {
                    put(&mut u, off::HC_ARGS + 8 * i, &a.to_le_bytes());
                }
                put(&mut u, off::HC_FLAGS, &flags.to_le_bytes());
            }
            Exit::Debug {
                exception,
                pc,
                dr6,
                dr7,
            } => {
                put(&mut u, off::DBG_EXCEPTION, &exception.to_le_bytes());
                put(&mut u, off::DBG_PC, &pc.to_le_bytes());
                put(&mut u, off::DBG_DR6, &dr6.to_le_bytes());
                put(&mut u, off::DBG_DR7, &dr7.to_le_bytes());
            }
            Exit::Msr {
                reason,
                index,
                data,
                ..
            } => {
                put(&mut u, off::MSR_REASON, &reason.to_le_bytes());
                put(&mut u, off::MSR_INDEX, &index.to_le_bytes());
                put(&mut u, off::MSR_DATA, &data.to_le_bytes());
            }
            Exit::Internal {
                suberror,
                ndata,
                data,
            } => {
                put(&mut u, off::INT_SUBERROR, &suberror.to_le_bytes());
                put(&mut u, off::INT_NDATA, &ndata.to_le_bytes());
                for (i, d) in data.iter().enumerate() {
                    put(&mut u, off::INT_DATA + 8 * i, &d.to_le_bytes());
                }
            }
        }
        u
    }
}

/// What userspace left in the union for a completion: `mmio.data` (a read's value).
pub fn read_mmio_data(u: &[u8; UNION_SIZE]) -> [u8; 8] {
    let mut d = [0u8; 8];
    d.copy_from_slice(&u[off::MMIO_DATA..off::MMIO_DATA + 8]);
    d
}

/// `hypercall.ret`.
pub fn read_hypercall_ret(u: &[u8; UNION_SIZE]) -> u64 {
    le_u64(u, off::HC_RET)
}

/// `msr.error` and `msr.data`.
pub fn read_msr_answer(u: &[u8; UNION_SIZE]) -> (u8, u64) {
    (u[off::MSR_ERROR], le_u64(u, off::MSR_DATA))
}

/// `io.count` (userspace may not change it, but the completion reads what the exit wrote).
pub fn read_io_count(u: &[u8; UNION_SIZE]) -> u32 {
    le_u32(u, off::IO_COUNT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let e = Exit::Mmio {
            phys_addr: 0x1_0000_1000,
            data: [1, 2, 0, 0, 0, 0, 0, 0],
            len: 2,
            is_write: true,
        };
        let u = e.encode();
        assert_eq!(e.reason(), 6);
        assert_eq!(le_u64(&u, 0), 0x1_0000_1000);
        assert_eq!(&u[8..10], &[1, 2]);
        assert_eq!(le_u32(&u, 16), 2);
        assert_eq!(u[20], 1);
        assert_eq!(read_mmio_data(&u), [1, 2, 0, 0, 0, 0, 0, 0]);

        let e = Exit::Io {
            direction: KVM_EXIT_IO_OUT,
            size: 2,
            port: 0x3f8,
            count: 7,
            data_offset: 4096,
        };
        let u = e.encode();
        assert_eq!(
            (u[0], u[1], u16::from_le_bytes([u[2], u[3]])),
            (1, 2, 0x3f8)
        );
        assert_eq!(read_io_count(&u), 7);
        assert_eq!(le_u64(&u, 8), 4096);

        let e = Exit::Msr {
            write: true,
            reason: 4,
            index: 0xc000_0080,
            data: 0xabcd,
        };
        let u = e.encode();
        assert_eq!(e.reason(), KVM_EXIT_X86_WRMSR);
        assert_eq!(read_msr_answer(&u), (0, 0xabcd));
        assert_eq!(le_u32(&u, 8), 4);
        assert_eq!(le_u32(&u, 12), 0xc000_0080);

        let e = Exit::Hypercall {
            nr: 12,
            args: [1, 2, 3, 4, 5, 6],
            flags: HYPERCALL_LONG_MODE,
        };
        let u = e.encode();
        assert_eq!(le_u64(&u, 0), 12);
        assert_eq!(le_u64(&u, 8 + 5 * 8), 6);
        assert_eq!(read_hypercall_ret(&u), 0);
        assert_eq!(le_u64(&u, 64), 1);

        let e = Exit::Debug {
            exception: 1,
            pc: 0x1003,
            dr6: 0x4ff0,
            dr7: 0x400,
        };
        let u = e.encode();
        assert_eq!(le_u32(&u, 0), 1);
        assert_eq!(le_u64(&u, 8), 0x1003);
        assert_eq!(le_u64(&u, 16), 0x4ff0);
        assert_eq!(le_u64(&u, 24), 0x400);
    }
}
