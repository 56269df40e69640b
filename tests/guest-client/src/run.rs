// SPDX-License-Identifier: GPL-2.0-only
//! The run loop with real guests (issue 11, `svm`): real-mode guests started at the reset
//! vector as rust-vmm kvm-ioctls' own tests run them (OUT/IN with their completion, HLT, NPT
//! faults on RAM the host reads back), `immediate_exit` with a pending IN, signals interrupting
//! a guest that spins, a triple fault, several vCPUs on threads, and hostile use (two threads
//! running one vCPU, the VM fd closed under a running vCPU, a vCPU without memory).
//!
//! The guest code is assembled by hand (each instruction's bytes are commented). Without the
//! state ioctls a vCPU starts at the reset vector: CS.base 0xffff0000, IP 0xfff0; a memslot
//! covers 0xffff0000..0x1_0000_0000 and the code at 0xfff0 jumps to offset 0.

use crate::*;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const KVM_EXIT_IO: u32 = 2;
const KVM_EXIT_INTR: u32 = 10;
const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;
const EINTR: i32 = libc::EINTR;

/// Anonymous memory for a memslot, unmapped on drop.
pub(crate) struct Mem {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

// SAFETY: plain anonymous memory; tests synchronise their own accesses.
unsafe impl Send for Mem {}
// SAFETY: as above.
unsafe impl Sync for Mem {}

impl Mem {
    pub(crate) fn new(len: usize) -> Result<Mem, String> {
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err("mmap".into());
        }
        Ok(Mem { ptr: p.cast(), len })
    }

    pub(crate) fn write(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len);
        // SAFETY: inside the mapping (asserted).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len()) };
    }

    pub(crate) fn read(&self, off: usize) -> u8 {
        assert!(off < self.len);
        // SAFETY: inside the mapping; the guest may write it concurrently: volatile.
        unsafe { std::ptr::read_volatile(self.ptr.add(off)) }
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A VM with the top 64 KiB below 4 GiB (the reset vector's segment: `code`, with `jmp 0` at
/// 0xfff0) and `ram` bytes of RAM at GPA 0.
pub(crate) struct Guest {
    pub(crate) vm: VmFd,
    pub(crate) rom: Mem,
    pub(crate) ram: Mem,
}

/// `jmp near 0x0000` at IP 0xfff0: E9 rel16 with rel16 = 0x0000 - 0xfff3 (mod 2^16).
const RESET_JMP: [u8; 3] = [0xe9, 0x0d, 0x00];

impl Guest {
    pub(crate) fn new(code: &[u8], ram: usize) -> Result<Guest, String> {
        let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        let rom = Mem::new(0x10000)?;
        rom.write(0, code);
        rom.write(0xfff0, &RESET_JMP);
        let ram = Mem::new(ram.max(4096))?;
        let g = Guest { vm, rom, ram };
        g.slot(0, 0xffff_0000, &g.rom, 0)?;
        g.slot(1, 0, &g.ram, 0)?;
        Ok(g)
    }

    pub(crate) fn slot(&self, slot: u32, gpa: u64, m: &Mem, flags: u32) -> Result<(), String> {
        let r = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: gpa,
            memory_size: m.len as u64,
            userspace_addr: m.ptr as u64,
        };
        // SAFETY: the memory outlives the VM (both live in `self`, the VM field drops first).
        unsafe { self.vm.set_user_memory_region(r) }.map_err(|e| format!("memslot {slot}: {e}"))
    }

    pub(crate) fn vcpu(&self, id: u64) -> Result<VcpuFd, String> {
        self.vm
            .create_vcpu(id)
            .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))
    }
}

/// A vCPU fault that waits on userfaultfd (a page the VMM has not supplied yet, as in postcopy
/// migration) ends with `EINTR` and `KVM_EXIT_INTR` when the vCPU thread is signalled (upstream
/// `hva_to_pfn_slow` with `FOLL_INTERRUPTIBLE`, `kvm_handle_signal_exit`); once the page is
/// supplied the guest's read completes. If the signal does not end the wait, the page is
/// supplied after 10 s anyway, so that a broken module fails the test instead of hanging it.
fn signal_ends_userfaultfd_wait() -> Result<(), String> {
    const UFFDIO_API: u64 = 0xc018_aa3f;
    const UFFDIO_REGISTER: u64 = 0xc020_aa00;
    const UFFDIO_COPY: u64 = 0xc028_aa03;
    const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
    // mov dx, 0x3f8; mov al, [0x1000]; out dx, al; hlt
    let code = [0xba, 0xf8, 0x03, 0xa0, 0x00, 0x10, 0xee, 0xf4];
    let g = Guest::new(&code, 0x2000)?;
    // SAFETY: the userfaultfd syscall; the fd is owned right away.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("userfaultfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd.
    let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut api = [0xaa_u64, 0, 0];
    ioctl(uffd.as_raw_fd(), UFFDIO_API, api.as_mut_ptr() as u64)
        .map_err(|e| format!("UFFDIO_API: errno {e}"))?;
    let page = g.ram.ptr as u64 + 0x1000;
    // The data page must be missing for the fault to wait.
    // SAFETY: inside the guest RAM mapping, which the test owns.
    unsafe { libc::madvise(page as *mut libc::c_void, 0x1000, libc::MADV_DONTNEED) };
    let mut reg = [page, 0x1000, UFFDIO_REGISTER_MODE_MISSING, 0];
    ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, reg.as_mut_ptr() as u64)
        .map_err(|e| format!("UFFDIO_REGISTER: errno {e}"))?;
    let src = vec![0x5a_u8; 0x1000];
    let supply = || {
        let mut copy = [page, src.as_ptr() as u64, 0x1000, 0, 0];
        ioctl(uffd.as_raw_fd(), UFFDIO_COPY, copy.as_mut_ptr() as u64)
    };
    let mut v = g.vcpu(0)?;
    crate::signal::install_noop_handler(libc::SIGUSR1);
    let done = AtomicBool::new(false);
    let tid = std::sync::atomic::AtomicU64::new(0);
    let (r, why, supplied_late) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            // SAFETY: no preconditions.
            tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            let r = v.run().map(|_| 0).unwrap_or_else(errno);
            done.store(true, Ordering::SeqCst);
            (r, exit_reason(&mut v))
        });
        // Long enough for the vCPU to reach the read and wait in the fault.
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        let mut supplied_late = false;
        while !done.load(Ordering::SeqCst) {
            let t = tid.load(Ordering::SeqCst);
            if t != 0 {
                // SAFETY: the thread is alive until joined; SIGUSR1 has a handler.
                unsafe { libc::pthread_kill(t as libc::pthread_t, libc::SIGUSR1) };
            }
            std::thread::sleep(Duration::from_millis(50));
            if !supplied_late && t0.elapsed() > Duration::from_secs(10) {
                supplied_late = supply().is_ok();
            }
        }
        let (r, why) = h.join().unwrap_or((-1, 0));
        (r, why, supplied_late)
    });
    check(
        !supplied_late,
        "the signal did not end the userfaultfd wait within 10 s",
    )?;
    eq(
        r,
        libc::EINTR,
        "KVM_RUN while the fault waits, after the signal",
    )?;
    eq(why, 10, "exit_reason KVM_EXIT_INTR")?;
    supply().map_err(|e| format!("UFFDIO_COPY: errno {e}"))?;
    match v.run().map_err(|e| format!("run after UFFDIO_COPY: {e}"))? {
        VcpuExit::IoOut(0x3f8, d) => eq(d, &[0x5a][..], "the supplied page's byte"),
        x => Err(format!("after UFFDIO_COPY: {x:?}, want the OUT")),
    }
}

/// The raw `exit_reason` of the last run.
fn exit_reason(v: &mut VcpuFd) -> u32 {
    v.get_kvm_run().exit_reason
}

fn errno(e: kvm_ioctls::Error) -> i32 {
    e.errno()
}

/// A guest that does IN/OUT on port 0x3f8, stores to RAM and halts:
/// out 0x41; in al; al += 1; out al; [0x1000] = al; [0x1001] = 0x77; out [0x1001]; hlt.
const IO_GUEST: &[u8] = &[
    0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, 0x41, // mov al, 0x41
    0xee, // out dx, al
    0xec, // in al, dx
    0x04, 0x01, // add al, 1
    0xee, // out dx, al
    0xa2, 0x00, 0x10, // mov [0x1000], al
    0xc6, 0x06, 0x01, 0x10, 0x77, // mov byte [0x1001], 0x77
    0xa0, 0x01, 0x10, // mov al, [0x1001]
    0xee, // out dx, al
    0xf4, // hlt
];

fn io_guest() -> Result<(), String> {
    let g = Guest::new(IO_GUEST, 0x10000)?;
    let mut v = g.vcpu(0)?;
    match v.run().map_err(|e| format!("run 1: {e}"))? {
        VcpuExit::IoOut(0x3f8, d) => eq(d, &[0x41][..], "first OUT data")?,
        e => return Err(format!("run 1: {e:?}")),
    }
    match v.run().map_err(|e| format!("run 2: {e}"))? {
        VcpuExit::IoIn(0x3f8, d) => {
            eq(d.len(), 1, "IN size")?;
            d[0] = 0x5a;
        }
        e => return Err(format!("run 2: {e:?}")),
    }
    match v.run().map_err(|e| format!("run 3: {e}"))? {
        VcpuExit::IoOut(0x3f8, d) => eq(d, &[0x5b][..], "IN data + 1")?,
        e => return Err(format!("run 3: {e:?}")),
    }
    match v.run().map_err(|e| format!("run 4: {e}"))? {
        VcpuExit::IoOut(0x3f8, d) => eq(d, &[0x77][..], "read back from RAM")?,
        e => return Err(format!("run 4: {e:?}")),
    }
    match v.run().map_err(|e| format!("run 5: {e}"))? {
        VcpuExit::Hlt => {}
        e => return Err(format!("run 5: {e:?}")),
    }
    eq(g.ram.read(0x1000), 0x5b, "guest store seen by the host")?;
    eq(g.ram.read(0x1001), 0x77, "second guest store")?;
    Ok(())
}

fn immediate_exit_completes_in() -> Result<(), String> {
    let g = Guest::new(IO_GUEST, 0x10000)?;
    let mut v = g.vcpu(0)?;
    // Nothing pending: immediate_exit is EINTR and leaves kvm_run alone.
    v.set_kvm_immediate_exit(1);
    eq(
        v.run().err().map(errno),
        Some(EINTR),
        "immediate_exit, nothing pending",
    )?;
    v.set_kvm_immediate_exit(0);
    let _ = v.run().map_err(|e| format!("run 1: {e}"))?;
    match v.run().map_err(|e| format!("run 2: {e}"))? {
        VcpuExit::IoIn(0x3f8, d) => d[0] = 0x10,
        e => return Err(format!("run 2: {e:?}")),
    }
    // The IN completes, then EINTR; exit_reason and the io fields stay as they were.
    v.set_kvm_immediate_exit(1);
    eq(
        v.run().err().map(errno),
        Some(EINTR),
        "immediate_exit with a pending IN",
    )?;
    eq(exit_reason(&mut v), KVM_EXIT_IO, "exit_reason untouched")?;
    // SAFETY: the io member is the one KVM_EXIT_IO fills.
    let io = unsafe { v.get_kvm_run().__bindgen_anon_1.io };
    eq(
        (io.direction, io.size, io.port, io.count),
        (0, 1, 0x3f8, 1),
        "io fields",
    )?;
    // Twice in a row (the selftests' get_ucall does this): still EINTR, nothing redone.
    eq(
        v.run().err().map(errno),
        Some(EINTR),
        "second immediate_exit",
    )?;
    v.set_kvm_immediate_exit(0);
    match v.run().map_err(|e| format!("run 3: {e}"))? {
        VcpuExit::IoOut(0x3f8, d) => eq(d, &[0x11][..], "RAX got the IN data once")?,
        e => return Err(format!("run 3: {e:?}")),
    }
    Ok(())
}

/// `jmp $`.
const SPIN: &[u8] = &[0xeb, 0xfe];

extern "C" fn on_signal(_: libc::c_int) {}

/// SIGUSR1 with a no-op handler and no SA_RESTART, so KVM_RUN returns EINTR.
fn install_handler() {
    // SAFETY: a plain sigaction with a handler that does nothing.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

/// Runs `v` on a thread until it returns; the main thread signals it every 50 ms after
/// `delay`. Returns the thread's result (errno of KVM_RUN, exit_reason).
fn run_until_signalled(mut v: VcpuFd, delay: Duration) -> Result<(i32, u32, VcpuFd), String> {
    install_handler();
    let started = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let tid = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            // SAFETY: no preconditions.
            tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            started.store(true, Ordering::SeqCst);
            let r = v.run().map(|_| 0).unwrap_or_else(errno);
            done.store(true, Ordering::SeqCst);
            let why = exit_reason(&mut v);
            (r, why)
        });
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        std::thread::sleep(delay);
        let t0 = Instant::now();
        while !done.load(Ordering::SeqCst) {
            // SAFETY: the thread is alive until joined; SIGUSR1 has a handler.
            unsafe {
                libc::pthread_kill(tid.load(Ordering::SeqCst) as libc::pthread_t, libc::SIGUSR1)
            };
            std::thread::sleep(Duration::from_millis(50));
            if t0.elapsed() > Duration::from_secs(30) {
                return Err("the vCPU thread did not return within 30 s of signals".into());
            }
        }
        let (r, why) = h.join().map_err(|_| "vCPU thread panicked".to_string())?;
        Ok((r, why))
    })
    .map(|(r, why)| (r, why, v))
}

fn signal_interrupts_spinning_guest() -> Result<(), String> {
    let g = Guest::new(SPIN, 4096)?;
    let v = g.vcpu(0)?;
    let (r, why, _v) = run_until_signalled(v, Duration::from_millis(300))?;
    eq(r, EINTR, "KVM_RUN interrupted by a signal")?;
    eq(why, KVM_EXIT_INTR, "exit_reason")?;
    Ok(())
}

/// Real mode: `lidt [cs:0x100]` with a zero limit, then `int3`: the #BP cannot be delivered
/// (#GP), nor can that (#DF): shutdown.
const TRIPLE_FAULT: &[u8] = &[
    0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xee, // out dx, al
    0x2e, 0x0f, 0x01, 0x1e, 0x00, 0x01, // lidt cs:[0x100]
    0xcc, // int3
];

fn triple_fault_is_shutdown() -> Result<(), String> {
    let g = Guest::new(TRIPLE_FAULT, 4096)?;
    g.rom.write(0x100, &[0; 6]);
    let mut v = g.vcpu(0)?;
    match v.run().map_err(|e| format!("run 1: {e}"))? {
        VcpuExit::IoOut(0x3f8, _) => {}
        e => return Err(format!("run 1: {e:?}")),
    }
    match v.run().map_err(|e| format!("run 2: {e}"))? {
        VcpuExit::Shutdown => {}
        e => return Err(format!("run 2: {e:?}")),
    }
    // The vCPU was INITed: it starts over at the reset vector.
    match v.run().map_err(|e| format!("run 3: {e}"))? {
        VcpuExit::IoOut(0x3f8, _) => Ok(()),
        e => Err(format!("run 3 after the shutdown: {e:?}")),
    }
}

/// Counts AL from 0 to 99 with an OUT each, then halts.
const COUNT_GUEST: &[u8] = &[
    0xba, 0x80, 0x00, // mov dx, 0x80
    0x31, 0xc0, // xor ax, ax
    0xee, // l: out dx, al
    0xfe, 0xc0, // inc al
    0x3c, 0x64, // cmp al, 100
    0x75, 0xf9, // jne l
    0xf4, // hlt
];

fn several_vcpus_on_threads() -> Result<(), String> {
    let g = Guest::new(COUNT_GUEST, 4096)?;
    let vcpus: Vec<_> = (0..4).map(|i| g.vcpu(i)).collect::<Result<_, _>>()?;
    std::thread::scope(|s| {
        let hs: Vec<_> = vcpus
            .into_iter()
            .map(|mut v| {
                s.spawn(move || -> Result<(), String> {
                    for want in 0..100u8 {
                        match v.run().map_err(|e| format!("run: {e}"))? {
                            VcpuExit::IoOut(0x80, d) => eq(d, &[want][..], "count")?,
                            e => return Err(format!("{e:?} at {want}")),
                        }
                    }
                    match v.run().map_err(|e| format!("run: {e}"))? {
                        VcpuExit::Hlt => Ok(()),
                        e => Err(format!("{e:?} instead of HLT")),
                    }
                })
            })
            .collect();
        hs.into_iter()
            .try_for_each(|h| h.join().map_err(|_| "thread panicked".to_string())?)
    })
}

fn no_memory_is_emulation_failure() -> Result<(), String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let mut v = vm.create_vcpu(0).map_err(|e| format!("vcpu: {e}"))?;
    match v.run().map_err(|e| format!("run: {e}"))? {
        VcpuExit::InternalError => {}
        e => return Err(format!("{e:?}")),
    }
    // SAFETY: the internal member is the one KVM_EXIT_INTERNAL_ERROR fills.
    let sub = unsafe { v.get_kvm_run().__bindgen_anon_1.internal.suberror };
    eq(sub, KVM_INTERNAL_ERROR_EMULATION, "suberror")?;
    eq(exit_reason(&mut v), KVM_EXIT_INTERNAL_ERROR, "exit_reason")
}

fn two_threads_one_vcpu() -> Result<(), String> {
    install_handler();
    let g = Guest::new(SPIN, 4096)?;
    let mut v = g.vcpu(0)?;
    let fd = v.as_raw_fd();
    let run_ptr = v.get_kvm_run() as *mut kvm_bindings::kvm_run as usize;
    // Thread A spins in the guest; thread B's KVM_RUN waits for the vCPU mutex meanwhile, with
    // immediate_exit set once A is inside, so B returns EINTR as soon as it gets the vCPU.
    let done_a = AtomicBool::new(false);
    let tid = std::sync::atomic::AtomicU64::new(0);
    let r = std::thread::scope(|s| {
        let a = s.spawn(|| {
            // SAFETY: no preconditions.
            tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            let r = ioctl(fd, 0xae80, 0);
            done_a.store(true, Ordering::SeqCst);
            r
        });
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: the kvm_run mapping of `v`, alive for the scope.
        unsafe { std::ptr::write_volatile((run_ptr as *mut u8).add(1), 1u8) };
        let b = s.spawn(|| ioctl(fd, 0xae80, 0));
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        while !done_a.load(Ordering::SeqCst) {
            // SAFETY: A is alive until joined.
            unsafe {
                libc::pthread_kill(tid.load(Ordering::SeqCst) as libc::pthread_t, libc::SIGUSR1)
            };
            std::thread::sleep(Duration::from_millis(50));
            if t0.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
        (a.join(), b.join())
    });
    match r {
        (Ok(ra), Ok(rb)) => {
            eq(ra, Err(EINTR), "thread A")?;
            eq(rb, Err(EINTR), "thread B (immediate_exit)")
        }
        _ => Err("a thread panicked".into()),
    }
}

fn close_vm_while_running() -> Result<(), String> {
    let g = Guest::new(SPIN, 4096)?;
    let v = g.vcpu(0)?;
    let Guest { vm, rom, ram } = g;
    install_handler();
    let (r, why, v) = std::thread::scope(|s| {
        let h = s.spawn(|| run_until_signalled(v, Duration::from_millis(500)));
        std::thread::sleep(Duration::from_millis(200));
        drop(vm);
        h.join().map_err(|_| "panicked".to_string())
    })??;
    eq(
        (r, why),
        (EINTR, KVM_EXIT_INTR),
        "the vCPU still runs after the VM fd closed",
    )?;
    drop(v);
    drop((rom, ram));
    counts_are_zero()
}

/// A VM with `ram` bytes at GPA 0 holding identity-mapped 4-level page tables for the first
/// 2 MiB (PML4 0x1000, PDPT 0x2000, PD 0x3000 with one 2 MiB page) and `code` at 0x10000; a
/// vCPU entered directly in 64-bit mode there with KVM_SET_SREGS/REGS.
pub(crate) fn long_mode_guest(code: &[u8]) -> Result<(Guest, VcpuFd), String> {
    let g = Guest::new(&[0xf4], 0x40_0000)?;
    g.ram.write(0x1000, &(0x2000u64 | 3).to_le_bytes());
    g.ram.write(0x2000, &(0x3000u64 | 3).to_le_bytes());
    g.ram.write(0x3000, &0x83u64.to_le_bytes());
    g.ram.write(0x10000, code);
    let v = g.vcpu(0)?;
    // Long mode needs CPUID.LM in the vCPU's table (upstream kvm_valid_efer).
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    v.set_cpuid2(&cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    let mut sr = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    let code_seg = kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 8,
        type_: 11,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data_seg = kvm_bindings::kvm_segment {
        selector: 0x10,
        type_: 3,
        db: 1,
        l: 0,
        ..code_seg
    };
    sr.cs = code_seg;
    sr.ds = data_seg;
    sr.es = data_seg;
    sr.ss = data_seg;
    sr.cr3 = 0x1000;
    // PAE | OSFXSR | OSXMMEXCPT.
    sr.cr4 = 0x20 | 0x200 | 0x400;
    // PE | MP | ET | NE | PG.
    sr.cr0 = 0x8000_0033;
    // LME | LMA.
    sr.efer = 0x500;
    v.set_sregs(&sr)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut r = v.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    r.rip = 0x10000;
    r.rflags = 2;
    r.rsp = 0x8_0000;
    v.set_regs(&r).map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    Ok((g, v))
}

/// 64-bit: xmm0 = [0x20000], xmm1 = [0x20010]; 1000 times { addps xmm0, xmm1; out 0x80 };
/// [0x20020] = xmm0; out 0x81; hlt.
const SSE_GUEST: &[u8] = &[
    0x0f, 0x28, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, // movaps xmm0, [0x20000]
    0x0f, 0x28, 0x0c, 0x25, 0x10, 0x00, 0x02, 0x00, // movaps xmm1, [0x20010]
    0xb9, 0xe8, 0x03, 0x00, 0x00, // mov ecx, 1000
    0x0f, 0x58, 0xc1, // l: addps xmm0, xmm1
    0x66, 0xba, 0x80, 0x00, // mov dx, 0x80
    0xee, // out dx, al
    0xff, 0xc9, // dec ecx
    0x75, 0xf4, // jnz l
    0x0f, 0x29, 0x04, 0x25, 0x20, 0x00, 0x02, 0x00, // movaps [0x20020], xmm0
    0x66, 0xba, 0x81, 0x00, // mov dx, 0x81
    0xee, // out dx, al
    0xf4, // hlt
];

fn floats(m: &Mem, off: usize) -> [f32; 4] {
    let mut f = [0f32; 4];
    for (i, x) in f.iter_mut().enumerate() {
        let mut b = [0u8; 4];
        for (j, y) in b.iter_mut().enumerate() {
            *y = m.read(off + 4 * i + j);
        }
        *x = f32::from_le_bytes(b);
    }
    f
}

/// The host thread clobbers the SSE registers between the guest's exits.
#[inline(never)]
fn host_sse_noise(seed: f32) -> f32 {
    let mut acc = [seed; 4];
    for k in 0..8 {
        for a in acc.iter_mut() {
            *a = *a * 1.5 + k as f32;
        }
    }
    // SAFETY: only clobbers xmm0/xmm1, declared as such.
    unsafe {
        std::arch::asm!(
            "xorps xmm0, xmm0",
            "pcmpeqd xmm1, xmm1",
            out("xmm0") _,
            out("xmm1") _,
        );
    }
    acc.iter().sum()
}

fn long_mode_sse() -> Result<(), String> {
    let (g, mut v) = long_mode_guest(SSE_GUEST)?;
    let a = [1.0f32, 2.0, 3.0, 4.0];
    let b = [0.5f32, 0.25, 1.0, 2.0];
    for i in 0..4 {
        g.ram.write(0x20000 + 4 * i, &a[i].to_le_bytes());
        g.ram.write(0x20010 + 4 * i, &b[i].to_le_bytes());
    }
    let mut noise = 0f32;
    for n in 0..1000 {
        match v.run().map_err(|e| format!("run {n}: {e}"))? {
            VcpuExit::IoOut(0x80, _) => noise += host_sse_noise(n as f32),
            e => return Err(format!("run {n}: {e:?}")),
        }
    }
    match v.run().map_err(|e| format!("last run: {e}"))? {
        VcpuExit::IoOut(0x81, _) => {}
        e => return Err(format!("last run: {e:?}")),
    }
    check(noise.is_finite(), "host arithmetic")?;
    let want: Vec<f32> = (0..4).map(|i| a[i] + 1000.0 * b[i]).collect();
    eq(
        floats(&g.ram, 0x20020).to_vec(),
        want,
        "xmm0 after 1000 addps",
    )?;
    match v.run().map_err(|e| format!("hlt run: {e}"))? {
        VcpuExit::Hlt => Ok(()),
        // HLT skipping with paging on needs the decoder (the `exits` helper): until then the
        // run loop refuses to guess.
        VcpuExit::InternalError => Ok(()),
        e => Err(format!("{e:?} instead of HLT")),
    }
}

/// 64-bit with CR4.LA57: jump to the code's alias at 1 << 48 (canonical only with 57-bit
/// addresses, PML5 entry 1), store to RAM at 0x20000 through its alias there, store to MMIO at
/// GPA 0x4000_0000 (a 2 MiB page the emulator must reach through the 5-level walk, fetching
/// the instruction through it too), set FS.base to 1 << 47 with WRMSR (non-canonical with
/// 48-bit addresses), out 0x10, hlt.
#[rustfmt::skip]
const LA57_GUEST: &[u8] = &[
    // mov rax, (1 << 48) | 0x1000c
    0x48, 0xb8, 0x0c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00,
    0xff, 0xe0, // jmp rax
    // 0x1000c: mov rcx, (1 << 48) | 0x20000
    0x48, 0xb9, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00,
    0xc7, 0x01, 0x44, 0x33, 0x22, 0x11, // mov dword [rcx], 0x11223344
    // mov rdx, (1 << 48) | 0x400000
    0x48, 0xba, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x01, 0x00,
    0xc7, 0x02, 0x78, 0x56, 0x34, 0x12, // mov dword [rdx], 0x12345678 (MMIO)
    0xb9, 0x00, 0x01, 0x00, 0xc0, // mov ecx, MSR_FS_BASE
    0x31, 0xc0, // xor eax, eax
    0xba, 0x00, 0x80, 0x00, 0x00, // mov edx, 0x8000
    0x0f, 0x30, // wrmsr
    0xe6, 0x10, // out 0x10, al
    0xf4, // hlt
];

/// 5-level paging (CR4.LA57) where the CPU has it: the hardware walk, the emulator's walk and
/// fetch, and the 57-bit canonical MSR rule; else CR4.LA57 is refused by KVM_SET_SREGS.
fn long_mode_la57() -> Result<(), String> {
    let (g, mut v) = long_mode_guest(LA57_GUEST)?;
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    let la57 = cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == 7 && e.index == 0 && e.ecx & (1 << 16) != 0);
    let mut sr = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    sr.cr4 |= 1 << 12;
    sr.cr3 = 0x5000;
    if !la57 {
        return eq(
            v.set_sregs(&sr).map_err(|e| e.errno()),
            Err(libc::EINVAL),
            "CR4.LA57 without LA57",
        );
    }
    // PML5[0] and PML5[1] -> the PML4 at 0x1000; PD[2]: a 2 MiB page at GPA 0x4000_0000.
    g.ram.write(0x5000, &(0x1000u64 | 3).to_le_bytes());
    g.ram.write(0x5008, &(0x1000u64 | 3).to_le_bytes());
    g.ram.write(0x3010, &(0x4000_0000u64 | 0x83).to_le_bytes());
    v.set_sregs(&sr)
        .map_err(|e| format!("KVM_SET_SREGS(LA57): {e}"))?;
    match v.run().map_err(|e| format!("KVM_RUN: {e}"))? {
        VcpuExit::MmioWrite(0x4000_0000, d) => eq(d, &[0x78, 0x56, 0x34, 0x12][..], "MMIO store")?,
        e => return Err(format!("{e:?} instead of the MMIO store")),
    }
    match v.run().map_err(|e| format!("KVM_RUN: {e}"))? {
        VcpuExit::IoOut(0x10, _) => {}
        e => return Err(format!("{e:?} instead of OUT 0x10")),
    }
    let mut w = [0u8; 4];
    for (i, b) in w.iter_mut().enumerate() {
        *b = g.ram.read(0x20000 + i);
    }
    eq(
        u32::from_le_bytes(w),
        0x1122_3344,
        "RAM store through the alias",
    )?;
    let sr = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    eq(sr.fs.base, 1 << 47, "FS.base from WRMSR")?;
    eq(sr.cr4 & (1 << 12), 1 << 12, "CR4.LA57 kept")
}

fn long_mode_sse_two_threads() -> Result<(), String> {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2).map(|_| s.spawn(long_mode_sse)).collect();
        hs.into_iter()
            .try_for_each(|h| h.join().map_err(|_| "thread panicked".to_string())?)
    })
}

/// Hostile register state: each case ends in an errno from the state ioctl or an exit to
/// userspace (never an oops; the suite checks the console).
fn hostile_state() -> Result<(), String> {
    let mut outcomes = Vec::new();
    for case in 0..5 {
        // out 0x80; hlt: a state the CPU accepts after all ends in an I/O exit.
        let (_g, v) = long_mode_guest(&[0x66, 0xba, 0x80, 0x00, 0xee, 0xf4])?;
        let mut sr = v.get_sregs().map_err(|e| e.to_string())?;
        let mut r = v.get_regs().map_err(|e| e.to_string())?;
        let set = match case {
            0 => {
                // Non-canonical RIP.
                r.rip = 0x8000_0000_0000_0000;
                v.set_regs(&r).map_err(errno)
            }
            1 => {
                // A code segment that is not present.
                sr.cs.present = 0;
                v.set_sregs(&sr).map_err(errno)
            }
            2 => {
                // A data segment type in CS.
                sr.cs.type_ = 3;
                v.set_sregs(&sr).map_err(errno)
            }
            3 => {
                // RIP into unmapped guest-virtual memory (no page tables there).
                r.rip = 0x4000_0000;
                v.set_regs(&r).map_err(errno)
            }
            _ => {
                // CS.L and CS.D together.
                sr.cs.db = 1;
                v.set_sregs(&sr).map_err(errno)
            }
        };
        let outcome = match set {
            Err(e) => format!("set errno {e}"),
            Ok(()) => {
                // Whatever the CPU makes of the state (an exit, or a guest that loops), the
                // vCPU thread comes back: a watchdog signal ends a loop with EINTR.
                let (r, why, _v) = run_until_signalled(v, Duration::from_secs(3))?;
                if r == 0 {
                    format!("exit {why}")
                } else {
                    format!("run errno {r} exit {why}")
                }
            }
        };
        outcomes.push(outcome);
    }
    eq(outcomes.len(), 5, "cases")?;
    println!("hostile register state outcomes: {outcomes:?}");
    // A non-canonical RIP can never execute.
    check(
        outcomes[0] != "ran",
        &format!("non-canonical RIP ran: {outcomes:?}"),
    )
}

fn ram_u32(m: &Mem, off: usize) -> u32 {
    u32::from_le_bytes([
        m.read(off),
        m.read(off + 1),
        m.read(off + 2),
        m.read(off + 3),
    ])
}

/// A guest that writes DR0 and DR7 and reads them back (Linux guests touch DR7 at boot), then,
/// after userspace set DR1 with KVM_SET_DEBUGREGS, reads DR1.
const DR_GUEST: &[u8] = &[
    0x66, 0xb8, 0x78, 0x56, 0x34, 0x12, // mov eax, 0x12345678
    0x0f, 0x23, 0xc0, // mov dr0, eax
    0x66, 0xb8, 0x01, 0x04, 0x00, 0x00, // mov eax, 0x401
    0x0f, 0x23, 0xf8, // mov dr7, eax
    0x0f, 0x21, 0xc3, // mov ebx, dr0
    0x0f, 0x21, 0xf8, // mov eax, dr7
    0x66, 0xa3, 0x00, 0x10, // mov [0x1000], eax
    0x66, 0x89, 0x1e, 0x04, 0x10, // mov [0x1004], ebx
    0xf4, // hlt
    0x0f, 0x21, 0xc9, // mov ecx, dr1
    0x66, 0x89, 0x0e, 0x08, 0x10, // mov [0x1008], ecx
    0xf4, // hlt
];

fn debug_registers_guest() -> Result<(), String> {
    let g = Guest::new(DR_GUEST, 0x10000)?;
    let mut v = g.vcpu(0)?;
    match v.run().map_err(|e| format!("run 1: {e}"))? {
        VcpuExit::Hlt => {}
        e => return Err(format!("run 1 (DR writes/reads): {e:?}")),
    }
    eq(ram_u32(&g.ram, 0x1000), 0x401, "guest reads back DR7")?;
    eq(ram_u32(&g.ram, 0x1004), 0x1234_5678, "guest reads back DR0")?;
    let mut d = v
        .get_debug_regs()
        .map_err(|e| format!("KVM_GET_DEBUGREGS: {e}"))?;
    eq(d.db[0], 0x1234_5678, "KVM_GET_DEBUGREGS db[0]")?;
    eq(d.dr7, 0x401, "KVM_GET_DEBUGREGS dr7")?;
    d.db[1] = 0xabcd_0000;
    v.set_debug_regs(&d)
        .map_err(|e| format!("KVM_SET_DEBUGREGS: {e}"))?;
    match v.run().map_err(|e| format!("run 2: {e}"))? {
        VcpuExit::Hlt => {}
        e => return Err(format!("run 2 (DR1 read): {e:?}")),
    }
    eq(
        ram_u32(&g.ram, 0x1008),
        0xabcd_0000,
        "guest reads DR1 set by KVM_SET_DEBUGREGS",
    )?;
    let d = v
        .get_debug_regs()
        .map_err(|e| format!("KVM_GET_DEBUGREGS 2: {e}"))?;
    eq(d.db[0], 0x1234_5678, "db[0] kept across runs")?;
    Ok(())
}

/// INVD and WBINVD 100 times each: every one exits (upstream intercepts both and skips them
/// in the kernel) and the loop still ends in HLT.
fn invd_wbinvd_exit() -> Result<(), String> {
    let code: &[u8] = &[
        0xb9, 0x64, 0x00, // mov cx, 100
        0x0f, 0x08, // l: invd
        0x0f, 0x09, // wbinvd
        0xe2, 0xfa, // loop l
        0xf4, // hlt
    ];
    let g = Guest::new(code, 0x1000)?;
    let mut v = g.vcpu(0)?;
    let e0 = vcpu_stat(&v, "exits").ok_or("no exits stat")?;
    match v.run().map_err(|e| format!("run: {e}"))? {
        VcpuExit::Hlt => {}
        e => return Err(format!("run: {e:?}")),
    }
    let n = vcpu_stat(&v, "exits").ok_or("no exits stat")? - e0;
    if n < 200 {
        return Err(format!("{n} exits for 100 INVD + 100 WBINVD"));
    }
    Ok(())
}

/// Returns 0 when the run loop can execute guests here (SVM), else why not.
fn svm_runs() -> Option<&'static str> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if has("svm") && has("npt") {
        None
    } else {
        Some("no SVM with nested paging on this CPU")
    }
}

/// Wraps a test so it fails loudly (not skips) where SVM is there, and names the reason where
/// it is not: the guest suite runs on QEMU `-cpu max`, which has SVM.
pub(crate) fn with_svm(f: fn() -> Result<(), String>) -> Result<(), String> {
    match svm_runs() {
        None => f(),
        Some(why) => Err(format!("cannot run guests: {why}")),
    }
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("run_real_mode_io_in_out_hlt_and_ram", Any, |_| {
            with_svm(io_guest)
        }),
        ("run_immediate_exit_completes_pending_in", Any, |_| {
            with_svm(immediate_exit_completes_in)
        }),
        ("run_signal_interrupts_spinning_guest", Any, |_| {
            with_svm(signal_interrupts_spinning_guest)
        }),
        (
            "run_signal_ends_a_fault_waiting_on_userfaultfd",
            Any,
            |_| with_svm(signal_ends_userfaultfd_wait),
        ),
        ("run_triple_fault_is_shutdown_then_init", Any, |_| {
            with_svm(triple_fault_is_shutdown)
        }),
        ("run_four_vcpus_on_threads", Any, |_| {
            with_svm(several_vcpus_on_threads)
        }),
        ("run_without_memory_is_emulation_failure", Any, |_| {
            with_svm(no_memory_is_emulation_failure)
        }),
        ("run_two_threads_one_vcpu", Any, |_| {
            with_svm(two_threads_one_vcpu)
        }),
        ("run_protected_mode_guest_touches_ram", Any, |_| {
            with_svm(protected_mode_touches_ram)
        }),
        ("run_long_mode_sse_with_host_sse_between_exits", Any, |_| {
            with_svm(long_mode_sse)
        }),
        ("run_long_mode_sse_two_vms_on_threads", Any, |_| {
            with_svm(long_mode_sse_two_threads)
        }),
        ("run_long_mode_la57_five_level_paging", Any, |_| {
            with_svm(long_mode_la57)
        }),
        ("run_hostile_register_state_is_errno_or_exit", Any, |_| {
            with_svm(hostile_state)
        }),
        ("run_close_vm_fd_while_running", Any, |_| {
            with_svm(close_vm_while_running)
        }),
        ("run_guest_debug_registers_and_debugregs", Any, |_| {
            with_svm(debug_registers_guest)
        }),
        ("run_invd_wbinvd_exit_and_are_skipped", Any, |_| {
            with_svm(invd_wbinvd_exit)
        }),
    ]
}

/// A vCPU statistic from its stats fd, read by name only (the benchmarks also run on upstream
/// KVM, whose stats include histograms that `crate::vcpu::read_stats`' strict layout check
/// refuses).
fn vcpu_stat(v: &VcpuFd, name: &str) -> Option<u64> {
    // SAFETY: dup of the vCPU fd, a new fd owned by `fd` from now on.
    let raw = unsafe { libc::dup(v.as_raw_fd()) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    crate::prefault::vm_stat(&fd, name).ok()
}

/// A ROM image that goes from real mode to flat 32-bit protected mode (GDT in the ROM at
/// 0x200, GDTR image at 0x220) and jumps to `flat`, placed at offset 0x40 (linear 0xffff0040).
pub(crate) fn flat32_rom(flat: &[u8]) -> Vec<u8> {
    let mut rom = vec![0u8; 0x228];
    let real: &[u8] = &[
        0x66, 0x2e, 0x0f, 0x01, 0x16, 0x20, 0x02, // lgdt cs:[0x220] (32-bit base)
        0x0f, 0x20, 0xc0, // mov eax, cr0
        0x66, 0x83, 0xc8, 0x01, // or eax, 1
        0x0f, 0x22, 0xc0, // mov cr0, eax
        0x66, 0xea, 0x40, 0x00, 0xff, 0xff, 0x08, 0x00, // jmp dword 0x08:0xffff0040
    ];
    rom[..real.len()].copy_from_slice(real);
    rom[0x40..0x40 + flat.len()].copy_from_slice(flat);
    // Null, flat 32-bit code (0x08), flat data (0x10); the GDTR image at 0x220.
    rom[0x208..0x210].copy_from_slice(&[0xff, 0xff, 0, 0, 0, 0x9a, 0xcf, 0]);
    rom[0x210..0x218].copy_from_slice(&[0xff, 0xff, 0, 0, 0, 0x92, 0xcf, 0]);
    rom[0x220..0x226].copy_from_slice(&[0x17, 0, 0x00, 0x02, 0xff, 0xff]);
    rom
}

/// [`flat32_rom`] with one 4-byte store per 4 KiB page over `pages` pages from GPA 0, then
/// `out 0x80` and HLT.
fn touch_guest(pages: u32) -> Vec<u8> {
    let mut flat = vec![
        0xb8, 0x10, 0x00, 0x00, 0x00, // mov eax, 0x10
        0x8e, 0xd8, // mov ds, ax
        0x31, 0xdb, // xor ebx, ebx
        0xb9, // mov ecx, pages
    ];
    flat.extend_from_slice(&pages.to_le_bytes());
    flat.extend_from_slice(&[
        0x89, 0x03, // l: mov [ebx], eax
        0x81, 0xc3, 0x00, 0x10, 0x00, 0x00, // add ebx, 0x1000
        0x49, // dec ecx
        0x75, 0xf5, // jnz l
        0x66, 0xba, 0x80, 0x00, // mov dx, 0x80
        0xee, // out dx, al
        0xf4, // hlt
    ]);
    flat32_rom(&flat)
}

fn protected_mode_touches_ram() -> Result<(), String> {
    let pages = 512;
    let g = Guest::new(&touch_guest(pages), pages as usize * 4096)?;
    // One NPT fault per 4 KiB page only if the host backs the RAM with 4 KiB pages: where it
    // is a transparent huge page, the fault maps 2 MiB at once (upstream's
    // host_pfn_mapping_level), so keep THP away from this test's RAM.
    // SAFETY: advice on our own mapping.
    if unsafe { libc::madvise(g.ram.ptr.cast(), g.ram.len, libc::MADV_NOHUGEPAGE) } != 0 {
        return Err("madvise(MADV_NOHUGEPAGE)".into());
    }
    let mut v = g.vcpu(0)?;
    let f0 = vcpu_stat(&v, "page_faults").ok_or("no page_faults stat")?;
    match v.run().map_err(|e| format!("run: {e}"))? {
        VcpuExit::IoOut(0x80, _) => {}
        e => return Err(format!("{e:?}")),
    }
    for p in 0..pages as usize {
        eq(g.ram.read(p * 4096), 0x10, "the guest's store")?;
    }
    let faults = vcpu_stat(&v, "page_faults").ok_or("no page_faults stat")? - f0;
    check(
        faults >= u64::from(pages),
        &format!("{faults} NPT faults for {pages} pages"),
    )
}

/// `--bench-run`: ns per KVM_RUN round trip to userspace (OUT exits), per in-kernel exit
/// (INVD, skipped in the kernel) and per 4 KiB NPT fault (a guest touching 256 MiB). Figures,
/// not checks.
pub(crate) fn bench() {
    if let Some(why) = svm_runs() {
        println!("bench-run: skipped: {why}");
        return;
    }
    // out dx, al; jmp back.
    let out_loop: &[u8] = &[0xba, 0x80, 0x00, 0xee, 0xeb, 0xfd];
    let Ok(g) = Guest::new(out_loop, 4096) else {
        println!("bench-run: no VM");
        return;
    };
    let Ok(mut v) = g.vcpu(0) else { return };
    let _ = v.run();
    let n = 20000;
    let t0 = Instant::now();
    for _ in 0..n {
        if !matches!(v.run(), Ok(VcpuExit::IoOut(..))) {
            println!("bench-run: unexpected exit");
            return;
        }
    }
    let ns = t0.elapsed().as_nanos() / n;
    println!("bench-run: KVM_RUN round trip to userspace (OUT exit): {ns} ns");
    // mov ecx, N (66 b9 imm32); l: invd (0f 08); dec ecx (66 49); jnz l (75 fa); out; hlt.
    let n_invd: u32 = 20000;
    let mut code = vec![0x66, 0xb9];
    code.extend_from_slice(&n_invd.to_le_bytes());
    code.extend_from_slice(&[
        0x0f, 0x08, 0x66, 0x49, 0x75, 0xfa, 0xba, 0x80, 0x00, 0xee, 0xf4,
    ]);
    let Ok(g) = Guest::new(&code, 4096) else {
        return;
    };
    let Ok(mut v) = g.vcpu(0) else { return };
    let Some(e0) = vcpu_stat(&v, "exits") else {
        println!(
            "bench-run: in-kernel exit: INVD: the vCPU has no readable exits statistic: no figure"
        );
        return;
    };
    let t0 = Instant::now();
    match v.run() {
        Ok(VcpuExit::IoOut(0x80, _)) => {
            let dt = t0.elapsed().as_nanos();
            let exits = vcpu_stat(&v, "exits").map_or(0, |x| x.saturating_sub(e0));
            if exits >= u64::from(n_invd) {
                let ns = dt / u128::from(exits);
                println!("bench-run: in-kernel exit (INVD, skipped by the run loop): {ns} ns ({exits} exits)");
            } else {
                println!("bench-run: in-kernel exit: INVD did not exit here ({exits} exits for {n_invd} INVDs, {} ns each): no figure", dt / u128::from(n_invd));
            }
        }
        r => println!("bench-run: INVD loop ended with {r:?}"),
    }
    let pages = 65536u32;
    let Ok(g) = Guest::new(&touch_guest(pages), pages as usize * 4096) else {
        println!("bench-run: no 256 MiB VM");
        return;
    };
    let Ok(mut v) = g.vcpu(0) else { return };
    let f0 = vcpu_stat(&v, "page_faults").unwrap_or(0);
    let t0 = Instant::now();
    match v.run() {
        Ok(VcpuExit::IoOut(0x80, _)) => {
            let dt = t0.elapsed().as_nanos();
            let faults = vcpu_stat(&v, "page_faults").unwrap_or(0) - f0;
            println!(
                "bench-run: 4 KiB NPT fault (guest touching 256 MiB): {} ns ({faults} faults)",
                dt / u128::from(faults.max(1))
            );
        }
        r => println!("bench-run: 256 MiB touch ended with {r:?}"),
    }
}

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
