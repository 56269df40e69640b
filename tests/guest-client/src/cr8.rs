// SPDX-License-Identifier: GPL-2.0-only
//! CR8 (the task priority) as upstream kvm_amd handles it: with an in-kernel LAPIC a guest that
//! lowers its TPR with `MOV CR8` below an interrupt it held back takes that interrupt right
//! after the instruction (the write is intercepted while one waits: `update_cr8_intercept`);
//! an intercepted write with a reserved bit is #GP(0); without an in-kernel LAPIC a CR8 write that lowers it ends
//! `KVM_RUN` with `KVM_EXIT_SET_TPR` (`cr8_write_interception`), and `kvm_run.cr8` is the
//! guest's CR8 both ways.

use crate::run::with_svm;
use crate::{eq, Any, Test};
use kvm_ioctls::VcpuExit;

/// `KVM_EXIT_SET_TPR`.
const KVM_EXIT_SET_TPR: u32 = 11;

/// Runs to the next exit; `Ok(Some(port))` for an OUT, `Ok(None)` for anything else.
fn run_to_out(v: &mut kvm_ioctls::VcpuFd) -> Result<Option<u16>, String> {
    match v.run().map_err(|e| format!("KVM_RUN: {e}"))? {
        VcpuExit::IoOut(port, _) => Ok(Some(port)),
        _ => Ok(None),
    }
}

fn rip(v: &kvm_ioctls::VcpuFd) -> u64 {
    v.get_regs().map(|r| r.rip).unwrap_or(0)
}

/// In-kernel LAPIC: vector 0x41 (class 4) self-IPI'd under CR8 15 waits through CR8 4 and is
/// taken right after `MOV CR8` 3; vector 0x42 sent by KVM_SIGNAL_MSI while the guest is in
/// userspace waits under CR8 15, through a `MOV CR8` of 0x10 that is #GP(0) and leaves CR8
/// alone, and is taken right after `MOV CR8, r9` (r9 = 0). (The #GP is checked only while the
/// write is intercepted: QEMU's TCG lets a guest write V_TPR with reserved bits set, and the
/// CPU, not KVM, checks them when the write is not intercepted.)
fn lowering_tpr_delivers_at_once() -> Result<(), String> {
    let (g, mut v) = crate::irqchip::interrupt_guest()?;
    #[rustfmt::skip]
    let main: &[u8] = &[
        0x0f, 0x01, 0x1c, 0x25, 0x00, 0x5f, 0x00, 0x00, // lidt [0x5f00]
        0xb0, 0xff, 0xe6, 0x21, 0xe6, 0xa1, // mask both PICs
        0xbb, 0x00, 0x00, 0xe0, 0xfe, // mov ebx, 0xfee00000
        0xc7, 0x83, 0xf0, 0x00, 0x00, 0x00, 0xff, 0x01, 0x00, 0x00, // SVR = 0x1ff
        0xb8, 0x0f, 0x00, 0x00, 0x00, // mov eax, 15
        0x44, 0x0f, 0x22, 0xc0, // mov cr8, rax
        0xfb, // sti
        0xc7, 0x83, 0x00, 0x03, 0x00, 0x00, 0x41, 0x00, 0x04, 0x00, // ICR: self, fixed, 0x41
        0x8a, 0x04, 0x25, 0x01, 0x60, 0x00, 0x00, // mov al, [0x6001]
        0x88, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, // mov [0x5000], al
        0xb8, 0x04, 0x00, 0x00, 0x00, // mov eax, 4
        0x44, 0x0f, 0x22, 0xc0, // mov cr8, rax (class 4 still held back)
        0x8a, 0x04, 0x25, 0x01, 0x60, 0x00, 0x00, // mov al, [0x6001]
        0x88, 0x04, 0x25, 0x01, 0x50, 0x00, 0x00, // mov [0x5001], al
        0xb8, 0x03, 0x00, 0x00, 0x00, // mov eax, 3
        0x44, 0x0f, 0x22, 0xc0, // mov cr8, rax (0x41 taken here)
        0x8a, 0x04, 0x25, 0x01, 0x60, 0x00, 0x00, // mov al, [0x6001]
        0x88, 0x04, 0x25, 0x02, 0x50, 0x00, 0x00, // mov [0x5002], al
        0xb8, 0x0f, 0x00, 0x00, 0x00, // mov eax, 15
        0x44, 0x0f, 0x22, 0xc0, // mov cr8, rax
        0xe6, 0x80, // out 0x80, al (userspace sends MSI 0x42)
        0x8a, 0x04, 0x25, 0x02, 0x60, 0x00, 0x00, // mov al, [0x6002]
        0x88, 0x04, 0x25, 0x03, 0x50, 0x00, 0x00, // mov [0x5003], al
        0x44, 0x0f, 0x20, 0xc0, // mov rax, cr8
        0x88, 0x04, 0x25, 0x04, 0x50, 0x00, 0x00, // mov [0x5004], al
        0xb8, 0x10, 0x00, 0x00, 0x00, // mov eax, 0x10
        0x44, 0x0f, 0x22, 0xc0, // mov cr8, rax: #GP(0) (intercepted while 0x42 waits)
        0x44, 0x0f, 0x20, 0xc0, // mov rax, cr8
        0x88, 0x04, 0x25, 0x11, 0x50, 0x00, 0x00, // mov [0x5011], al
        0x45, 0x31, 0xc9, // xor r9d, r9d
        0x45, 0x0f, 0x22, 0xc1, // mov cr8, r9 (0x42 taken here)
        0x8a, 0x04, 0x25, 0x02, 0x60, 0x00, 0x00, // mov al, [0x6002]
        0x88, 0x04, 0x25, 0x05, 0x50, 0x00, 0x00, // mov [0x5005], al
        0xe6, 0x82, 0xf4, // out 0x82, al; hlt
    ];
    g.ram.write(0x10000, main);
    // #GP handler at 0x9800: [0x5010] = the error code, [0x5012] += 1, skip the 4-byte
    // MOV CR8, iretq.
    #[rustfmt::skip]
    let gp: &[u8] = &[
        0x58, // pop rax (error code)
        0x88, 0x04, 0x25, 0x10, 0x50, 0x00, 0x00, // mov [0x5010], al
        0xfe, 0x04, 0x25, 0x12, 0x50, 0x00, 0x00, // inc byte [0x5012]
        0x48, 0x83, 0x04, 0x24, 0x04, // add qword [rsp], 4
        0x48, 0xcf, // iretq
    ];
    g.ram.write(0x9800, gp);
    let mut gate = [0u8; 16];
    gate[0..2].copy_from_slice(&0x9800u16.to_le_bytes());
    gate[2..4].copy_from_slice(&8u16.to_le_bytes());
    gate[5] = 0x8e;
    g.ram.write(0x7000 + 13 * 16, &gate);
    g.ram.write(0x5010, &[0xff, 0xff]);

    let port = run_to_out(&mut v)?;
    eq(
        port,
        Some(0x80),
        &format!("first exit (rip {:#x})", rip(&v)),
    )?;
    eq(g.ram.read(0x5000), 0, "0x41 held back under CR8 15")?;
    eq(g.ram.read(0x5001), 0, "0x41 held back under CR8 4")?;
    eq(
        g.ram.read(0x5002),
        1,
        "0x41 taken right after MOV CR8 lowered the TPR to 3",
    )?;
    let msi = kvm_bindings::kvm_msi {
        address_lo: 0xfee0_0000,
        data: 0x42,
        ..Default::default()
    };
    eq(
        g.vm.signal_msi(msi).map_err(|e| e.to_string()),
        Ok(1),
        "KVM_SIGNAL_MSI",
    )?;
    let port = run_to_out(&mut v)?;
    eq(
        port,
        Some(0x82),
        &format!("second exit (rip {:#x})", rip(&v)),
    )?;
    eq(g.ram.read(0x5003), 0, "MSI 0x42 held back under CR8 15")?;
    eq(g.ram.read(0x5004), 15, "MOV r, CR8 reads the TPR class")?;
    eq(
        g.ram.read(0x5005),
        1,
        "0x42 taken right after MOV CR8, r9 lowered the TPR to 0",
    )?;
    eq(g.ram.read(0x5010), 0, "#GP error code for CR8 0x10")?;
    eq(g.ram.read(0x5011), 15, "CR8 unchanged by the refused write")?;
    eq(g.ram.read(0x5012), 1, "one #GP")?;
    eq(g.ram.read(0x6000), 0, "vector 0x40 never sent")?;
    eq(g.ram.read(0x6001), 1, "vector 0x41 once")?;
    eq(g.ram.read(0x6002), 1, "vector 0x42 once")?;
    let lapic = v.get_lapic().map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
    eq(lapic.regs[0x80] as u8, 0, "LAPIC TPR")?;
    let sr = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    eq(sr.cr8, 0, "SREGS cr8")?;
    Ok(())
}

/// No in-kernel LAPIC: raising CR8 does not exit, lowering it is `KVM_EXIT_SET_TPR` after the
/// instruction with `kvm_run.cr8` the new value; `kvm_run.cr8` set by userspace before
/// `KVM_RUN` is what the guest reads.
fn userspace_lapic_set_tpr_exit() -> Result<(), String> {
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xb8, 0x05, 0x00, 0x00, 0x00, // 10000: mov eax, 5
        0x44, 0x0f, 0x22, 0xc0, // 10005: mov cr8, rax (raise: no exit)
        0xb8, 0x02, 0x00, 0x00, 0x00, // 10009: mov eax, 2
        0x44, 0x0f, 0x22, 0xc0, // 1000e: mov cr8, rax (lower: KVM_EXIT_SET_TPR)
        0x44, 0x0f, 0x20, 0xc0, // 10012: mov rax, cr8
        0x88, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, // 10016: mov [0x5000], al
        0x44, 0x0f, 0x22, 0xc0, // 1001d: mov cr8, rax (same value: no exit)
        0xb8, 0x01, 0x00, 0x00, 0x00, // 10021: mov eax, 1
        0x44, 0x0f, 0x22, 0xc0, // 10026: mov cr8, rax (lower: exit)
        0xe6, 0x80, // 1002a: out 0x80, al
        0xf4,
    ];
    let (g, mut v) = crate::run::long_mode_guest(code)?;
    v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
    eq(
        v.get_kvm_run().exit_reason,
        KVM_EXIT_SET_TPR,
        &format!("exit reason at rip {:#x}", rip(&v)),
    )?;
    eq(rip(&v), 0x10012, "RIP after the MOV CR8")?;
    eq(v.get_kvm_run().cr8, 2, "kvm_run.cr8")?;
    // Userspace's LAPIC changed the TPR: the guest reads it.
    v.get_kvm_run().cr8 = 9;
    v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
    eq(
        v.get_kvm_run().exit_reason,
        KVM_EXIT_SET_TPR,
        &format!("second exit reason at rip {:#x}", rip(&v)),
    )?;
    eq(rip(&v), 0x1002a, "RIP after the second lowering")?;
    eq(g.ram.read(0x5000), 9, "CR8 read after kvm_run.cr8 = 9")?;
    eq(v.get_kvm_run().cr8, 1, "kvm_run.cr8 after the second")?;
    let port = run_to_out(&mut v)?;
    eq(port, Some(0x80), "then the OUT")?;
    let sr = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    eq(sr.cr8, 1, "SREGS cr8")?;
    Ok(())
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("cr8_lowering_tpr_delivers_pending_irq_at_once", Any, |_| {
            with_svm(lowering_tpr_delivers_at_once)
        }),
        ("cr8_userspace_lapic_set_tpr_exit", Any, |_| {
            with_svm(userspace_lapic_set_tpr_exit)
        }),
    ]
}
