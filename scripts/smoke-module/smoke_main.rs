// SPDX-License-Identifier: GPL-2.0-only
//! Pipeline smoke module: proves that an out-of-tree Rust module builds against the test
//! kernel and loads and unloads in QEMU. It prints one line on load and one on unload,
//! which scripts/pipeline-smoke.sh looks for in the guest's dmesg.

use kernel::prelude::*;

module! {
    type: SmokeModule,
    name: "tdxkvm_smoke",
    author: "tdx-kvm-rs",
    description: "Kernel-in-QEMU pipeline smoke test",
    license: "GPL",
}

struct SmokeModule;

impl kernel::Module for SmokeModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("smoke module loaded\n");
        Ok(SmokeModule)
    }
}

impl Drop for SmokeModule {
    fn drop(&mut self) {
        pr_info!("smoke module unloaded\n");
    }
}
