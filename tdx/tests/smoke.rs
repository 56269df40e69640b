use mmu::{Gpa, Hpa};
use tdx::abi::{lifecycle, op_state, sept_state, SeptLevel};
use tdx::swmod::ModuleLine;
use tdx::{Block, Tdx};
use testkit::td::*;
use testkit::HostEnv;

testkit::per_module_line!(build_map_block_track_remove_teardown);

fn build_map_block_track_remove_teardown(line: ModuleLine) {
    let env = HostEnv::with_capacity(4096);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let tdr_pfn = td.tdr.hpa().pfn();
    assert_eq!(m.td_info(tdr_pfn).unwrap().op_state, op_state::RUNNABLE);
    // Build tables for GPA 0x1000: L3 (PML4 entry level 3) -> ... SEPT.ADD at levels 3, 2, 1.
    let gpa = Gpa::new(0x1000);
    for lvl in [3u8, 2, 1] {
        let page = host_page(&env).pfn().hpa();
        tdx.mem_sept_add(td.tdr, Gpa::new(0), SeptLevel(lvl), page)
            .expect("SEPT.ADD");
    }
    let data = host_page(&env).pfn().hpa();
    tdx.mem_page_aug(td.tdr, gpa, SeptLevel(0), data)
        .expect("AUG");
    assert_eq!(
        m.sept_entry(tdr_pfn, gpa.raw(), SeptLevel(0)).unwrap().0,
        sept_state::PENDING
    );
    // Remove without block: refused.
    let e = tdx.mem_page_remove(td.tdr, gpa, SeptLevel(0)).unwrap_err();
    println!("{e:?}");
    assert_eq!(
        tdx.mem_range_block(td.tdr, gpa, SeptLevel(0)).unwrap(),
        Block::Blocked
    );
    assert_eq!(
        tdx.mem_range_block(td.tdr, gpa, SeptLevel(0)).unwrap(),
        Block::AlreadyBlocked
    );
    let e = tdx.mem_page_remove(td.tdr, gpa, SeptLevel(0)).unwrap_err();
    println!("{e:?}");
    // vCPU inside since before the track: still not tracked.
    assert!(m.vcpu_enter(td.vcpus[0].hpa().pfn()));
    tdx.mem_track(td.tdr).expect("TRACK");
    let e = tdx.mem_page_remove(td.tdr, gpa, SeptLevel(0)).unwrap_err();
    println!("{e:?}");
    m.vcpu_exit(td.vcpus[0].hpa().pfn());
    assert_eq!(
        tdx.mem_page_remove(td.tdr, gpa, SeptLevel(0)).unwrap(),
        data
    );
    // Teardown.
    tdx.vp_flush(td.vcpus[0]).expect("VP.FLUSH");
    tdx.mng_vpflushdone(td.tdr).expect("VPFLUSHDONE");
    tdx.phymem_cache_wb(false).expect("CACHE.WB");
    tdx.mng_key_freeid(td.tdr).expect("FREEID");
    assert_eq!(m.td_info(tdr_pfn).unwrap().lifecycle, lifecycle::TEARDOWN);
    let mut n = 0;
    m.for_each_sept_entry(tdr_pfn, |_, _, _, p| {
        let _ = p;
        n += 1;
    });
    println!(
        "sept entries {n} chld {}",
        m.td_info(tdr_pfn).unwrap().chldcnt
    );
    let e = tdx.phymem_page_reclaim(td.tdr.hpa()).unwrap_err();
    println!("{e:?}");
    let _ = Hpa::new(0);
}
