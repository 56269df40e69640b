// SPDX-License-Identifier: GPL-2.0-only
//! System and VM-creation tests: `/dev/kvm` ioctls, capabilities, CPUID/MSR lists, VM types,
//! bad input, open/close races.

use crate::*;

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("api_version_is_12", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            eq(kvm.get_api_version(), 12, "KVM_GET_API_VERSION")
        }),
        ("api_version_with_nonzero_arg_is_einval", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), io(0x00), 1),
                Err(EINVAL),
                "GET_API_VERSION(1)",
            )
        }),
        (
            "vm_types_lists_default_sw_protected_and_tdx_only_when_active",
            Any,
            |c| {
                let kvm = Kvm::new().map_err(|e| e.to_string())?;
                let want = 0b11 | if c.tdx { 1 << KVM_X86_TDX_VM } else { 0 };
                eq(
                    ioctl(kvm.as_raw_fd(), io(0x03), KVM_CAP_VM_TYPES),
                    Ok(want),
                    "KVM_CAP_VM_TYPES",
                )
            },
        ),
        ("check_extension_vm_is_supported", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            check(
                kvm.check_extension(Cap::CheckExtensionVm),
                "KVM_CAP_CHECK_EXTENSION_VM",
            )
        }),
        ("unsupported_capabilities_answer_zero", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            // HOOK(irqroute): KVM_CAP_IRQCHIP is advertised now (issue 12); irqchip_caps checks it.
            eq(
                ioctl(kvm.as_raw_fd(), io(0x03), 0xffff_ffff),
                Ok(0),
                "unknown cap",
            )
        }),
        ("vcpu_mmap_size_is_three_pages", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            eq(
                kvm.get_vcpu_mmap_size().map_err(|e| e.to_string())?,
                3 * 4096,
                "mmap size",
            )
        }),
        ("vcpu_mmap_size_with_arg_is_einval", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), io(0x04), 7),
                Err(EINVAL),
                "GET_VCPU_MMAP_SIZE(7)",
            )
        }),
        ("create_default_vm_and_close", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            let vm = kvm.create_vm().map_err(|e| e.to_string())?;
            drop(vm);
            counts_are_zero()
        }),
        ("create_sw_protected_vm_and_close", Any, |_| {
            let vm = create_vm(&dev(), 1).map_err(|e| format!("errno {e}"))?;
            drop(vm);
            counts_are_zero()
        }),
        ("tdx_vm_only_with_a_tdx_backend", Any, |c| {
            let r = create_vm(&dev(), KVM_X86_TDX_VM);
            if c.tdx {
                let vm = r.map_err(|e| format!("errno {e}"))?;
                check(
                    stats()
                        .iter()
                        .any(|(k, v)| k == "td_control_pages" && *v == 7),
                    "TDR + 6 TDCX (tdx=emulated is the 1.5 module: TDCS_BASE_SIZE 6 pages)",
                )?;
                drop(vm);
                counts_are_zero()
            } else {
                eq(r.err(), Some(EINVAL), "TDX VM with tdx off")
            }
        }),
        ("sev_and_unknown_machine_types_are_einval", Any, |_| {
            let kvm = dev();
            for t in [2u64, 3, 4, 6, 63, 64, 1 << 32, u64::MAX] {
                eq(create_vm(&kvm, t).err(), Some(EINVAL), &format!("type {t}"))?;
            }
            Ok(())
        }),
        ("supported_cpuid_has_the_vendor_leaf", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            let cpuid = kvm
                .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                .map_err(|e| e.to_string())?;
            let e0 = cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == 0)
                .ok_or("no leaf 0")?;
            let host = std::arch::x86_64::__cpuid(0);
            eq(
                (e0.ebx, e0.ecx, e0.edx),
                (host.ebx, host.ecx, host.edx),
                "vendor",
            )
        }),
        ("supported_cpuid_too_small_is_e2big", Any, |_| {
            let mut buf = vec![0u8; 8 + 40];
            buf[0] = 1; // nent = 1
            let r = ioctl(dev().as_raw_fd(), iowr(0x05, 8), buf.as_mut_ptr() as u64);
            eq(r, Err(E2BIG), "nent 1")
        }),
        ("supported_cpuid_zero_entries_is_e2big", Any, |_| {
            let mut buf = vec![0u8; 8];
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x05, 8), buf.as_mut_ptr() as u64),
                Err(E2BIG),
                "nent 0",
            )
        }),
        ("supported_cpuid_null_is_efault", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x05, 8), 0),
                Err(EFAULT),
                "NULL",
            )
        }),
        ("supported_cpuid_unmapped_is_efault", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x05, 8), 0xdead_0000),
                Err(EFAULT),
                "unmapped",
            )
        }),
        ("supported_cpuid_kernel_pointer_is_efault", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x05, 8), 0xffff_ffff_8100_0000),
                Err(EFAULT),
                "kernel address",
            )
        }),
        ("supported_cpuid_read_only_buffer_is_efault", Any, |_| {
            // A buffer whose header reads fine (nent = 256) but cannot be written back.
            // SAFETY: an anonymous mapping of ours, written, made read-only, unmapped below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    16384,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err("mmap".into());
            }
            // SAFETY: `p` is a fresh writable mapping of 16 KiB.
            unsafe {
                *(p as *mut u32) = 256;
                libc::mprotect(p, 16384, libc::PROT_READ);
            }
            let r = ioctl(dev().as_raw_fd(), iowr(0x05, 8), p as u64);
            // SAFETY: mapped above.
            unsafe { libc::munmap(p, 16384) };
            eq(r, Err(EFAULT), "read-only buffer")
        }),
        (
            "supported_cpuid_size_not_matching_the_abi_is_einval",
            Any,
            |_| {
                let mut buf = vec![0u8; 512];
                buf[0] = 8;
                eq(
                    ioctl(dev().as_raw_fd(), iowr(0x05, 16), buf.as_mut_ptr() as u64),
                    Err(EINVAL),
                    "size 16",
                )
            },
        ),
        ("msr_index_list_is_written_back", Any, |_| {
            // Too small for the list: E2BIG, with nmsrs written back (the list's length);
            // big enough: the indices, nmsrs the same.
            let mut buf = [0xffu8; 4 + 4 * 256];
            buf[..4].copy_from_slice(&1u32.to_ne_bytes());
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x02, 4), buf.as_mut_ptr() as u64),
                Err(E2BIG),
                "nmsrs 1",
            )?;
            let n = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
            check((2..=256).contains(&n), "nmsrs written back")?;
            buf[..4].copy_from_slice(&256u32.to_ne_bytes());
            ioctl(dev().as_raw_fd(), iowr(0x02, 4), buf.as_mut_ptr() as u64)
                .map_err(|e| format!("errno {e}"))?;
            eq(
                u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]),
                n,
                "nmsrs",
            )
        }),
        ("msr_index_list_null_is_efault", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x02, 4), 0),
                Err(EFAULT),
                "NULL",
            )
        }),
        ("check_extension_of_a_huge_cap_number_is_zero", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), io(0x03), u64::MAX),
                Ok(0),
                "cap u64::MAX",
            )
        }),
        ("msr_index_list_unmapped_is_efault", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x02, 4), 0xdead_0000),
                Err(EFAULT),
                "unmapped",
            )
        }),
        ("msr_index_list_kernel_pointer_is_efault", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x02, 4), 0xffff_ffff_8100_0000),
                Err(EFAULT),
                "kernel address",
            )
        }),
        (
            "supported_cpuid_more_than_the_maximum_is_clamped",
            Any,
            |_| {
                let mut buf = vec![0u8; 8 + 40 * 256];
                buf[..4].copy_from_slice(&100_000u32.to_ne_bytes());
                // Clamped to KVM_MAX_CPUID_ENTRIES, which is more than we answer: success.
                ioctl(dev().as_raw_fd(), iowr(0x05, 8), buf.as_mut_ptr() as u64)
                    .map_err(|e| format!("errno {e}"))?;
                let n = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                check((4..=256).contains(&n), "nent written back")
            },
        ),
        ("mmap_of_dev_kvm_is_refused", Any, |_| {
            let kvm = dev();
            // SAFETY: asks for a shared mapping of /dev/kvm, which must fail.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    kvm.as_raw_fd(),
                    0,
                )
            };
            let err = std::io::Error::last_os_error().raw_os_error();
            check(
                p == libc::MAP_FAILED && err == Some(libc::ENODEV),
                "mmap /dev/kvm is ENODEV",
            )
        }),
        ("read_and_write_of_dev_kvm_are_einval", Any, |_| {
            use std::io::{Read, Write};
            let mut kvm = dev();
            let mut b = [0u8; 8];
            let r = kvm.read(&mut b).map_err(|e| e.raw_os_error());
            let w = kvm.write(&b).map_err(|e| e.raw_os_error());
            eq((r, w), (Err(Some(EINVAL)), Err(Some(EINVAL))), "read/write")
        }),
        (
            "emulated_cpuid_and_msr_feature_list_answer_as_kvm",
            Any,
            |_| {
                let kvm = Kvm::new().map_err(|e| e.to_string())?;
                check(
                    kvm.check_extension(Cap::ExtEmulCpuid),
                    "KVM_CAP_EXT_EMUL_CPUID",
                )?;
                let e = kvm
                    .get_emulated_cpuid(KVM_MAX_CPUID_ENTRIES)
                    .map_err(|e| e.to_string())?;
                // Upstream's __do_cpuid_func_emulated: leaf 0 with EAX 7 and MOVBE in leaf 1
                // (RDPID in leaf 7 depends on the host's RDTSCP; ud.rs checks the table).
                let s = e.as_slice();
                check(
                    s.iter().any(|x| x.function == 0 && x.eax == 7),
                    "emulated leaf 0 with EAX 7",
                )?;
                check(
                    s.iter().any(|x| x.function == 1 && x.ecx == 1 << 22),
                    "emulated leaf 1: MOVBE only",
                )?;
                let l = kvm
                    .get_msr_feature_index_list()
                    .map_err(|e| e.to_string())?;
                // DE_CFG, UCODE_REV, ARCH_CAPABILITIES, PERF_CAPABILITIES (no VMX MSRs on SVM).
                eq(
                    l.as_slice(),
                    &[0xc001_1029, 0x8b, 0x10a, 0x345][..],
                    "feature MSRs",
                )
            },
        ),
        ("emulated_cpuid_zero_entries_is_e2big", Any, |_| {
            let mut buf = vec![0u8; 8];
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x09, 8), buf.as_mut_ptr() as u64),
                Err(E2BIG),
                "nent 0",
            )
        }),
        ("feature_msrs_read_and_refuse_too_many", Any, |_| {
            let mut buf = vec![0u8; 8 + 16];
            buf[..4].copy_from_slice(&1u32.to_ne_bytes());
            buf[8..12].copy_from_slice(&0x10au32.to_ne_bytes());
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x88, 8), buf.as_mut_ptr() as u64),
                Ok(1),
                "ARCH_CAPABILITIES",
            )?;
            buf[..4].copy_from_slice(&256u32.to_ne_bytes());
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x88, 8), buf.as_mut_ptr() as u64),
                Err(E2BIG),
                "256 MSRs",
            )?;
            // A header at the very end of a mapping whose entries run into unmapped memory.
            // SAFETY: two fresh anonymous pages; the second is unmapped right away, the first
            // unmapped at the end.
            let p = unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    8192,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                libc::munmap((p as *mut u8).add(4096).cast(), 4096);
                p as *mut u8
            };
            // SAFETY: the last 8 bytes of the first page are ours.
            let hdr = unsafe { p.add(4096 - 8) };
            // SAFETY: as above.
            unsafe { (hdr as *mut u32).write_unaligned(200) };
            let r = ioctl(dev().as_raw_fd(), iowr(0x88, 8), hdr as u64);
            // SAFETY: mapped above.
            unsafe { libc::munmap(p.cast(), 4096) };
            eq(r, Err(EFAULT), "entries past the mapping")
        }),
        ("emulated_cpuid_dirty_padding_is_einval", Any, |_| {
            // Upstream's sanity_check_entries: GET_EMULATED_CPUID wants every entry's padding
            // zero (GET_SUPPORTED_CPUID does not check it).
            // Four entries of room: upstream's walk wants one more than the table's three.
            let mut buf = vec![0u8; 8 + 4 * 40];
            buf[..4].copy_from_slice(&4u32.to_ne_bytes());
            let fd = dev();
            eq(
                ioctl(fd.as_raw_fd(), iowr(0x09, 8), buf.as_mut_ptr() as u64),
                Ok(0),
                "clean padding",
            )?;
            buf[..4].copy_from_slice(&4u32.to_ne_bytes());
            // Entry 1's padding[2] (entry offset 28 + 8).
            buf[8 + 40 + 36] = 1;
            eq(
                ioctl(fd.as_raw_fd(), iowr(0x09, 8), buf.as_mut_ptr() as u64),
                Err(EINVAL),
                "dirty padding",
            )?;
            let r = ioctl(fd.as_raw_fd(), iowr(0x05, 8), buf.as_mut_ptr() as u64);
            check(
                r != Err(EINVAL),
                "GET_SUPPORTED_CPUID must not check the padding",
            )
        }),
        ("feature_msrs_write_entries_back", Any, |_| {
            // msr_io copies the entries back even when none was processed: a read-only array
            // is EFAULT.
            // SAFETY: a fresh anonymous page, made read-only after the header is written, and
            // unmapped at the end.
            let p = unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                ) as *mut u8;
                (p as *mut u32).write(1);
                (p.add(8) as *mut u32).write(0x10a);
                libc::mprotect(p.cast(), 4096, libc::PROT_READ);
                p
            };
            let r = ioctl(dev().as_raw_fd(), iowr(0x88, 8), p as u64);
            // SAFETY: mapped above.
            unsafe { libc::munmap(p.cast(), 4096) };
            eq(r, Err(EFAULT), "read-only entries")
        }),
        ("memory_and_vm_caps_that_work_are_offered", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            for (cap, n) in [
                ("SYNC_MMU", 16),
                ("DESTROY_MEMORY_REGION_WORKS", 21),
                ("JOIN_MEMORY_REGIONS_WORKS", 30),
                ("ENABLE_CAP_VM", 98),
            ] {
                eq(ioctl(kvm.as_raw_fd(), io(0x03), n), Ok(1), cap)?;
            }
            Ok(())
        }),
        ("unknown_system_ioctl_is_einval", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), io(0x7f), 0),
                Err(EINVAL),
                "io(0x7f)",
            )
        }),
        ("foreign_ioctl_type_is_einval", Any, |_| {
            // TCGETS on /dev/kvm.
            eq(ioctl(dev().as_raw_fd(), 0x5401, 0), Err(EINVAL), "TCGETS")
        }),
        ("unknown_vm_ioctl_is_enotty", Any, |_| {
            let vm = create_vm(&dev(), 0).map_err(|e| format!("errno {e}"))?;
            eq(
                ioctl(vm.as_raw_fd(), io(0xe0), 0),
                Err(ENOTTY),
                "vm io(0xe0)",
            )
        }),
        ("vm_check_extension_answers_on_the_vm_fd", Any, |c| {
            let vm = create_vm(&dev(), 0).map_err(|e| format!("errno {e}"))?;
            let want = 0b11 | if c.tdx { 1 << KVM_X86_TDX_VM } else { 0 };
            eq(
                ioctl(vm.as_raw_fd(), io(0x03), KVM_CAP_VM_TYPES),
                Ok(want),
                "VM_TYPES on VM fd",
            )
        }),
        (
            "many_vms_open_at_once_then_closed_leave_nothing",
            Any,
            |c| {
                let kvm = dev();
                let mut vms = Vec::new();
                for i in 0..64 {
                    let t = if c.tdx && i % 4 == 0 {
                        KVM_X86_TDX_VM
                    } else {
                        i % 2
                    };
                    vms.push(create_vm(&kvm, t).map_err(|e| format!("vm {i}: errno {e}"))?);
                }
                check(
                    stats().iter().any(|(k, v)| k == "vms" && *v == 64),
                    "64 VMs counted",
                )?;
                drop(vms);
                counts_are_zero()
            },
        ),
        ("hkids_are_reused_after_close", Tdx, |_| {
            let kvm = dev();
            for i in 0..100 {
                drop(create_vm(&kvm, KVM_X86_TDX_VM).map_err(|e| format!("TD {i}: errno {e}"))?);
            }
            counts_are_zero()
        }),
        ("running_out_of_hkids_is_ebusy_not_a_crash", Tdx, |_| {
            let kvm = dev();
            let mut tds = Vec::new();
            loop {
                match create_vm(&kvm, KVM_X86_TDX_VM) {
                    Ok(fd) => tds.push(fd),
                    Err(e) => {
                        eq(e, libc::EBUSY, "after the last HKID")?;
                        break;
                    }
                }
                if tds.len() > 1000 {
                    return Err("no HKID limit".into());
                }
            }
            drop(tds);
            counts_are_zero()
        }),
        ("open_close_races_from_several_threads", Any, |c| {
            let tdx = c.tdx;
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    std::thread::spawn(move || -> Result<(), String> {
                        for i in 0..200u64 {
                            let kvm = dev();
                            let ty = if tdx && (i + t) % 3 == 0 {
                                KVM_X86_TDX_VM
                            } else {
                                i % 2
                            };
                            let vm = create_vm(&kvm, ty).map_err(|e| format!("errno {e}"))?;
                            drop(kvm);
                            let _ = ioctl(vm.as_raw_fd(), io(0x03), KVM_CAP_VM_TYPES);
                            drop(vm);
                        }
                        Ok(())
                    })
                })
                .collect();
            for t in threads {
                t.join().map_err(|_| "thread panicked")??;
            }
            counts_are_zero()
        }),
    ]
}
