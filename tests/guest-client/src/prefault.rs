// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_PRE_FAULT_MEMORY`: shared memory through GUP that follows the host mm (MMU notifier),
//! private memory from guest_memfd with punch-hole and conversion, the TD rule before
//! FINALIZE, hostile input and races — upstream 6.12's errnos and progress write-back.

use super::memory::*;
use crate::*;
use std::sync::Arc;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub(crate) struct PreFault {
    pub(crate) gpa: u64,
    pub(crate) size: u64,
    flags: u64,
    padding: [u64; 5],
}

fn pre_fault_raw(vcpu: i32, arg: u64) -> Result<i64, i32> {
    ioctl(vcpu, iowr(0xd5, 64), arg)
}

/// `KVM_PRE_FAULT_MEMORY`: the result and the range as the kernel left it.
pub(crate) fn pre_fault(
    vcpu: &OwnedFd,
    gpa: u64,
    size: u64,
    flags: u64,
) -> (Result<i64, i32>, PreFault) {
    let mut r = PreFault {
        gpa,
        size,
        flags,
        ..Default::default()
    };
    let res = pre_fault_raw(vcpu.as_raw_fd(), &mut r as *mut PreFault as u64);
    (res, r)
}

pub(crate) fn create_vcpu(vm: &OwnedFd, id: u64) -> Result<OwnedFd, String> {
    ioctl(vm.as_raw_fd(), io(0x41), id)
        .map(|fd| {
            // SAFETY: a fresh vCPU fd, owned from now on.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        })
        .map_err(|e| format!("KVM_CREATE_VCPU: errno {e}"))
}

/// One statistic of the VM's binary stats fd, by name.
pub(crate) fn vm_stat(vm: &OwnedFd, name: &str) -> Result<u64, String> {
    let fd = ioctl(vm.as_raw_fd(), io(0xce), 0).map_err(|e| format!("GET_STATS_FD: errno {e}"))?;
    // SAFETY: a fresh stats fd, owned from now on.
    let f = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let read = |off: u64, len: usize| -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; len];
        // SAFETY: valid buffer of `len` bytes.
        let n = unsafe { libc::pread(f.as_raw_fd(), b.as_mut_ptr().cast(), len, off as i64) };
        if n as usize != len {
            return Err(format!("stats pread at {off}: {n}"));
        }
        Ok(b)
    };
    let h = read(0, 24)?;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let (name_size, num_desc) = (u32_at(&h, 4) as usize, u32_at(&h, 8) as usize);
    let (desc_off, data_off) = (u32_at(&h, 16) as u64, u32_at(&h, 20) as u64);
    let desc_size = 16 + name_size;
    let descs = read(desc_off, desc_size * num_desc)?;
    for i in 0..num_desc {
        let d = &descs[i * desc_size..(i + 1) * desc_size];
        let n = &d[16..];
        let n = &n[..n.iter().position(|&c| c == 0).unwrap_or(n.len())];
        if n == name.as_bytes() {
            let off = u32_at(d, 8) as u64;
            let v = read(data_off + off, 8)?;
            return Ok(u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
        }
    }
    Err(format!("no statistic {name}"))
}

/// Pages mapped in the shared root, counted at 4 KiB.
fn shared_pages(vm: &OwnedFd) -> Result<u64, String> {
    Ok(vm_stat(vm, "shared_pages_4k")? + 512 * vm_stat(vm, "shared_pages_2m")?)
}

fn madvise_dontneed(addr: u64, len: u64) -> Result<(), String> {
    // SAFETY: a range of the test's own mapping.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, libc::MADV_DONTNEED) };
    check(r == 0, "madvise")
}

fn prefault_maps_shared_memory_and_follows_the_host_mm() -> Result<(), String> {
    let vm = vm_of(0)?;
    let mem = Anon::new(2 * MB);
    eq(region2(&vm, slot(0, 0, 2 * MB, mem.hva())), Ok(0), "slot")?;
    let vcpu = create_vcpu(&vm, 0)?;
    eq(shared_pages(&vm)?, 0, "nothing mapped yet")?;
    let (r, range) = pre_fault(&vcpu, 0, 2 * MB, 0);
    eq(r, Ok(0), "pre-fault 2 MiB")?;
    eq(
        (range.gpa, range.size),
        (2 * MB, 0),
        "progress written back",
    )?;
    eq(shared_pages(&vm)?, 512, "512 pages mapped")?;
    let (r, _) = pre_fault(&vcpu, 0, 2 * MB, 0);
    eq(r, Ok(0), "again: already mapped")?;
    eq(shared_pages(&vm)?, 512, "still 512")?;
    // The host takes the pages back: the shared root must follow (MMU notifier).
    madvise_dontneed(mem.hva(), MB)?;
    eq(
        shared_pages(&vm)?,
        256,
        "MADV_DONTNEED of 1 MiB zaps 256 pages",
    )?;
    let (r, _) = pre_fault(&vcpu, 0, MB, 0);
    eq(r, Ok(0), "pre-fault after DONTNEED")?;
    eq(shared_pages(&vm)?, 512, "re-mapped")?;
    drop(mem);
    eq(shared_pages(&vm)?, 0, "munmap zaps everything")?;
    let (r, range) = pre_fault(&vcpu, 0, PS, 0);
    eq(r, Err(EFAULT), "pre-fault of an unmapped HVA")?;
    eq(range.size, PS, "no progress")?;
    // Deleting the slot zaps it too.
    let mem = Anon::new(2 * MB);
    eq(
        region2(&vm, slot(1, 4 * MB, 2 * MB, mem.hva())),
        Ok(0),
        "second slot",
    )?;
    eq(pre_fault(&vcpu, 4 * MB, 2 * MB, 0).0, Ok(0), "pre-fault it")?;
    eq(shared_pages(&vm)?, 512, "mapped")?;
    eq(
        region2(&vm, slot(1, 8 * MB, 2 * MB, mem.hva())),
        Ok(0),
        "move",
    )?;
    eq(shared_pages(&vm)?, 0, "a move zaps the old range")?;
    eq(
        pre_fault(&vcpu, 8 * MB, 2 * MB, 0).0,
        Ok(0),
        "pre-fault the new range",
    )?;
    eq(region2(&vm, slot(1, 0, 0, 0)), Ok(0), "delete")?;
    eq(shared_pages(&vm)?, 0, "a delete zaps")?;
    drop(vcpu);
    drop(vm);
    drop(mem);
    counts_are_zero()
}

fn prefault_hostile_input() -> Result<(), String> {
    let vm = vm_of(0)?;
    let mem = Anon::new(MB);
    eq(region2(&vm, slot(0, 0, MB, mem.hva())), Ok(0), "slot")?;
    let vcpu = create_vcpu(&vm, 0)?;
    let v = vcpu.as_raw_fd();
    eq(pre_fault(&vcpu, 0, PS, 1).0, Err(EINVAL), "flags")?;
    eq(
        pre_fault(&vcpu, 0x800, PS, 0).0,
        Err(EINVAL),
        "gpa not aligned",
    )?;
    eq(
        pre_fault(&vcpu, 0, 0x800, 0).0,
        Err(EINVAL),
        "size not aligned",
    )?;
    eq(pre_fault(&vcpu, 0, 0, 0).0, Err(EINVAL), "size 0")?;
    eq(pre_fault(&vcpu, !0xfff, 2 * PS, 0).0, Err(EINVAL), "wraps")?;
    eq(pre_fault_raw(v, 0), Err(EFAULT), "NULL")?;
    eq(
        pre_fault_raw(v, 0xffff_8000_0000_0000),
        Err(EFAULT),
        "kernel pointer",
    )?;
    let (r, range) = pre_fault(&vcpu, 16 * MB, PS, 0);
    eq(r, Err(libc::ENOENT), "no memslot")?;
    eq((range.gpa, range.size), (16 * MB, PS), "range untouched")?;
    let (r, range) = pre_fault(&vcpu, MB - 2 * PS, 4 * PS, 0);
    eq(
        r,
        Ok(0),
        "partly outside the slot: success for what was mapped",
    )?;
    eq((range.gpa, range.size), (MB, 2 * PS), "leftover")?;
    eq(
        ioctl(vm.as_raw_fd(), iowr(0xd5, 64), 0),
        Err(ENOTTY),
        "on a VM fd",
    )?;
    // A read-only argument: the pages are mapped, the write-back fails.
    // SAFETY: a fresh read-only anonymous page.
    let ro = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PS as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    check(ro != libc::MAP_FAILED, "mmap")?;
    let arg = PreFault {
        gpa: 0,
        size: PS,
        ..Default::default()
    };
    // SAFETY: `ro` is a fresh page of ours, big enough; then made read-only.
    unsafe {
        std::ptr::write(ro.cast::<PreFault>(), arg);
        libc::mprotect(ro, PS as usize, libc::PROT_READ);
    }
    eq(
        pre_fault_raw(v, ro as u64),
        Err(EFAULT),
        "read-only argument",
    )?;
    // SAFETY: the page mapped above.
    unsafe { libc::munmap(ro, PS as usize) };
    Ok(())
}

fn prefault_private_memory_sw_protected() -> Result<(), String> {
    let vm = vm_of(SWP)?;
    let mem = Anon::new(4 * MB);
    let fd = gmem(&vm, 4 * MB, 0).map_err(|e| format!("gmem: errno {e}"))?;
    let r = Region2 {
        flags: GUEST_MEMFD,
        gmem: fd.as_raw_fd() as u32,
        ..slot(0, 0, 4 * MB, mem.hva())
    };
    eq(region2(&vm, r), Ok(0), "slot")?;
    let vcpu = create_vcpu(&vm, 0)?;
    let a = |address, size, attributes| Attrs {
        address,
        size,
        attributes,
        flags: 0,
    };
    eq(attrs(&vm, a(0, 4 * MB, PRIVATE)), Ok(0), "PRIVATE")?;
    let (r, range) = pre_fault(&vcpu, 0, 4 * MB, 0);
    eq(r, Ok(0), "pre-fault private")?;
    eq(range.size, 0, "all of it")?;
    eq(
        shared_pages(&vm)?,
        1024,
        "4 MiB mapped (one root holds both kinds here)",
    )?;
    let huge = vm_stat(&vm, "shared_pages_2m")?;
    check(huge <= 2, "at most two 2 MiB leaves")?;
    // A hole in a 2 MiB page: the private mappings of the hole go.
    eq(
        fallocate(&fd, KEEP | PUNCH, 0, 2 * MB),
        Ok(()),
        "punch 2 MiB",
    )?;
    eq(shared_pages(&vm)?, 512, "the hole is unmapped")?;
    // Converting the rest to shared zaps its private mappings; shared pre-faults use the HVA.
    eq(attrs(&vm, a(2 * MB, 2 * MB, 0)), Ok(0), "to shared")?;
    eq(shared_pages(&vm)?, 0, "conversion zaps")?;
    eq(
        pre_fault(&vcpu, 2 * MB, 2 * MB, 0).0,
        Ok(0),
        "pre-fault shared",
    )?;
    eq(
        vm_stat(&vm, "shared_pages_4k")?,
        512,
        "shared memory at 4 KiB",
    )?;
    // Private access to a slot without guest_memfd: EFAULT (upstream's memory-fault exit).
    eq(
        region2(&vm, slot(1, 8 * MB, MB, mem.hva())),
        Ok(0),
        "plain slot",
    )?;
    eq(attrs(&vm, a(8 * MB, MB, PRIVATE)), Ok(0), "PRIVATE over it")?;
    eq(
        pre_fault(&vcpu, 8 * MB, PS, 0).0,
        Err(EFAULT),
        "private without guest_memfd",
    )?;
    // The guest_memfd closed: its private pages cannot be faulted any more.
    eq(attrs(&vm, a(0, 2 * MB, PRIVATE)), Ok(0), "PRIVATE again")?;
    drop(fd);
    eq(
        pre_fault(&vcpu, 0, PS, 0).0,
        Err(EFAULT),
        "guest_memfd closed",
    )?;
    drop(vcpu);
    drop(vm);
    drop(mem);
    counts_are_zero()
}

fn prefault_td_before_finalize_is_eopnotsupp() -> Result<(), String> {
    let td = vm_of(KVM_X86_TDX_VM)?;
    // A TD's vCPUs come after INIT_VM (EIO before).
    crate::tdx_vm::init_vm_default(td.as_raw_fd())?;
    let mem = Anon::new(MB);
    eq(region2(&td, slot(0, 0, MB, mem.hva())), Ok(0), "slot")?;
    let vcpu = create_vcpu(&td, 0)?;
    eq(
        pre_fault(&vcpu, 0, PS, 1).0,
        Err(EINVAL),
        "flags are checked first",
    )?;
    let (r, range) = pre_fault(&vcpu, 0, PS, 0);
    eq(r, Err(libc::EOPNOTSUPP), "before FINALIZE")?;
    eq(range.size, PS, "no progress")?;
    drop(vcpu);
    drop(td);
    drop(mem);
    counts_are_zero()
}

/// Pre-faults, conversions, hole punches and memslot changes race on one VM (a TD: finalised,
/// so its pre-faults map: SEPT.ADD + PAGE.AUG against BLOCK/TRACK/REMOVE).
fn prefault_races(ty: u64) -> Result<(), String> {
    let vm = Arc::new(vm_of(ty)?);
    if ty == KVM_X86_TDX_VM {
        crate::tdx_vm::init_vm_default(vm.as_raw_fd())?;
    }
    let mem = Anon::new(8 * MB);
    let hva = mem.hva();
    let fd = Arc::new(gmem(&vm, 8 * MB, 0).map_err(|e| format!("gmem: errno {e}"))?);
    let r = Region2 {
        flags: GUEST_MEMFD,
        gmem: fd.as_raw_fd() as u32,
        ..slot(0, 0, 4 * MB, hva)
    };
    eq(region2(&vm, r), Ok(0), "slot")?;
    let vcpus: Vec<Arc<OwnedFd>> = (0..2)
        .map(|id| create_vcpu(&vm, id).map(Arc::new))
        .collect::<Result<_, _>>()?;
    if ty == KVM_X86_TDX_VM {
        crate::tdx_vm::init_vcpus(&[&vcpus[0], &vcpus[1]])?;
        crate::tdx_vm::finalize(vm.as_raw_fd())?;
    }
    let mut threads = Vec::new();
    for t in 0..5u64 {
        let (vm, fd, vcpus) = (vm.clone(), fd.clone(), vcpus.clone());
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            for i in 0..150u64 {
                match t {
                    0 | 1 => {
                        let gpa = (i % 8) * MB;
                        match pre_fault(&vcpus[t as usize], gpa, MB, 0).0 {
                            Ok(_) | Err(libc::ENOENT) | Err(libc::EFAULT) => {}
                            Err(e) => return Err(format!("pre-fault: errno {e}")),
                        }
                    }
                    2 => {
                        convert(&vm, (i % 4) * MB, 2 * MB, i.is_multiple_of(2))?;
                    }
                    3 => {
                        let off = (i % 4) * MB;
                        fallocate(&fd, KEEP | PUNCH, off, MB)
                            .map_err(|e| format!("punch: errno {e}"))?;
                    }
                    _ => {
                        let r = slot(1, 4 * MB, 4 * MB, hva + 4 * MB);
                        region2(&vm, r).map_err(|e| format!("create: errno {e}"))?;
                        madvise_dontneed(hva + 4 * MB + (i % 4) * MB, MB)?;
                        region2(&vm, slot(1, 0, 0, 0)).map_err(|e| format!("delete: errno {e}"))?;
                    }
                }
            }
            Ok(())
        }));
    }
    let mut r = Ok(());
    for t in threads {
        let x = t
            .join()
            .map_err(|_| "thread panicked".to_string())
            .and_then(|x| x);
        if r.is_ok() {
            r = x;
        }
    }
    r?;
    drop(vcpus);
    drop(vm);
    drop(fd);
    drop(mem);
    counts_are_zero()
}

/// The tests of this area.
pub(crate) fn tests() -> Vec<Test> {
    vec![
        (
            "prefault_maps_shared_memory_and_follows_the_host_mm",
            Any,
            |_| prefault_maps_shared_memory_and_follows_the_host_mm(),
        ),
        ("prefault_hostile_input_is_refused", Any, |_| {
            prefault_hostile_input()
        }),
        ("prefault_private_memory_sw_protected", Any, |_| {
            prefault_private_memory_sw_protected()
        }),
        ("prefault_private_gfn_without_a_slot_is_efault", Any, |_| {
            // Upstream: the attribute makes the fault private, and kvm_handle_noslot_fault
            // answers a private fault without a memslot with EFAULT (ENOENT is for shared).
            let vm = vm_of(SWP)?;
            let vcpu = create_vcpu(&vm, 0)?;
            let private = Attrs {
                address: 16 * MB,
                size: PS,
                attributes: PRIVATE,
                flags: 0,
            };
            eq(attrs(&vm, private), Ok(0), "PRIVATE without a slot")?;
            let (r, range) = pre_fault(&vcpu, 16 * MB, PS, 0);
            eq(r, Err(EFAULT), "private, no memslot")?;
            eq((range.gpa, range.size), (16 * MB, PS), "range untouched")?;
            eq(
                pre_fault(&vcpu, 32 * MB, PS, 0).0,
                Err(libc::ENOENT),
                "shared, no memslot",
            )?;
            drop(vcpu);
            drop(vm);
            counts_are_zero()
        }),
        ("prefault_td_before_finalize_is_eopnotsupp", Tdx, |_| {
            prefault_td_before_finalize_is_eopnotsupp()
        }),
        ("prefault_races_sw_protected", Any, |_| prefault_races(SWP)),
        ("prefault_races_td", Tdx, |_| prefault_races(KVM_X86_TDX_VM)),
    ]
}

/// Pre-faults `size` bytes at GPA 0 until done; returns the nanoseconds it took.
fn pre_fault_all(vcpu: &OwnedFd, size: u64) -> Result<u128, String> {
    let t = std::time::Instant::now();
    let (mut gpa, mut left) = (0, size);
    while left != 0 {
        let (r, range) = pre_fault(vcpu, gpa, left, 0);
        match r {
            Ok(_) | Err(libc::EINTR) => {}
            Err(e) => return Err(format!("pre-fault at {gpa:#x}: errno {e}")),
        }
        (gpa, left) = (range.gpa, range.size);
    }
    Ok(t.elapsed().as_nanos())
}

/// `guest-client --bench-prefault`: pre-fault 256 MiB shared vs private on a
/// software-protected VM; time per 4 KiB, leaves, page-table memory per GiB (the TD's figures:
/// [`crate::td_bench`]). Figures, not a test: TCG wall-clock times are only indicative.
pub(crate) fn bench() {
    const SIZE: u64 = 256 * MB;
    // The TD's figures (finalised TDs) are `td_bench`'s.
    for (ty, name) in [(SWP, "sw_protected")] {
        for private in [false, true] {
            let what = if private { "private" } else { "shared" };
            match bench_one(ty, private, SIZE) {
                Ok(line) => println!("bench pre-fault 256 MiB {what} on {name}: {line}"),
                Err(e) => println!("bench pre-fault 256 MiB {what} on {name}: not measured: {e}"),
            }
        }
    }
}

fn bench_one(ty: u64, private: bool, size: u64) -> Result<String, String> {
    let vm = vm_of(ty)?;
    let mem = Anon::new(size);
    let fd = gmem(&vm, size, 0).map_err(|e| format!("gmem: errno {e}"))?;
    let r = Region2 {
        flags: GUEST_MEMFD,
        gmem: fd.as_raw_fd() as u32,
        ..slot(0, 0, size, mem.hva())
    };
    eq(region2(&vm, r), Ok(0), "slot")?;
    let at = if private { PRIVATE } else { 0 };
    let a = Attrs {
        address: 0,
        size,
        attributes: at,
        flags: 0,
    };
    eq(attrs(&vm, a), Ok(0), "attributes")?;
    let vcpu = create_vcpu(&vm, 0)?;
    let ns = pre_fault_all(&vcpu, size)?;
    let pages = size / PS;
    let s = |n: &str| vm_stat(&vm, n);
    let (k4, m2) = if private && ty == KVM_X86_TDX_VM {
        (s("mirror_pages_4k")?, s("mirror_pages_2m")?)
    } else {
        (s("shared_pages_4k")?, s("shared_pages_2m")?)
    };
    let tables = s("shared_table_pages")? + s("mirror_table_pages")? + s("external_spt_pages")?;
    let gib = size as f64 / (1u64 << 30) as f64;
    let mut line = format!(
        "{:.0} ns per 4 KiB, leaves 4K {k4} 2M {m2}, page-table memory {:.0} KiB per GiB",
        ns as f64 / pages as f64,
        tables as f64 * 4.0 / gib
    );
    if ty == KVM_X86_TDX_VM {
        let mut calls = 0;
        for l in ["tdh_mem_sept_add", "tdh_mem_page_aug"] {
            calls += s(l)?;
        }
        line += &format!(", SEAMCALLs per 4 KiB {:.4}", calls as f64 / pages as f64);
    }
    Ok(line)
}
