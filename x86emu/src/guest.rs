// SPDX-License-Identifier: GPL-2.0-only
//! Guest memory by `segment:offset`, for the run loop's own accesses on the guest's behalf
//! (the memory side of string port I/O, INS/OUTS): the same segmentation, paging and RAM checks
//! an emulated instruction gets, without an instruction.

use x86::state::{CpuState, SegReg};

use crate::emulate::EmuEnv;
use crate::linear::{self, cpl, linearize, Exception, Intent, Pieces};
use crate::walk::{Access, WalkConfig};
use crate::NotRam;

/// Why [`read_guest`] or [`write_guest`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestAccessError {
    /// Segmentation or paging refuses the access: inject it.
    Exception(Exception),
    /// Some of the bytes are not guest RAM.
    NotRam,
}

/// Reads `buf.len()` (at most 4096) bytes at `seg:ea` as a data access at the vCPU's CPL, with
/// segmentation and paging (for string port I/O, whose memory side the run loop handles).
/// `ea` must already be truncated to the instruction's address size.
pub fn read_guest(
    state: &CpuState,
    env: &mut impl EmuEnv,
    cfg: &WalkConfig,
    seg: SegReg,
    ea: u64,
    buf: &mut [u8],
) -> Result<(), GuestAccessError> {
    let p = guest_pieces(state, env, cfg, seg, ea, buf.len(), Intent::Read)?;
    let mut off = 0;
    for (gpa, len) in p.iter() {
        env.read_ram(gpa, &mut buf[off..off + len])
            .map_err(|NotRam| GuestAccessError::NotRam)?;
        off += len;
    }
    Ok(())
}

/// Writes `data` (at most 4096 bytes) at `seg:ea`, like [`read_guest`]; nothing is written
/// unless all of it is RAM.
pub fn write_guest(
    state: &CpuState,
    env: &mut impl EmuEnv,
    cfg: &WalkConfig,
    seg: SegReg,
    ea: u64,
    data: &[u8],
) -> Result<(), GuestAccessError> {
    let p = guest_pieces(state, env, cfg, seg, ea, data.len(), Intent::Write)?;
    if p.iter().any(|(gpa, _)| !env.is_ram(gpa, true)) {
        return Err(GuestAccessError::NotRam);
    }
    let mut off = 0;
    for (gpa, len) in p.iter() {
        env.write_ram(gpa, &data[off..off + len])
            .map_err(|NotRam| GuestAccessError::NotRam)?;
        off += len;
    }
    Ok(())
}

fn guest_pieces(
    state: &CpuState,
    env: &mut impl EmuEnv,
    cfg: &WalkConfig,
    seg: SegReg,
    ea: u64,
    len: usize,
    intent: Intent,
) -> Result<Pieces, GuestAccessError> {
    if len == 0 || len > 4096 {
        return Err(GuestAccessError::NotRam);
    }
    let la = linearize(state, seg, ea, len as u64, intent).map_err(GuestAccessError::Exception)?;
    let c = cpl(state);
    let access = if intent == Intent::Write {
        Access::write(c)
    } else {
        Access::read(c)
    };
    linear::translate_range(state, cfg, env, la, len, access).map_err(GuestAccessError::Exception)
}
