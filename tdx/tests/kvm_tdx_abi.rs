// SPDX-License-Identifier: GPL-2.0-only
//! The TDX sub-commands' core (`tdx::kvm`) against the software TDX module, on both module
//! lines: the capabilities KVM reports from TDH.SYS.RD, INIT_VM's TD_PARAMS and its errnos
//! (upstream 6.16 `tdx.c`), TDH.MNG.INIT of what INIT_VM built (and its hw_error), and
//! GET_CPUID's walk over TDH.MNG.RD.

mod common;

use common::{new_vcpu, private_fault};
use mmu::cache::VcpuMmuCaches;
use mmu::tdp::{FaultOutcome, MmuConfig, TdpMmu};
use mmu::{Gfn, GpaWidth, Level};
use std::sync::atomic::Ordering::Relaxed;
use tdx::abi::td_params::TdParams;
use tdx::abi::{md, status};
use tdx::kvm::init_mem::{init_mem_region, Populate};
use tdx::kvm::init_vm::{self, VmLimits};
use tdx::kvm::rules;
use tdx::kvm::uapi::KvmTdxInitMemRegion;
use tdx::kvm::uapi::{
    KvmCpuidEntry2, KvmTdxCapabilities, KvmTdxInitVm, KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
};
use tdx::kvm::{get_cpuid, Errno, TdConf};
use tdx::swmod::{ModuleLine, XFAM_FIXED0};
use tdx::Tdx;
use testkit::td::{
    backend as td_backend, build_td, host_page, sw_module_on, Backend, Stage, TdMmu,
};
use testkit::HostEnv;

/// KVM's XCR0 | XSS on the test's host: x87, SSE, AVX, AVX-512, PKRU (0x2e7).
const KVM_XFAM: u64 = 0x2e7;

const LIMITS: VmLimits = VmLimits {
    max_vcpus: 4,
    tsc_khz: 2_500_000,
    ept_5level: true,
    kvm_xfam: KVM_XFAM,
};

fn caps(conf: &TdConf, room: u32) -> Result<(KvmTdxCapabilities, Vec<KvmCpuidEntry2>), Errno> {
    let mut c = KvmTdxCapabilities::ZERO;
    c.cpuid.nent = room;
    c.reserved[7] = 0x77;
    let mut e = vec![KvmCpuidEntry2::default(); room as usize];
    conf.capabilities(KVM_XFAM, &mut c, &mut e)?;
    e.truncate(c.cpuid.nent as usize);
    Ok((c, e))
}

/// QEMU's way: the capability entries (configurable bits set) as the CPUID configuration,
/// GPAW 48 in 0x80000008, sub-leaf entries flagged.
fn qemu_cpuid(conf: &TdConf) -> Vec<KvmCpuidEntry2> {
    let (_, mut e) = caps(conf, 64).expect("caps");
    for x in &mut e {
        if x.function == 0x8000_0008 {
            x.eax = (x.eax & !0xff_0000) | 48 << 16;
        }
        if matches!(x.function, 4 | 7 | 0x1f | 0x23) {
            x.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        }
        if x.function == 1 {
            x.eax = 0; // F/M/S: the platform's
        }
    }
    e
}

fn capabilities_come_from_sys_rd(line: ModuleLine) {
    let env = HostEnv::with_capacity(64);
    let m = sw_module_on(&env, line);
    let conf = TdConf::read(&Tdx::new(&m)).expect("TDH.SYS.RD");
    assert_eq!(conf.num_cpuid_config, 18);
    // Too little room: E2BIG, nothing written (nent stays the user's).
    let mut c = KvmTdxCapabilities::ZERO;
    c.cpuid.nent = 17;
    let mut e = vec![KvmCpuidEntry2::default(); 17];
    assert_eq!(
        conf.capabilities(KVM_XFAM, &mut c, &mut e),
        Err(Errno::E2BIG)
    );
    assert_eq!((c.cpuid.nent, c.supported_attrs), (17, 0));

    let (c, e) = caps(&conf, 18).expect("caps");
    assert_eq!(c.supported_attrs, 1 << 28, "SEPT_VE_DISABLE only");
    assert_eq!(c.supported_xfam, KVM_XFAM & XFAM_FIXED0);
    assert_eq!(c.cpuid.nent, 18);
    assert_eq!(
        c.reserved[7], 0x77,
        "reserved words are left as the user gave them"
    );
    // Leaf 1 has no sub-leaf: index 0. 0x80000008 EAX[23:16] = 0xff (GPAW is configurable).
    assert_eq!((e[0].function, e[0].index), (1, 0));
    assert_eq!(e[9].function, 0x8000_0008);
    assert_eq!(e[9].eax >> 16 & 0xff, 0xff);
    assert_eq!(e[9].eax & 0xff, 0xff);
    // (7,0): TSX (EBX 4, 11) and WAITPKG (ECX 5) cleared though the module allows them.
    assert_eq!((e[5].function, e[5].index), (7, 0));
    assert_eq!(e[5].ebx & (1 << 4 | 1 << 11), 0);
    assert_eq!(e[5].ecx & (1 << 5), 0);
    assert_eq!((e[17].function, e[17].index), (0x1f, 5));
    // KVM and the module share no XFAM: EIO.
    let mut c = KvmTdxCapabilities::ZERO;
    c.cpuid.nent = 18;
    let mut e = vec![KvmCpuidEntry2::default(); 18];
    assert_eq!(conf.capabilities(0x4, &mut c, &mut e), Err(Errno::EIO));
}

fn init_vm_refuses_in_upstreams_order(line: ModuleLine) {
    let env = HostEnv::with_capacity(64);
    let m = sw_module_on(&env, line);
    let conf = TdConf::read(&Tdx::new(&m)).expect("TDH.SYS.RD");
    let cpuid = qemu_cpuid(&conf);
    let ok = KvmTdxInitVm {
        attributes: 1 << 28,
        xfam: 0x7,
        ..KvmTdxInitVm::ZERO
    };
    let setup = |iv: &KvmTdxInitVm, e: &[KvmCpuidEntry2], created: bool| {
        init_vm::setup_td_params(&conf, iv, e, &LIMITS, created)
    };
    let p = setup(&ok, &cpuid, false).expect("INIT_VM's TD_PARAMS");
    assert_eq!(p.attributes, 1 << 28);
    assert_eq!(p.xfam, 0x7);
    assert_eq!(p.max_vcpus, 4);
    assert_eq!(p.tsc_frequency, 100);
    assert_eq!(p.config_flags, init_vm::CONFIG_FLAGS_NO_RBP_MOD);
    assert_eq!(p.eptp_controls, tdx::abi::td_params::eptp_controls(4));
    assert_eq!(
        p.cpuid_config_vals[9].eax >> 16 & 0xff,
        0,
        "GPAW is not passed to the module"
    );
    // vCPUs first: EBUSY before any argument check.
    let bad_attr = KvmTdxInitVm {
        attributes: 1,
        ..ok
    };
    assert_eq!(setup(&bad_attr, &cpuid, true), Err(Errno::EBUSY));
    assert_eq!(setup(&bad_attr, &cpuid, false), Err(Errno::EINVAL), "DEBUG");
    let bad_xfam = KvmTdxInitVm {
        xfam: 0x3 | 1 << 17,
        ..ok
    };
    assert_eq!(
        setup(&bad_xfam, &cpuid, false),
        Err(Errno::EINVAL),
        "AMX: not KVM's"
    );
    // GPAW: 52 with 5-level EPT gives a 5-level EPTP and CONFIG_FLAGS.GPAW; 36 or 52 without
    // 5-level EPT, or no 0x80000008 entry: EINVAL.
    let gpaw = |bits: u32| {
        let mut e = cpuid.clone();
        for x in &mut e {
            if x.function == 0x8000_0008 {
                x.eax = (x.eax & !0xff_0000) | bits << 16;
            }
        }
        e
    };
    let p52 = setup(&ok, &gpaw(52), false).expect("GPAW 52");
    assert_eq!(p52.eptp_controls, tdx::abi::td_params::eptp_controls(5));
    assert_eq!(p52.config_flags & 1, 1);
    assert_eq!(setup(&ok, &gpaw(36), false), Err(Errno::EINVAL));
    let no_ept5 = VmLimits {
        ept_5level: false,
        ..LIMITS
    };
    assert_eq!(
        init_vm::setup_td_params(&conf, &ok, &gpaw(52), &no_ept5, false),
        Err(Errno::EINVAL)
    );
    let without: Vec<_> = cpuid
        .iter()
        .copied()
        .filter(|x| x.function != 0x8000_0008)
        .collect();
    assert_eq!(setup(&ok, &without, false), Err(Errno::EINVAL));
    // TSX or WAITPKG asked for: EINVAL.
    let mut tsx = cpuid.clone();
    tsx[5].ebx |= 1 << 11;
    assert_eq!(setup(&ok, &tsx, false), Err(Errno::EINVAL));
    // A leaf that is not configurable: EINVAL (nothing in TD_PARAMS could carry it).
    let mut extra = cpuid.clone();
    extra.push(KvmCpuidEntry2 {
        function: 0xd,
        ..KvmCpuidEntry2::default()
    });
    assert_eq!(setup(&ok, &extra, false), Err(Errno::EINVAL));
    // Leaf 4 without KVM_CPUID_FLAG_SIGNIFCANT_INDEX matches all four sub-leaves: the count
    // no longer matches the entries (upstream's copy_cnt rule): EINVAL.
    let mut unflagged = cpuid.clone();
    unflagged.retain(|x| x.function != 4 || x.index == 0);
    for x in &mut unflagged {
        if x.function == 4 {
            x.flags = 0;
        }
    }
    assert_eq!(setup(&ok, &unflagged, false), Err(Errno::EINVAL));
    // Header checks.
    let mut big = ok;
    big.cpuid.nent = 257;
    assert_eq!(init_vm::check_nent(&big), Err(Errno::E2BIG));
    big.cpuid.nent = 256;
    assert_eq!(init_vm::check_nent(&big), Ok(256));
    let mut r = ok;
    r.reserved[11] = 1;
    assert_eq!(init_vm::check_reserved(&r), Err(Errno::EINVAL));
    let mut r = ok;
    r.cpuid.padding = 1;
    assert_eq!(init_vm::check_reserved(&r), Err(Errno::EINVAL));
    assert_eq!(init_vm::check_reserved(&ok), Ok(()));
}

fn mng_init_takes_init_vms_td_params_and_get_cpuid_reads_them_back(line: ModuleLine) {
    let env = HostEnv::with_capacity(256);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let conf = TdConf::read(&tdx).expect("TDH.SYS.RD");
    let cpuid = qemu_cpuid(&conf);
    let iv = KvmTdxInitVm {
        xfam: 0x3,
        mrconfigid: [1, 2, 3, 4, 5, 6],
        ..KvmTdxInitVm::ZERO
    };
    // A value the module refuses though KVM passes it on: (7,0).EBX bit 0 is native.
    let mut refused = cpuid.clone();
    refused[5].ebx |= 1;
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    let page = host_page(&env);
    let p = init_vm::setup_td_params(&conf, &iv, &refused, &LIMITS, false).expect("KVM side");
    p.write_to(&page);
    let err = tdx
        .mng_init(td.tdr, page.pfn().hpa())
        .expect_err("module refuses");
    let st = err.status;
    assert_eq!(st, 0xC000_0100_0000_0045, "OPERAND_INVALID|CPUID_CONFIG");
    assert_eq!(err.rcx, 7, "RCX names leaf 7, sub-leaf 0");
    assert_eq!(
        init_vm::mng_init_error(st),
        (Errno::EINVAL, st),
        "hw_error = the status"
    );
    assert_eq!(
        init_vm::mng_init_error(status::TDCS_NOT_ALLOCATED),
        (Errno::EIO, 0)
    );
    // The TD is still uninitialised; INIT_VM again with a good configuration works.
    let p: TdParams =
        init_vm::setup_td_params(&conf, &iv, &cpuid, &LIMITS, false).expect("KVM side");
    assert_eq!(&p.mr_config_id[..9], &[1, 0, 0, 0, 0, 0, 0, 0, 2]);
    p.write_to(&page);
    tdx.mng_init(td.tdr, page.pfn().hpa()).expect("MNG.INIT");

    let read = |f: u64| tdx.mng_rd(td.tdr, f);
    let mut out = vec![KvmCpuidEntry2::default(); 256];
    let n = get_cpuid::get_cpuid(read, 48, &mut out).expect("GET_CPUID");
    let got: Vec<(u32, u32, u32)> = out[..n]
        .iter()
        .map(|e| (e.function, e.index, e.flags))
        .collect();
    let s = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    let mut want = vec![(0, 0, 0), (1, 0, 0)];
    want.extend((0..4).map(|i| (4, i, s)));
    want.extend((0..3).map(|i| (7, i, s)));
    want.extend([(0xa, 0, 0), (0xd, 0, s), (0x15, 0, 0), (0x1c, 0, 0)]);
    want.extend((0..6).map(|i| (0x1f, i, s)));
    want.extend([
        (0x23, 0, s),
        (0x8000_0000, 0, 0),
        (0x8000_0001, 0, 0),
        (0x8000_0008, 0, 0),
    ]);
    assert_eq!(got, want);
    // The TD's values: leaf 0 "GenuineIntel", max leaf 0x23; 0x15 EBX = the TSC frequency
    // INIT_VM asked for; 0x80000008 EAX[23:16] = GPAW, EAX[7:0] = what INIT_VM configured.
    assert_eq!((out[0].eax, out[0].ebx), (0x23, 0x756e_6547));
    let e15 = out[..n].iter().find(|e| e.function == 0x15).expect("0x15");
    assert_eq!(e15.ebx, 100);
    let e8 = out[n - 1];
    assert_eq!(e8.eax >> 16 & 0xff, 48);
    assert_eq!(e8.eax & 0xff, cpuid[9].eax & 0xff);
    // (7,0) as configured: no TSX (KVM cleared it), the PKS bit follows ATTRIBUTES.PKS (0).
    let e7 = out[..n]
        .iter()
        .find(|e| (e.function, e.index) == (7, 0))
        .expect("7.0");
    assert_eq!(e7.ebx & (1 << 4 | 1 << 11), 0);
    assert_eq!(e7.ecx >> 31, 0);
    // A field the module does not have fails the whole command with EIO only for leaf 0.
    let none = |_f: u64| {
        Err::<u64, _>(tdx::TdxError::new(
            status::METADATA_FIELD_ID_INCORRECT,
            0,
            0,
        ))
    };
    assert_eq!(get_cpuid::get_cpuid(none, 48, &mut out), Err(Errno::EIO));
    assert_eq!(
        get_cpuid::field_id(0x8000_0008, None),
        md::td::CPUID_VALUES | 1 << 16 | 8 << 9 | 0x1fe
    );
}

/// The module's side of INIT_MEM_REGION over the software module: "user memory" is a byte
/// image at address 0x7000_0000; each page goes through a bounce page, PAGE.ADD through the
/// mirror's fault path; a signal may arrive before page `signal_at`.
struct HostPopulate<'a> {
    env: &'a HostEnv,
    mmu: &'a TdMmu<'a>,
    backend: &'a Backend<'a>,
    caches: VcpuMmuCaches,
    image: &'a [u8],
    /// The "guest_memfd": one page per GFN, the same page when asked again.
    gmem: std::collections::BTreeMap<u64, mmu::Pfn>,
    done: usize,
    signal_at: Option<usize>,
}

impl Populate for HostPopulate<'_> {
    fn signal_pending(&mut self) -> bool {
        self.signal_at.take_if(|&mut at| at == self.done).is_some()
    }

    fn populate(&mut self, gpa: u64, source: u64, measure: bool) -> Result<(), Errno> {
        let off = usize::try_from(source - 0x7000_0000).map_err(|_| Errno::EFAULT)?;
        let bytes = self.image.get(off..off + 4096).ok_or(Errno::EFAULT)?;
        let bounce = host_page(self.env);
        for (w, c) in bounce.words().iter().zip(bytes.chunks_exact(8)) {
            w.store(u64::from_le_bytes(c.try_into().expect("8 bytes")), Relaxed);
        }
        let gfn = Gfn::new(gpa >> 12);
        self.backend.arm_populate(gfn, bounce.pfn().hpa(), measure);
        let env = self.env;
        let pfn = *self
            .gmem
            .entry(gfn.raw())
            .or_insert_with(|| host_page(env).pfn());
        let f = private_fault(gfn, pfn, Level::L4K);
        let r = testkit::fault(self.mmu, &mut self.caches, &f);
        let unused = self.backend.disarm_populate();
        match r {
            Ok(FaultOutcome::Mapped(_)) if !unused => {
                self.done += 1;
                Ok(())
            }
            // Already mapped (the same guest_memfd page): the module's EEXIST.
            Ok(_) => Err(Errno::EEXIST),
            Err(_) => Err(Errno::EIO),
        }
    }
}

/// A TD built as QEMU builds one (CAPABILITIES' leaves, INIT_VM, a vCPU, INIT_MEM_REGION of
/// `image` at GPA 1 MiB with MEASURE, FINALIZE): its MRTD.
fn build_and_measure(line: ModuleLine, image: &[u8], signal_at: Option<usize>) -> [u8; 48] {
    let env = HostEnv::with_capacity(4096);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let conf = TdConf::read(&tdx).expect("TDH.SYS.RD");
    let td = build_td(&tdx, &env, 3, 0, Stage::TdcsAdded);
    let iv = KvmTdxInitVm {
        xfam: 0x3,
        ..KvmTdxInitVm::ZERO
    };
    let p =
        init_vm::setup_td_params(&conf, &iv, &qemu_cpuid(&conf), &LIMITS, false).expect("INIT_VM");
    let page = host_page(&env);
    p.write_to(&page);
    tdx.mng_init(td.tdr, page.pfn().hpa()).expect("MNG.INIT");
    let v = new_vcpu(&tdx, &env, td.tdr, tdx::swmod::TDVPS_PAGES);
    tdx.vp_init(v, 0).expect("VP.INIT");
    let backend: Backend<'_> = td_backend(&m, &td);
    let mmu: TdMmu<'_> = TdpMmu::new(&env, &backend, MmuConfig::td(GpaWidth::Bits48)).expect("mmu");
    let mut pop = HostPopulate {
        env: &env,
        mmu: &mmu,
        backend: &backend,
        caches: VcpuMmuCaches::new(),
        image,
        gmem: std::collections::BTreeMap::new(),
        done: 0,
        signal_at,
    };
    let pages = (image.len() / 4096) as u64;
    let mut r = KvmTdxInitMemRegion {
        source_addr: 0x7000_0000,
        gpa: 0x10_0000,
        nr_pages: pages,
    };
    assert_eq!(rules::check_region(&r, 1 << 47), Ok(()));
    if let Some(at) = signal_at {
        // A signal: EINTR with the progress made; QEMU retries with what is left.
        assert_eq!(init_mem_region(&mut r, true, &mut pop), Err(Errno::EINTR));
        assert_eq!(r.nr_pages, pages - at as u64);
        assert_eq!(r.gpa, 0x10_0000 + 4096 * at as u64);
    }
    assert_eq!(init_mem_region(&mut r, true, &mut pop), Ok(()));
    assert_eq!(r.nr_pages, 0);
    // Adding a page twice: EEXIST, nothing done.
    let mut again = KvmTdxInitMemRegion {
        source_addr: 0x7000_0000,
        gpa: 0x10_0000,
        nr_pages: 1,
    };
    assert_eq!(
        init_mem_region(&mut again, true, &mut pop),
        Err(Errno::EEXIST)
    );
    assert_eq!(again.nr_pages, 1);
    let c = backend.tdx().backend();
    assert_eq!(c.calls(tdx::abi::leaf::MEM_PAGE_ADD), pages);
    assert_eq!(c.calls(tdx::abi::leaf::MR_EXTEND), 16 * pages);
    tdx.mr_finalize(td.tdr).expect("MR.FINALIZE");
    mmu.free_vcpu_caches(&mut pop.caches);
    m.mrtd(td.tdr.hpa().pfn()).expect("finalised")
}

fn tds_from_one_image_measure_the_same_and_one_byte_changes_it(line: ModuleLine) {
    let image: Vec<u8> = (0..4 * 4096).map(|i| (i * 7 + 3) as u8).collect();
    let a = build_and_measure(line, &image, None);
    let b = build_and_measure(line, &image, Some(2));
    assert_eq!(
        a, b,
        "same image, same MRTD (an interrupted INIT_MEM_REGION included)"
    );
    let mut changed = image.clone();
    changed[4096 + 17] ^= 1;
    let c = build_and_measure(line, &changed, None);
    assert_ne!(a, c, "one changed byte changes MRTD");
}

testkit::per_module_line!(
    tds_from_one_image_measure_the_same_and_one_byte_changes_it,
    capabilities_come_from_sys_rd,
    init_vm_refuses_in_upstreams_order,
    mng_init_takes_init_vms_td_params_and_get_cpuid_reads_them_back,
);
