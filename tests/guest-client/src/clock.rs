// SPDX-License-Identifier: GPL-2.0-only
//! kvm-clock and the KVM PV interface (issue 12, `clock`): `KVM_GET/SET_CLOCK` (flags, bad
//! flags, `KVM_CLOCK_REALTIME`), a real-mode guest reading its pvclock record against
//! `KVM_GET_CLOCK` taken around the run (as upstream's kvm_clock_test), the wall-clock record,
//! the PV MSRs through `KVM_GET/SET_MSRS` (steal time's reserved bits, the steal-time record),
//! `KVM_CAP_ENFORCE_PV_FEATURE_CPUID` (#GP on a PV MSR, `-KVM_ENOSYS` from
//! `KVM_HC_SCHED_YIELD`) and `KVM_CAP_X86_DISABLE_EXITS(HLT)` (PV_UNHALT stripped, HLT stays in
//! the guest).
//!
//! Guests are real-mode code at the reset vector (see [`crate::run::Guest`]); data goes to RAM
//! at GPA 0 (DS base 0). Instruction bytes are commented.

use crate::run::Guest;
use crate::*;
use kvm_bindings::{kvm_clock_data, kvm_enable_cap, kvm_msr_entry, CpuId, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd};

const KVM_CAP_ADJUST_CLOCK: u64 = 39;
const KVM_CAP_X86_DISABLE_EXITS: u64 = 143;
const KVM_CAP_KVMCLOCK_CTRL: u64 = 76;
const KVM_KVMCLOCK_CTRL: u64 = 0xaead;
const KVM_CAP_ENFORCE_PV_FEATURE_CPUID: u32 = 190;
const KVM_CLOCK_TSC_STABLE: u32 = 2;
const KVM_CLOCK_REALTIME: u32 = 4;
const KVM_CLOCK_HOST_TSC: u32 = 8;
const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
const MSR_KVM_STEAL_TIME: u32 = 0x4b56_4d03;
const KVM_FEATURE_PV_UNHALT: u32 = 7;
const NSEC: u64 = 1_000_000_000;

/// Fails (not skips) where SVM is missing: the suite runs on QEMU `-cpu max`, which has it.
fn with_svm(f: fn() -> Result<(), String>) -> Result<(), String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if has("svm") && has("npt") {
        f()
    } else {
        Err("cannot run guests: no SVM with nested paging".into())
    }
}

fn supported_cpuid() -> Result<CpuId, String> {
    Kvm::new()
        .map_err(|e| format!("open: {e}"))?
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))
}

fn vcpu_with_cpuid(g: &Guest, cpuid: &CpuId) -> Result<VcpuFd, String> {
    let v = g.vcpu(0)?;
    v.set_cpuid2(cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    Ok(v)
}

/// Runs until an OUT and returns its port.
fn run_to_out(v: &mut VcpuFd) -> Result<u16, String> {
    match v.run().map_err(|e| format!("KVM_RUN: {e}"))? {
        VcpuExit::IoOut(port, _) => Ok(port),
        e => Err(format!("unexpected exit {e:?}")),
    }
}

fn ram_u64(g: &Guest, off: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = g.ram.read(off + i);
    }
    u64::from_le_bytes(b)
}

fn ram_u32(g: &Guest, off: usize) -> u32 {
    ram_u64(g, off) as u32
}

/// `pvclock_vcpu_time_info` read from guest RAM.
struct Pvti {
    version: u32,
    tsc_timestamp: u64,
    system_time: u64,
    mul: u32,
    shift: i8,
    flags: u8,
}

fn pvti(g: &Guest, off: usize) -> Pvti {
    Pvti {
        version: ram_u32(g, off),
        tsc_timestamp: ram_u64(g, off + 8),
        system_time: ram_u64(g, off + 16),
        mul: ram_u32(g, off + 24),
        shift: g.ram.read(off + 28) as i8,
        flags: g.ram.read(off + 29),
    }
}

/// `__pvclock_read_cycles`.
fn read_cycles(p: &Pvti, tsc: u64) -> u64 {
    let mut d = tsc.wrapping_sub(p.tsc_timestamp);
    if p.shift < 0 {
        d >>= -p.shift;
    } else {
        d <<= p.shift;
    }
    p.system_time
        .wrapping_add(((u128::from(d) * u128::from(p.mul)) >> 32) as u64)
}

fn real_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn clocksource_is_tsc() -> bool {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .map(|s| s.trim() == "tsc")
        .unwrap_or(false)
}

/// `KVM_CAP_ADJUST_CLOCK`, `KVM_GET/SET_CLOCK` without a running vCPU.
fn get_set_clock() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("open: {e}"))?;
    eq(
        kvm.check_extension_raw(KVM_CAP_ADJUST_CLOCK as _),
        (KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC) as i32,
        "KVM_CAP_ADJUST_CLOCK",
    )?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let c = vm.get_clock().map_err(|e| format!("KVM_GET_CLOCK: {e}"))?;
    // A new VM's clock starts at 0.
    check(c.clock < 5 * NSEC, "a new VM's kvm-clock is near 0")?;
    // No vCPU, so no master clock (upstream pvclock_update_vm_gtod_copy: the vCPUs must
    // match, `nr_vcpus_matched_tsc + 1 == online_vcpus`): no flags even with the TSC
    // clocksource. The master clock's flags after a vCPU ran: `guest_pvclock`.
    eq(c.flags, 0, "flags of a VM without vCPUs")?;
    // GET's output is valid SET input.
    vm.set_clock(&c)
        .map_err(|e| format!("SET_CLOCK(GET's output): {e}"))?;
    for bad in [1u32, 1 << 4, 1 << 31] {
        let d = kvm_clock_data {
            flags: bad,
            ..Default::default()
        };
        eq(
            vm.set_clock(&d).map_err(|e| e.errno()),
            Err(libc::EINVAL),
            "SET_CLOCK with an invalid flag",
        )?;
    }
    let d = kvm_clock_data {
        clock: 10 * NSEC,
        ..Default::default()
    };
    vm.set_clock(&d).map_err(|e| format!("SET_CLOCK: {e}"))?;
    let c = vm.get_clock().map_err(|e| format!("KVM_GET_CLOCK: {e}"))?;
    check(
        (10 * NSEC..11 * NSEC).contains(&c.clock),
        &format!("clock after SET 10 s: {}", c.clock),
    )?;
    // REALTIME: the clock moves forward by the real time since `realtime`.
    let d = kvm_clock_data {
        clock: 0,
        flags: KVM_CLOCK_REALTIME,
        realtime: real_ns() - 5 * NSEC,
        ..Default::default()
    };
    vm.set_clock(&d)
        .map_err(|e| format!("SET_CLOCK(REALTIME): {e}"))?;
    let c = vm.get_clock().map_err(|e| format!("KVM_GET_CLOCK: {e}"))?;
    check(
        (5 * NSEC..6 * NSEC).contains(&c.clock),
        &format!("clock after SET REALTIME -5 s: {}", c.clock),
    )?;
    // A realtime in the future never moves the clock back.
    let d = kvm_clock_data {
        clock: 7 * NSEC,
        flags: KVM_CLOCK_REALTIME,
        realtime: real_ns() + 100 * NSEC,
        ..Default::default()
    };
    vm.set_clock(&d)
        .map_err(|e| format!("SET_CLOCK(REALTIME future): {e}"))?;
    let c = vm.get_clock().map_err(|e| format!("KVM_GET_CLOCK: {e}"))?;
    check(
        (7 * NSEC..8 * NSEC).contains(&c.clock),
        &format!("clock after SET REALTIME +100 s: {}", c.clock),
    )
}

/// wrmsr(SYSTEM_TIME_NEW, 0x2001); out 0x10; loop { rdtsc; [0x3000] = edx:eax; out 0x11 }.
const PVCLOCK_GUEST: &[u8] = &[
    0x66, 0xb9, 0x01, 0x4d, 0x56, 0x4b, // mov ecx, 0x4b564d01
    0x66, 0xb8, 0x01, 0x20, 0x00, 0x00, // mov eax, 0x2001
    0x66, 0x31, 0xd2, // xor edx, edx
    0x0f, 0x30, // wrmsr
    0xe6, 0x10, // out 0x10, al
    0x0f, 0x31, // l: rdtsc
    0x66, 0xa3, 0x00, 0x30, // mov [0x3000], eax
    0x66, 0x89, 0x16, 0x04, 0x30, // mov [0x3004], edx
    0xe6, 0x11, // out 0x11, al
    0xeb, 0xf1, // jmp l
];

/// The guest's pvclock record against `KVM_GET_CLOCK` around runs, after `KVM_SET_CLOCK`s.
fn guest_pvclock() -> Result<(), String> {
    let g = Guest::new(PVCLOCK_GUEST, 0x10000)?;
    let mut v = vcpu_with_cpuid(&g, &supported_cpuid()?)?;
    eq(
        ioctl(v.as_raw_fd(), KVM_KVMCLOCK_CTRL, 0),
        Err(libc::EINVAL),
        "KVM_KVMCLOCK_CTRL before kvm-clock is on",
    )?;
    eq(run_to_out(&mut v)?, 0x10, "after WRMSR")?;
    // The MSR reads back from the host.
    let mut m = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_KVM_SYSTEM_TIME_NEW,
        ..Default::default()
    }])
    .map_err(|e| format!("{e:?}"))?;
    eq(
        v.get_msrs(&mut m).map_err(|e| e.to_string())?,
        1,
        "GET_MSRS count",
    )?;
    eq(m.as_slice()[0].data, 0x2001, "SYSTEM_TIME_NEW")?;
    let khz = u64::from(v.get_tsc_khz().map_err(|e| format!("GET_TSC_KHZ: {e}"))?);
    let cases: [(u64, Option<i64>); 3] = [(0, None), (1000 * NSEC, None), (0, Some(-5))];
    for (base, rt) in cases {
        if base != 0 || rt.is_some() {
            let d = kvm_clock_data {
                clock: base,
                flags: if rt.is_some() { KVM_CLOCK_REALTIME } else { 0 },
                realtime: rt.map_or(0, |s| (real_ns() as i64 + s * NSEC as i64) as u64),
                ..Default::default()
            };
            v_clock_set(&g, &d)?;
        }
        let start = g.vm.get_clock().map_err(|e| format!("GET_CLOCK: {e}"))?;
        eq(run_to_out(&mut v)?, 0x11, "after RDTSC")?;
        let end = g.vm.get_clock().map_err(|e| format!("GET_CLOCK: {e}"))?;
        let p = pvti(&g, 0x2000);
        check(
            p.version != 0 && p.version & 1 == 0,
            &format!("even version {}", p.version),
        )?;
        // One second of guest TSC ticks is one second of kvm-clock (±0.1%).
        let one_s = read_cycles(&p, p.tsc_timestamp + khz * 1000) - p.system_time;
        check(
            one_s.abs_diff(NSEC) < NSEC / 1000,
            &format!("scale: 1 s of TSC = {one_s} ns"),
        )?;
        // After the run (the first run turns the master clock on: the VM had no vCPU when it
        // was created).
        eq(
            p.flags & 1 != 0,
            end.flags & KVM_CLOCK_TSC_STABLE != 0,
            "PVCLOCK_TSC_STABLE_BIT as KVM_CLOCK_TSC_STABLE",
        )?;
        if clocksource_is_tsc() {
            let want = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;
            eq(
                end.flags,
                want,
                "flags with the TSC clocksource after a run",
            )?;
            check(
                end.realtime.abs_diff(real_ns()) < NSEC,
                "KVM_GET_CLOCK realtime is the host's",
            )?;
        }
        let seen = read_cycles(&p, ram_u64(&g, 0x3000));
        check(
            start.clock <= seen && seen <= end.clock,
            &format!(
                "guest kvm-clock {seen} outside [{}, {}] (base {base})",
                start.clock, end.clock
            ),
        )?;
    }
    // The host paused the guest: the next record says so.
    eq(
        Kvm::new()
            .map_err(|e| e.to_string())?
            .check_extension_raw(KVM_CAP_KVMCLOCK_CTRL as _),
        1,
        "KVM_CAP_KVMCLOCK_CTRL",
    )?;
    eq(
        ioctl(v.as_raw_fd(), KVM_KVMCLOCK_CTRL, 0),
        Ok(0),
        "KVM_KVMCLOCK_CTRL",
    )?;
    eq(run_to_out(&mut v)?, 0x11, "after RDTSC")?;
    check(
        pvti(&g, 0x2000).flags & 2 != 0,
        "PVCLOCK_GUEST_STOPPED after KVM_KVMCLOCK_CTRL",
    )?;
    Ok(())
}

fn v_clock_set(g: &Guest, d: &kvm_clock_data) -> Result<(), String> {
    g.vm.set_clock(d).map_err(|e| format!("SET_CLOCK: {e}"))
}

/// wrmsr(WALL_CLOCK_NEW, 0x2100); out 0x10; hlt.
const WALL_GUEST: &[u8] = &[
    0x66, 0xb9, 0x00, 0x4d, 0x56, 0x4b, // mov ecx, 0x4b564d00
    0x66, 0xb8, 0x00, 0x21, 0x00, 0x00, // mov eax, 0x2100
    0x66, 0x31, 0xd2, // xor edx, edx
    0x0f, 0x30, // wrmsr
    0xe6, 0x10, // out 0x10, al
    0xf4, // hlt
];

/// The wall-clock record, host MSR round trips, steal time.
fn wall_clock_and_steal_time() -> Result<(), String> {
    let g = Guest::new(WALL_GUEST, 0x10000)?;
    let mut v = vcpu_with_cpuid(&g, &supported_cpuid()?)?;
    // Steal time: reserved bits 5:1 make KVM_SET_MSRS stop at 0 entries.
    let st = |data: u64| {
        Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_KVM_STEAL_TIME,
            data,
            ..Default::default()
        }])
        .map_err(|e| format!("{e:?}"))
    };
    eq(
        v.set_msrs(&st(0x2200 | 0x3e)?).map_err(|e| e.to_string())?,
        0,
        "STEAL_TIME with reserved bits",
    )?;
    eq(
        v.set_msrs(&st(0x2200 | 1)?).map_err(|e| e.to_string())?,
        1,
        "STEAL_TIME enabled",
    )?;
    // Junk in the record's version: made even first.
    g.ram.write(0x2208, &7u32.to_le_bytes());
    eq(run_to_out(&mut v)?, 0x10, "after WRMSR")?;
    let ver = ram_u32(&g, 0x2100);
    check(
        ver != 0 && ver & 1 == 0,
        &format!("wall clock version {ver}"),
    )?;
    let sec = u64::from(ram_u32(&g, 0x2104));
    let nsec = ram_u32(&g, 0x2108);
    check(nsec < 1_000_000_000, "wall clock nsec")?;
    // The epoch: the host's real time minus the VM's kvm-clock.
    let now = g.vm.get_clock().map_err(|e| format!("GET_CLOCK: {e}"))?;
    let epoch = (real_ns() - now.clock) / NSEC;
    check(
        sec.abs_diff(epoch & 0xffff_ffff) <= 2,
        &format!("wall clock {sec} s, epoch {epoch} s"),
    )?;
    // 7 is evened to 8, then +2 per record (more than one when the thread waited for a CPU
    // between entries).
    let stv = ram_u32(&g, 0x2208);
    check(
        stv >= 10 && stv & 1 == 0,
        &format!("steal-time version {stv}"),
    )?;
    eq(g.ram.read(0x2210), 0, "preempted")?;
    // The wall-clock MSR is the VM's.
    let mut m = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_KVM_WALL_CLOCK_NEW,
        ..Default::default()
    }])
    .map_err(|e| format!("{e:?}"))?;
    eq(
        v.get_msrs(&mut m).map_err(|e| e.to_string())?,
        1,
        "GET_MSRS",
    )?;
    eq(m.as_slice()[0].data, 0x2100, "WALL_CLOCK_NEW")?;
    // Every PV MSR of the index list saves and restores.
    let list = Kvm::new()
        .map_err(|e| e.to_string())?
        .get_msr_index_list()
        .map_err(|e| format!("GET_MSR_INDEX_LIST: {e}"))?;
    for idx in [
        0x11,
        0x12,
        MSR_KVM_WALL_CLOCK_NEW,
        MSR_KVM_SYSTEM_TIME_NEW,
        MSR_KVM_STEAL_TIME,
    ] {
        check(
            list.as_slice().contains(&idx),
            &format!("{idx:#x} in the MSR index list"),
        )?;
    }
    Ok(())
}

/// rdmsr(SYSTEM_TIME_NEW); out 0x12; hlt — with a real-mode #GP handler at 0x500 doing
/// `out 0x13; hlt`.
const RDMSR_GUEST: &[u8] = &[
    0x66, 0xb9, 0x01, 0x4d, 0x56, 0x4b, // mov ecx, 0x4b564d01
    0x0f, 0x32, // rdmsr
    0xe6, 0x12, // out 0x12, al
    0xf4, // hlt
];

/// eax = KVM_HC_SCHED_YIELD; vmmcall; [0x3000] = eax; out 0x14; hlt.
const YIELD_GUEST: &[u8] = &[
    0x66, 0xb8, 0x0b, 0x00, 0x00, 0x00, // mov eax, 11
    0x66, 0x31, 0xdb, // xor ebx, ebx
    0x0f, 0x01, 0xd9, // vmmcall
    0x66, 0xa3, 0x00, 0x30, // mov [0x3000], eax
    0xe6, 0x14, // out 0x14, al
    0xf4, // hlt
];

/// A guest with the #GP handler in its IVT, the vCPU's CPUID with the KVM features leaf
/// cleared, and `KVM_CAP_ENFORCE_PV_FEATURE_CPUID` as `enforce` says.
fn pv_guest(code: &[u8], enforce: bool) -> Result<(Guest, VcpuFd), String> {
    let g = Guest::new(code, 0x10000)?;
    // IVT[13] = 0000:0500; handler: out 0x13, al; hlt.
    g.ram.write(13 * 4, &[0x00, 0x05, 0x00, 0x00]);
    g.ram.write(0x500, &[0xe6, 0x13, 0xf4]);
    let v = g.vcpu(0)?;
    if enforce {
        let cap = kvm_enable_cap {
            cap: KVM_CAP_ENFORCE_PV_FEATURE_CPUID,
            args: [1, 0, 0, 0],
            ..Default::default()
        };
        v.enable_cap(&cap)
            .map_err(|e| format!("ENABLE_CAP(ENFORCE_PV): {e}"))?;
    }
    let mut c = supported_cpuid()?;
    for e in c.as_mut_slice() {
        if e.function == 0x4000_0001 {
            e.eax = 0;
        }
    }
    v.set_cpuid2(&c)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    Ok((g, v))
}

/// Enforcement: PV MSRs #GP and PV hypercalls return -KVM_ENOSYS once the KVM features leaf is
/// empty; without enforcement both work.
fn enforce_pv_cpuid() -> Result<(), String> {
    let (_g, mut v) = pv_guest(RDMSR_GUEST, true)?;
    eq(
        run_to_out(&mut v)?,
        0x13,
        "RDMSR under enforcement (#GP handler)",
    )?;
    let (_g, mut v) = pv_guest(RDMSR_GUEST, false)?;
    eq(run_to_out(&mut v)?, 0x12, "RDMSR without enforcement")?;
    let (g, mut v) = pv_guest(YIELD_GUEST, true)?;
    eq(run_to_out(&mut v)?, 0x14, "VMMCALL")?;
    eq(
        ram_u32(&g, 0x3000),
        (-1000i32) as u32,
        "SCHED_YIELD under enforcement: -KVM_ENOSYS",
    )?;
    let (g, mut v) = pv_guest(YIELD_GUEST, false)?;
    eq(run_to_out(&mut v)?, 0x14, "VMMCALL")?;
    eq(ram_u32(&g, 0x3000), 0, "SCHED_YIELD without enforcement")
}

/// hlt; out 0x12; hlt.
const HLT_GUEST: &[u8] = &[
    0xf4, // hlt
    0xe6, 0x12, // out 0x12, al
    0xf4, // hlt
];

/// `KVM_CAP_X86_DISABLE_EXITS(HLT)`: PV_UNHALT leaves the vCPU's CPUID; HLT stays in the
/// guest (it resumes on the next host interrupt and reaches the OUT).
fn disable_hlt_exits() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("open: {e}"))?;
    eq(
        kvm.check_extension_raw(KVM_CAP_X86_DISABLE_EXITS as _),
        0xe,
        "KVM_CAP_X86_DISABLE_EXITS",
    )?;
    let g = Guest::new(HLT_GUEST, 0x10000)?;
    let mut v = g.vcpu(0)?;
    let cap = |a: u64| kvm_enable_cap {
        cap: KVM_CAP_X86_DISABLE_EXITS as u32,
        args: [a, 0, 0, 0],
        ..Default::default()
    };
    eq(
        g.vm.enable_cap(&cap(1 << 4)).map_err(|e| e.errno()),
        Err(libc::EINVAL),
        "invalid exit bit",
    )?;
    g.vm.enable_cap(&cap(2))
        .map_err(|e| format!("DISABLE_EXITS(HLT): {e}"))?;
    let mut c = supported_cpuid()?;
    for e in c.as_mut_slice() {
        if e.function == 0x4000_0001 {
            e.eax |= 1 << KVM_FEATURE_PV_UNHALT;
        }
    }
    v.set_cpuid2(&c)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    let got = v
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_CPUID2: {e}"))?;
    let f = got
        .as_slice()
        .iter()
        .find(|e| e.function == 0x4000_0001)
        .map(|e| e.eax)
        .unwrap_or(0);
    eq(f & (1 << KVM_FEATURE_PV_UNHALT), 0, "PV_UNHALT stripped")?;
    eq(run_to_out(&mut v)?, 0x12, "HLT in the guest, then OUT")?;
    Ok(())
}

/// wrmsr(STEAL_TIME, 0x2202 | 1): reserved bit 1 -> #GP (handler at 0x500: out 0x13).
const STEAL_RESERVED_GUEST: &[u8] = &[
    0x66, 0xb9, 0x03, 0x4d, 0x56, 0x4b, // mov ecx, 0x4b564d03
    0x66, 0xb8, 0x03, 0x22, 0x00, 0x00, // mov eax, 0x2203
    0x66, 0x31, 0xd2, // xor edx, edx
    0x0f, 0x30, // wrmsr
    0xe6, 0x12, // out 0x12, al
    0xf4, // hlt
];

/// PV records at addresses that are not RAM, or that cross a page, are accepted by the MSRs
/// and never written (upstream's caches refuse them); a guest's reserved steal-time bits #GP.
fn hostile_pv_addresses() -> Result<(), String> {
    let g = Guest::new(&[0xf4], 0x10000)?;
    let mut v = vcpu_with_cpuid(&g, &supported_cpuid()?)?;
    let set = |v: &VcpuFd, index: u32, data: u64| {
        Msrs::from_entries(&[kvm_msr_entry {
            index,
            data,
            ..Default::default()
        }])
        .map_err(|e| format!("{e:?}"))
        .and_then(|m| v.set_msrs(&m).map_err(|e| e.to_string()))
    };
    for (index, data) in [
        (MSR_KVM_SYSTEM_TIME_NEW, 0xfff1u64),
        (MSR_KVM_SYSTEM_TIME_NEW, (1 << 52) | 1),
        (MSR_KVM_STEAL_TIME, 0xdead_0000_0000 | 1),
        (MSR_KVM_WALL_CLOCK_NEW, 0x7fff_ffff_f000),
    ] {
        eq(
            set(&v, index, data)?,
            1,
            &format!("SET_MSRS {index:#x} = {data:#x}"),
        )?;
    }
    // The page-crossing pvclock was never written.
    eq(set(&v, MSR_KVM_SYSTEM_TIME_NEW, 0xfff1)?, 1, "SET_MSRS")?;
    match v.run().map_err(|e| format!("KVM_RUN: {e}"))? {
        VcpuExit::Hlt => {}
        e => return Err(format!("unexpected exit {e:?}")),
    }
    for off in 0xfff0..0x10000 {
        eq(g.ram.read(off), 0, "page-crossing record untouched")?;
    }
    // A wall-clock record may cross a page (upstream kvm_write_guest): written whole.
    eq(
        set(&v, MSR_KVM_WALL_CLOCK_NEW, 0xeffc)?,
        1,
        "SET_MSRS WALL_CLOCK_NEW",
    )?;
    let ver = ram_u32(&g, 0xeffc);
    check(
        ver != 0 && ver & 1 == 0,
        &format!("crossing wall clock version {ver}"),
    )?;
    check(ram_u32(&g, 0xf000) != 0, "crossing wall clock seconds")?;
    let (_g, mut v) = pv_guest(STEAL_RESERVED_GUEST, false)?;
    eq(
        run_to_out(&mut v)?,
        0x13,
        "guest STEAL_TIME with a reserved bit: #GP",
    )
}

/// Four vCPU threads enable kvm-clock and loop reading it while the main thread moves the
/// clock with `KVM_SET_CLOCK` and reads it back: every run exits where the guest says, every
/// ioctl succeeds, and the kernel stays quiet (lockdep, KASAN).
fn set_clock_races_running_vcpus() -> Result<(), String> {
    let g = Guest::new(PVCLOCK_GUEST, 0x10000)?;
    let cpuid = supported_cpuid()?;
    let mut vcpus = Vec::new();
    for id in 0..4 {
        let v = g.vcpu(id)?;
        v.set_cpuid2(&cpuid)
            .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
        vcpus.push(v);
    }
    std::thread::scope(|s| {
        let runners: Vec<_> = vcpus
            .into_iter()
            .map(|mut v| {
                s.spawn(move || -> Result<(), String> {
                    eq(run_to_out(&mut v)?, 0x10, "after WRMSR")?;
                    for _ in 0..300 {
                        eq(run_to_out(&mut v)?, 0x11, "after RDTSC")?;
                    }
                    Ok(())
                })
            })
            .collect();
        for i in 0..300u64 {
            let d = kvm_clock_data {
                clock: i * NSEC,
                flags: if i % 2 == 0 { KVM_CLOCK_REALTIME } else { 0 },
                realtime: real_ns(),
                ..Default::default()
            };
            g.vm.set_clock(&d).map_err(|e| format!("SET_CLOCK: {e}"))?;
            g.vm.get_clock().map_err(|e| format!("GET_CLOCK: {e}"))?;
        }
        for r in runners {
            r.join().map_err(|_| "vCPU thread panicked".to_string())??;
        }
        Ok(())
    })
}

/// KVM_HC_CLOCK_PAIRING(0x3100, WALLCLOCK) -> [0x3000]; (…, type 1) -> [0x3004];
/// rdtsc -> [0x3008]; out 0x14; hlt.
const PAIRING_GUEST: &[u8] = &[
    0x66, 0xb8, 0x09, 0x00, 0x00, 0x00, // mov eax, 9
    0x66, 0xbb, 0x00, 0x31, 0x00, 0x00, // mov ebx, 0x3100
    0x66, 0x31, 0xc9, // xor ecx, ecx
    0x0f, 0x01, 0xd9, // vmmcall
    0x66, 0xa3, 0x00, 0x30, // mov [0x3000], eax
    0x66, 0xb8, 0x09, 0x00, 0x00, 0x00, // mov eax, 9
    0x66, 0xb9, 0x01, 0x00, 0x00, 0x00, // mov ecx, 1
    0x0f, 0x01, 0xd9, // vmmcall
    0x66, 0xa3, 0x04, 0x30, // mov [0x3004], eax
    0x0f, 0x31, // rdtsc
    0x66, 0xa3, 0x08, 0x30, // mov [0x3008], eax
    0x66, 0x89, 0x16, 0x0c, 0x30, // mov [0x300c], edx
    0xe6, 0x14, // out 0x14, al
    0xf4, // hlt
];

/// `KVM_HC_CLOCK_PAIRING`: the host's real time and the guest TSC of one reading (with the TSC
/// as host clocksource), `-KVM_EOPNOTSUPP` for another clock type.
fn clock_pairing() -> Result<(), String> {
    let g = Guest::new(PAIRING_GUEST, 0x10000)?;
    let mut v = vcpu_with_cpuid(&g, &supported_cpuid()?)?;
    eq(run_to_out(&mut v)?, 0x14, "after the hypercalls")?;
    eq(
        ram_u32(&g, 0x3004),
        (-95i32) as u32,
        "clock type 1: -KVM_EOPNOTSUPP",
    )?;
    if !clocksource_is_tsc() {
        eq(ram_u32(&g, 0x3000), (-95i32) as u32, "no TSC clocksource")?;
        return Ok(());
    }
    eq(ram_u32(&g, 0x3000), 0, "KVM_HC_CLOCK_PAIRING")?;
    let sec = ram_u64(&g, 0x3100);
    let nsec = ram_u64(&g, 0x3108);
    let tsc = ram_u64(&g, 0x3110);
    check(nsec < NSEC, "nsec")?;
    check(
        sec.abs_diff(real_ns() / NSEC) <= 2,
        &format!("pairing sec {sec} vs now"),
    )?;
    let later = ram_u64(&g, 0x3008);
    check(
        tsc != 0 && tsc <= later,
        &format!("pairing TSC {tsc} before the guest's later RDTSC {later}"),
    )
}

/// wrmsr(MSR_KVM_SYSTEM_TIME, 0x2001) (the legacy MSR); out 0x10; hlt.
const OLD_MSR_GUEST: &[u8] = &[
    0x66, 0xb9, 0x12, 0x00, 0x00, 0x00, // mov ecx, 0x12
    0x66, 0xb8, 0x01, 0x20, 0x00, 0x00, // mov eax, 0x2001
    0x66, 0x31, 0xd2, // xor edx, edx
    0x0f, 0x30, // wrmsr
    0xe6, 0x10, // out 0x10, al
    0xf4, // hlt
];

/// vCPU 0 on the legacy kvm-clock MSR turns the master clock off (upstream
/// `boot_vcpu_runs_old_kvmclock`): no `KVM_CLOCK_TSC_STABLE`, no stable bit in the record.
fn legacy_msr_disables_master_clock() -> Result<(), String> {
    let g = Guest::new(OLD_MSR_GUEST, 0x10000)?;
    let mut v = vcpu_with_cpuid(&g, &supported_cpuid()?)?;
    eq(run_to_out(&mut v)?, 0x10, "after WRMSR")?;
    let c = g.vm.get_clock().map_err(|e| format!("GET_CLOCK: {e}"))?;
    eq(c.flags & KVM_CLOCK_TSC_STABLE, 0, "KVM_CLOCK_TSC_STABLE")?;
    match v.run().map_err(|e| format!("KVM_RUN: {e}"))? {
        VcpuExit::Hlt => {}
        e => return Err(format!("unexpected exit {e:?}")),
    }
    let p = pvti(&g, 0x2000);
    check(p.version != 0 && p.version & 1 == 0, "record written")?;
    eq(p.flags & 1, 0, "PVCLOCK_TSC_STABLE_BIT with the legacy MSR")
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("clock_get_set_clock_flags_and_realtime", Any, |_| {
            get_set_clock()
        }),
        ("clock_guest_pvclock_within_get_clock", Any, |_| {
            with_svm(guest_pvclock)
        }),
        ("clock_wall_clock_steal_time_and_msrs", Any, |_| {
            with_svm(wall_clock_and_steal_time)
        }),
        ("clock_enforce_pv_cpuid_gp_and_enosys", Any, |_| {
            with_svm(enforce_pv_cpuid)
        }),
        ("clock_disable_hlt_exits_and_pv_unhalt", Any, |_| {
            with_svm(disable_hlt_exits)
        }),
        ("clock_hostile_pv_addresses_are_ignored", Any, |_| {
            with_svm(hostile_pv_addresses)
        }),
        (
            "clock_legacy_msr_on_vcpu0_disables_master_clock",
            Any,
            |_| with_svm(legacy_msr_disables_master_clock),
        ),
        ("clock_hypercall_clock_pairing", Any, |_| {
            with_svm(clock_pairing)
        }),
        ("clock_set_clock_races_four_running_vcpus", Any, |_| {
            with_svm(set_clock_races_running_vcpus)
        }),
    ]
}
