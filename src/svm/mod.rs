// SPDX-License-Identifier: GPL-2.0-only
//! The SVM backend (upstream `arch/x86/kvm/svm/svm.c`): one VMCB per vCPU, loaded from the
//! backend-neutral [`CpuState`] before every `VMRUN` and stored back after, and the exit turned
//! into a backend-neutral [`Exit`] for [`crate::run`].
//!
//! What the VMCB intercepts (`init_vmcb`): INTR, NMI, SMI (host events: the guest exits, the
//! host takes them after `STGI`), SHUTDOWN, the SVM instructions (VMRUN, VMLOAD, VMSAVE, STGI,
//! CLGI, SKINIT, INVLPGA: `#UD` in the guest, which has no nested SVM), HLT, port I/O (all of
//! it, through a shared all-ones IOPM), MSRs (the VM's MSRPM, [`msrpm`], that passes through only
//! the MSRs VMLOAD/VMSAVE switch: FS/GS/KernelGS base, STAR, LSTAR, CSTAR, SFMASK, SYSENTER_*,
//! and of those only the accesses the VM's MSR filter allows),
//! CPUID, VMMCALL, XSETBV, INVD, WBINVD, MONITOR/MWAIT, RDPRU, RDPMC, and `#MC` (handed to the host's
//! handler), `#AC` and `#DB` (re-injected), CR4 reads and writes ([`crate::run::cr`]; the
//! hardware CR4 keeps the host's MCE bit). Debug-register accesses are not intercepted: the
//! guest's DR0-3 are loaded before VMRUN and read back after, DR6/DR7 are the VMCB's. EFER.SVME is
//! kept set in the VMCB and hidden from the guest ([`x86::svm::store_guest_state`]).
//!
//! Host state: `VMRUN`/`#VMEXIT` switch CS/SS/RSP/RIP/RFLAGS/CRs/EFER/GDTR/IDTR through the
//! per-CPU `MSR_VM_HSAVE_PA` page; the entry code VMSAVEs the rest (FS/GS/TR/LDTR,
//! KernelGsBase, STAR/LSTAR/CSTAR/SFMASK, SYSENTER) into a per-CPU area and VMLOADs it after
//! the exit. `TSC_AUX` (read by RDTSCP/RDPID, which are not intercepted) is switched by WRMSR
//! around the run when the guest's value differs from the host's. DR7 is reset by `#VMEXIT`
//! (host breakpoints are restored by the glue), DEBUGCTL is left to hardware (no LBR
//! virtualisation). XCR0 is switched to the guest's with IRQs off when the guest has
//! CR4.OSXSAVE, as upstream's `kvm_load_guest_xsave_state`.
//!
//! Entry hygiene (HOOK(entry), upstream `svm_vcpu_run`/`svm_vcpu_enter_exit`/`svm_vcpu_load`):
//! the speculation mitigations of `vmenter.S` (guest/host SPEC_CTRL, VERW before VMRUN, RSB
//! stuffing, RET untraining or IBPB after the exit), VIRT_SPEC_CTRL/LS_CFG SSBD around the run,
//! an IBPB when a CPU switches to another vCPU's VMCB, the VMSCAPE exit-to-user IBPB mark, and
//! `guest_state_enter/exit_irqoff` around VMRUN (src/svm/glue.c).
//!
//! Every entry copies the whole save area; the VMCB clean bits tell the CPU which cached
//! groups did not change since the VMCB's last #VMEXIT on this CPU ([`x86::svm_clean`]).

pub(crate) mod cr8; // HOOK(cr8)
pub(crate) mod events;
pub(crate) mod glue;
pub(crate) mod hw;
// HOOK(misc): the VM's MSR permission map (MSR filter vs pass-through MSRs).
pub(crate) mod msrpm;

use crate::env::OwnedPage;
use crate::run::{Exit, ExitInfo};
use crate::stats;
use x86::state::CpuState;
use x86::svm::{exit, intercept, vector, Vmcb};

const MSR_TSC_AUX: u32 = 0xc000_0103;

/// The shape of an ordinary VM's shared root: AMD's nested paging walks tables of the host's
/// own paging mode, so a host with 5-level paging (LA57) needs 5-level NPT (upstream
/// `get_npt_level`), which the TdpMmu builds for a 52-bit GPA width.
pub(crate) fn npt_gpa_width() -> mmu::GpaWidth {
    // SAFETY: reads a boot-time constant.
    if unsafe { glue::tdxkvm_pgtable_l5_enabled() } {
        mmu::GpaWidth::Bits52
    } else {
        mmu::GpaWidth::Bits48
    }
}
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;
/// XCR0's PKRU state component (bit 9).
const XFEATURE_MASK_PKRU: u64 = 1 << 9;

/// Exceptions always intercepted (upstream `init_vmcb`): `#MC` goes to the host's handler;
/// `#AC` and `#DB` are intercepted so a guest whose IDT makes their delivery raise the same
/// exception again cannot hold the physical CPU in an endless, uninterruptible microcode
/// delivery loop (CVE-2015-5307 for #AC, CVE-2015-8104 for #DB). Both are re-injected
/// (`ac_interception`, `db_interception`) unless userspace guest debugging claims the #DB.
/// Guest debugging only adds to this set.
// HOOK(ud): #UD is always intercepted too, emulated or reinjected (crate::ud).
const BASE_EXCEPTIONS: u32 =
    (1 << vector::AC) | (1 << vector::DB) | (1 << vector::MC) | (1 << vector::UD);

/// One vCPU's SVM state.
pub(crate) struct SvmVcpu {
    vmcb_page: OwnedPage,
    vmcb_pa: u64,
    /// The CPU the vCPU last ran on (`u32::MAX`: never).
    last_cpu: u32,
    /// The ASID generation the vCPU's ASID belongs to (0: none).
    asid_generation: u64,
    /// Exception intercepts besides #MC (the `exits` helper's #DB/#BP for guest debugging).
    extra_exceptions: u32,
    /// HOOK(irqmod): interrupt/NMI windows and NMI masking ([`events`]).
    pub(crate) events: events::SvmEvents,
    /// HOOK(misc): the MSR permission map in the VMCB: the VM's ([`msrpm`]), set by
    /// [`SvmVcpu::use_msrpm`] at creation.
    msrpm_pa: u64,
    /// HOOK(entry): the guest's MSR_IA32_SPEC_CTRL (upstream `svm->spec_ctrl`), loaded around
    /// VMRUN by the entry code when the host has SPEC_CTRL and hardware does not switch it
    /// (with V_SPEC_CTRL the VMCB carries it). Copied from `CpuState::msr.spec_ctrl` (set by
    /// `KVM_SET_MSRS`, or by a guest whose CPUID has the MSR) before every entry; every guest
    /// access to the MSR is intercepted, so the entry code never reads it back.
    spec_ctrl: u64,
    /// HOOK(entry): what the CPU that ran this VMCB last may hold cached (VMCB clean bits).
    clean: x86::svm_clean::CleanTracker,
}

/// HOOK(entry): whether guest writes to MSR_IA32_SPEC_CTRL exit (upstream
/// `msr_write_intercepted(vcpu, MSR_IA32_SPEC_CTRL)`): always here, the MSR is not passed
/// through ([`x86::svm::PASSTHROUGH_MSRS`]), so the entry code never reads the guest's value
/// back.
const SPEC_CTRL_INTERCEPTED: bool = true;

/// HOOK(entry): the CR-intercept word's bits for reads (0-15) and writes (16-31) of CR4.
const INTERCEPT_CR4_READ: u32 = 1 << 4;
const INTERCEPT_CR4_WRITE: u32 = 1 << (16 + 4);
/// HOOK(entry): `SVM_EXIT_READ_CR4`, `SVM_EXIT_WRITE_CR4`.
const EXIT_READ_CR4: u64 = 0x004;
const EXIT_WRITE_CR4: u64 = 0x014;

impl Drop for SvmVcpu {
    fn drop(&mut self) {
        // HOOK(entry): upstream svm_vcpu_free's svm_clear_current_vmcb.
        // SAFETY: plain per-CPU compare-and-exchange.
        unsafe { glue::tdxkvm_svm_forget_vmcb(self.vmcb_pa) };
    }
}

impl SvmVcpu {
    /// A vCPU's VMCB (upstream `svm_vcpu_create` + `init_vmcb`), nested paging on `ncr3`.
    pub(crate) fn new(ncr3: u64) -> Option<Self> {
        let vmcb_page = OwnedPage::new(stats::Kind::VcpuPage)?;
        // SAFETY: a direct-map address of our page.
        let vmcb_pa = unsafe { crate::glue::tdxkvm_virt_to_pfn(vmcb_page.virt().cast()) } << 12;
        let mut v = SvmVcpu {
            vmcb_page,
            vmcb_pa,
            last_cpu: u32::MAX,
            asid_generation: 0,
            extra_exceptions: 0,
            events: Default::default(),
            msrpm_pa: hw::permission_maps().1,
            spec_ctrl: 0,
            clean: x86::svm_clean::CleanTracker::new(),
        };
        v.init_vmcb(ncr3);
        Some(v)
    }

    fn vmcb(&mut self) -> &mut Vmcb {
        // SAFETY: the page is a zeroed, page-aligned 4 KiB page owned by `self` (a `Vmcb` is
        // 4096 bytes of integers, align 4096); `&mut self` makes the borrow exclusive; the CPU
        // only touches it during VMRUN, which runs inside `enter` on this same borrow.
        unsafe { &mut *self.vmcb_page.virt().cast::<Vmcb>() }
    }

    fn init_vmcb(&mut self, ncr3: u64) {
        let (iopm, _) = hw::permission_maps();
        let msrpm = self.msrpm_pa;
        let extra = self.extra_exceptions;
        let vmcb = self.vmcb();
        *vmcb = Vmcb::zeroed();
        let c = &mut vmcb.control;
        // HOOK(entry): CR4 writes are checked against the vCPU's CPUID, and reads answered
        // with the guest's value while the hardware's keeps the host's MCE bit, as upstream's
        // init_vmcb/svm_set_cr4 ([`crate::run::cr`]).
        c.intercepts[intercept::CR] = INTERCEPT_CR4_READ | INTERCEPT_CR4_WRITE;
        // HOOK(cr8): CR8 writes too, as upstream's init_vmcb ([`crate::run::cr8`]).
        c.intercepts[intercept::CR] |= cr8::INTERCEPT_CR8_WRITE;
        // No debug-register access is intercepted: the guest's DR0-3 are switched around VMRUN
        // and DR6/DR7 live in the VMCB (upstream's KVM_DEBUGREG_WONT_EXIT mode, always on).
        c.intercepts[intercept::DR] = 0;
        c.intercepts[intercept::EXCEPTION] = BASE_EXCEPTIONS | extra;
        c.intercepts[3] = intercept::INTR
            | intercept::NMI
            | intercept::SMI
            | intercept::RDPMC
            | intercept::CPUID
            | intercept::INVD
            | intercept::HLT
            | intercept::INVLPGA
            | intercept::IOIO_PROT
            | intercept::MSR_PROT
            | intercept::SHUTDOWN;
        c.intercepts[4] = intercept::VMRUN
            | intercept::VMMCALL
            | intercept::VMLOAD
            | intercept::VMSAVE
            | intercept::STGI
            | intercept::CLGI
            | intercept::SKINIT
            | intercept::WBINVD
            | intercept::MONITOR
            | intercept::MWAIT
            | intercept::MWAIT_COND
            | intercept::XSETBV
            | intercept::RDPRU;
        c.iopm_base_pa = iopm;
        c.msrpm_base_pa = msrpm;
        c.int_ctl = x86::svm::int_ctl::V_INTR_MASKING;
        c.nested_ctl = x86::svm::NESTED_CTL_NP_ENABLE;
        c.nested_cr3 = ncr3;
        c.tlb_ctl = x86::svm::tlb_ctl::DO_NOTHING;
        self.asid_generation = 0;
        self.last_cpu = u32::MAX;
        // HOOK(entry): a rewritten VMCB: nothing cached may be used (vmcb_mark_all_dirty).
        self.clean.invalidate();
    }

    /// HOOK(misc): points the VMCB at the VM's MSR permission map (which follows the VM's MSR
    /// filter), set once at vCPU creation; kept across [`SvmVcpu::reset_after_shutdown`].
    pub(crate) fn use_msrpm(&mut self, pa: u64) {
        self.msrpm_pa = pa;
        self.vmcb().control.msrpm_base_pa = pa;
    }

    /// After a shutdown (triple fault) the VMCB is re-initialised, as upstream's
    /// `shutdown_interception` does (the save area is undefined after a shutdown intercept).
    pub(crate) fn reset_after_shutdown(&mut self) {
        let ncr3 = self.vmcb().control.nested_cr3;
        self.init_vmcb(ncr3);
        self.events = Default::default();
    }

    /// Sets the extra exception vectors to intercept (bit n = vector n); the
    /// [`BASE_EXCEPTIONS`] stay intercepted whatever `mask` says.
    #[allow(dead_code)]
    pub(crate) fn set_exception_intercepts(&mut self, mask: u32) {
        self.extra_exceptions = mask & !BASE_EXCEPTIONS;
        let v = BASE_EXCEPTIONS | self.extra_exceptions;
        self.vmcb().control.intercepts[intercept::EXCEPTION] = v;
    }

    /// HOOK(clock): intercepts HLT unless the VM disabled HLT exits
    /// (`KVM_CAP_X86_DISABLE_EXITS`, upstream `init_vmcb`'s `kvm_hlt_in_guest`).
    /// Writes the VMCB only when the setting changes (called before every entry).
    pub(crate) fn set_hlt_intercept(&mut self, on: bool) {
        let c = &mut self.vmcb().control;
        let v = if on {
            c.intercepts[3] | intercept::HLT
        } else {
            c.intercepts[3] & !intercept::HLT
        };
        if v != c.intercepts[3] {
            c.intercepts[3] = v;
        }
    }

    /// HOOK(misc): intercepts the guest's DR0-7 reads and writes while the debugger's hardware
    /// breakpoints are loaded (upstream intercepts DR accesses whenever guest debugging is on;
    /// here only then, since otherwise the guest's own registers are loaded), else none.
    pub(crate) fn set_dr_intercepts(&mut self, on: bool) {
        self.vmcb().control.intercepts[intercept::DR] = if on { 0x00ff_00ff } else { 0 };
    }

    /// Picks the ASID for this run on `cpu` (upstream `pre_svm_run` / `new_asid`) and asks for
    /// a TLB flush when `flush` (the VM's mappings changed since this vCPU last flushed).
    ///
    /// # Safety
    ///
    /// IRQs disabled, on CPU `cpu`.
    unsafe fn pre_run(&mut self, cpu: u32, flush: bool) {
        // SAFETY: IRQs off on this CPU (caller's contract).
        let sd = unsafe { hw::this_cpu() };
        let mut need_new = self.last_cpu != cpu || self.asid_generation != sd.asid_generation;
        let mut tlb_ctl = x86::svm::tlb_ctl::DO_NOTHING;
        if flush && !need_new {
            if hw::flush_by_asid() {
                tlb_ctl = x86::svm::tlb_ctl::FLUSH_ASID;
            } else {
                // Without FlushByAsid a fresh ASID is the flush (upstream: generation--).
                need_new = true;
            }
        }
        if need_new {
            if sd.next_asid > sd.max_asid {
                sd.asid_generation += 1;
                sd.next_asid = 1;
                tlb_ctl = x86::svm::tlb_ctl::FLUSH_ALL_ASID;
            }
            let asid = sd.next_asid;
            sd.next_asid += 1;
            self.asid_generation = sd.asid_generation;
            self.last_cpu = cpu;
            self.vmcb().control.asid = asid;
        }
        self.vmcb().control.tlb_ctl = tlb_ctl;
    }

    /// Runs the guest once: `st` into the VMCB, VMRUN, the VMCB back into `st`, the exit.
    ///
    /// # Safety
    ///
    /// IRQs and preemption disabled on CPU `cpu`, SVM enabled on it ([`hw::ready`]); the
    /// guest FPU is loaded and current ([`crate::fpu::reload_irqoff`]); `st.xcr0` is valid for
    /// XSETBV on this host when the guest has CR4.OSXSAVE (the run loop checks it).
    pub(crate) unsafe fn enter(
        &mut self,
        st: &mut CpuState,
        cpu: u32,
        flush: bool,
        host_xcr0: u64,
    ) -> ExitInfo {
        // SAFETY: IRQs off on `cpu` (caller's contract).
        unsafe { self.pre_run(cpu, flush) };
        // HOOK(entry): IBPB when this CPU last ran another VMCB (upstream svm_vcpu_load).
        // SAFETY: IRQs off; per-CPU data of this CPU.
        unsafe { glue::tdxkvm_svm_switch_vmcb(self.vmcb_pa) };
        let tsc_offset = st.tsc_offset;
        // HOOK(entry): the guest runs with the host's CR4.MCE whatever its own CR4 says, so a
        // machine check in guest mode is not a shutdown (upstream svm_set_cr4); CR4 reads and
        // writes are intercepted, so the guest only ever sees and sets its own value.
        // SAFETY: reads this CPU's CR4 shadow.
        let host_mce = unsafe { glue::tdxkvm_host_cr4_mce() };
        let guest_cr4 = st.cr4;
        {
            // HOOK(misc): the event first: delivering a pending exception's payload writes
            // CR2 (#PF) or DR6 (#DB) into `st`, which the VMCB must then carry.
            let (inj, err) = event_to_inject(st);
            let vmcb = self.vmcb();
            x86::svm::load_guest_state(vmcb, st, tsc_offset);
            vmcb.save.cr4 |= host_mce;
            vmcb.control.event_inj = inj;
            vmcb.control.event_inj_err = err;
            vmcb.control.int_state = u32::from(st.events.interrupt_shadow != 0);
            // HOOK(entry): SPEC_CTRL (upstream svm_set_msr writes the VMCB's with V_SPEC_CTRL).
            // SAFETY: reads a boot-time CPU feature.
            if unsafe { glue::tdxkvm_svm_v_spec_ctrl() } {
                vmcb.spec_ctrl = st.msr.spec_ctrl;
            }
        }
        self.spec_ctrl = st.msr.spec_ctrl;
        // HOOK(irqmod): interrupt/NMI windows, IRET intercept, NMI masking.
        let mut ev = core::mem::take(&mut self.events);
        ev.prepare(self.vmcb(), st);
        self.events = ev;
        // HOOK(entry): VMCB clean bits, after the last write to the VMCB before VMRUN: the
        // groups unchanged since this VMCB's last #VMEXIT on this CPU (0 elsewhere). Only
        // where the CPU honours them (upstream sets them only with X86_FEATURE_VMCBCLEAN):
        // elsewhere the field stays 0 and neither the snapshot nor the comparison is made, a
        // few hundred bytes copied and compared per exit (e.g. QEMU's SVM has no clean bits).
        let use_clean = hw::vmcb_clean();
        if use_clean {
            let clean = self.clean.clean_bits(cpu, vmcb_in(&self.vmcb_page));
            self.vmcb().control.clean = clean;
        } else {
            self.vmcb().control.clean = 0;
        }
        // SAFETY: IRQs off; this CPU's data.
        let sd = unsafe { hw::this_cpu() };
        let host_save_pa = sd.save_area_pa;
        if host_save_pa == 0 {
            // SVM is not (or no longer) set up on this CPU: VMRUN would fault or use page 0 as
            // its host save area. Fail the entry; the caller marks the VM bugged.
            return ExitInfo {
                exit: Exit::EntryFault,
                code: exit::INVALID,
                info1: 0,
                info2: 0,
                int_info: 0,
                int_info_err: 0,
            };
        }
        let switch_xcr0 = st.cr4 & CR4_OSXSAVE != 0 && st.xcr0 != host_xcr0;
        let guest_aux = st.msrs.tsc_aux & 0xffff_ffff;
        // SAFETY: reads a boot-time CPU feature.
        let host_pku = unsafe { glue::tdxkvm_host_ospke() };
        // Upstream kvm_load_{guest,host}_xsave_state: PKRU is switched only for a guest that
        // can use it (PKRU in its XCR0, or CR4.PKE); otherwise the guest cannot read or write
        // PKRU and the host's value stays loaded (each WRPKRU costs, e.g. a TLB flush under
        // QEMU TCG, and this runs on every exit).
        let guest_pku = st.xcr0 & XFEATURE_MASK_PKRU != 0 || st.cr4 & CR4_PKE != 0;
        let switch_pkru = host_pku && guest_pku;
        // SAFETY: GIF cleared around the run (upstream svm_vcpu_run); the VMCB is valid and
        // ours, the host save area is this CPU's, `st.gprs` is 16 writable words. The MSR
        // and XCR accesses run with IRQs off (caller's contract); the values were checked by
        // the caller (XCR0) or are plain data (TSC_AUX's low 32 bits). The guest's XCR0 and
        // TSC_AUX are loaded after CLGI and the host's restored before STGI (upstream
        // kvm_load_guest_xsave_state / kvm_load_host_xsave_state): an NMI pending at STGI is
        // taken with the host's values.
        let faulted = unsafe {
            glue::tdxkvm_clgi();
            let host_aux = glue::tdxkvm_rdmsr(MSR_TSC_AUX);
            if guest_aux != host_aux {
                glue::tdxkvm_wrmsr(MSR_TSC_AUX, guest_aux);
            }
            if switch_xcr0 {
                glue::tdxkvm_xsetbv0(st.xcr0);
            }
            // PKRU: when the host uses PKU and the guest can (above), the guest's value is
            // loaded and read back, and the host's restored, inside GIF=0 (upstream
            // kvm_load_{guest,host}_xsave_state; the guest can set CR4.PKE only if its CPUID
            // has PKU, the CR4 intercept checks; XSETBV checks XCR0).
            let host_pkru = switch_pkru.then(|| glue::tdxkvm_rdpkru());
            if let Some(h) = host_pkru {
                if st.pkru != h {
                    glue::tdxkvm_wrpkru(st.pkru);
                }
            }
            glue::tdxkvm_load_guest_db(st.db.as_ptr());
            let f = glue::tdxkvm_svm_enter(
                st.gprs.as_mut_ptr(),
                self.vmcb_pa,
                host_save_pa,
                &mut self.spec_ctrl,
                SPEC_CTRL_INTERCEPTED,
                st.msr.virt_spec_ctrl,
            );
            glue::tdxkvm_save_guest_db(st.db.as_mut_ptr());
            if let Some(h) = host_pkru {
                st.pkru = glue::tdxkvm_rdpkru();
                if st.pkru != h {
                    glue::tdxkvm_wrpkru(h);
                }
            }
            if switch_xcr0 {
                glue::tdxkvm_xsetbv0(host_xcr0);
            }
            if guest_aux != host_aux {
                glue::tdxkvm_wrmsr(MSR_TSC_AUX, host_aux);
            }
            crate::svm::glue::tdxkvm_hw_breakpoint_restore();
            glue::tdxkvm_stgi();
            f
        };
        // HOOK(entry): what this CPU now holds; nothing after a failed entry.
        if !use_clean || faulted || self.vmcb().control.exit_code == exit::INVALID {
            self.clean.invalidate();
        } else {
            self.clean.after_exit(cpu, vmcb_in(&self.vmcb_page));
        }
        let vmcb = self.vmcb();
        vmcb.control.tlb_ctl = x86::svm::tlb_ctl::DO_NOTHING;
        if faulted {
            // An SVM instruction faulted: the exit code is the previous exit's and must not be
            // acted on again (upstream: kvm_spurious_fault). The entry failed; the events that
            // were to be injected stay as they are, the caller marks the VM bugged.
            vmcb.control.exit_code = exit::INVALID;
            return ExitInfo {
                exit: Exit::EntryFault,
                code: exit::INVALID,
                info1: 0,
                info2: 0,
                int_info: 0,
                int_info_err: 0,
            };
        }
        // HOOK(misc): VMEXIT_INVALID is -1 in the low 32 bits (upstream's VMCB has a u32
        // exit_code; QEMU writes 0xffffffff): it must not read as an unknown exit.
        let code = if vmcb.control.exit_code as u32 == u32::MAX {
            exit::INVALID
        } else {
            vmcb.control.exit_code
        };
        let (info1, info2) = (vmcb.control.exit_info_1, vmcb.control.exit_info_2);
        let int_info = vmcb.control.exit_int_info;
        if code != exit::INVALID {
            x86::svm::store_guest_state(vmcb, st);
            // HOOK(entry): CR4 changes only through the intercepts: the guest's own value
            // (without the forced MCE bit) stays.
            st.cr4 = guest_cr4;
        }
        // HOOK(misc): a failed entry (VMEXIT_INVALID) delivered nothing: without a valid
        // EXITINTINFO (hardware need not copy EVENTINJ there when the consistency checks
        // fail) the events stay injected for the next entry instead of being dropped.
        if code == exit::INVALID && int_info & (1 << 31) == 0 {
            return ExitInfo {
                exit: decode_exit(code, info1, info2),
                code,
                info1,
                info2,
                int_info,
                int_info_err: vmcb.control.exit_int_info_err,
            };
        }
        // Whatever was injected has been delivered, unless EXITINTINFO says its delivery was
        // cut short: then it is stored back as injected, for the next entry (upstream
        // svm_complete_interrupts).
        st.events.exception.injected = false;
        st.events.interrupt.injected = false;
        st.events.nmi_injected = false;
        st.events.interrupt_shadow = (vmcb.control.int_state & 1) as u8;
        if int_info & (1 << 31) != 0 {
            let vector = int_info as u8;
            match (int_info >> 8) & 7 {
                0 | 4 => {
                    st.events.interrupt.injected = true;
                    st.events.interrupt.nr = vector;
                    st.events.interrupt.soft = (int_info >> 8) & 7 == 4;
                }
                2 => st.events.nmi_injected = true,
                3 => {
                    let e = &mut st.events.exception;
                    e.injected = true;
                    e.pending = false;
                    e.vector = vector;
                    e.has_error_code = int_info & (1 << 11) != 0;
                    e.error_code = vmcb.control.exit_int_info_err;
                }
                _ => {}
            }
        }
        // HOOK(irqmod): IRET completion, window exits, the NMI single-step's #DB.
        let int_info_err = vmcb.control.exit_int_info_err;
        let window = self.events.complete(code, st);
        ExitInfo {
            exit: window.unwrap_or_else(|| decode_exit(code, info1, info2)),
            code,
            info1,
            info2,
            int_info,
            int_info_err,
        }
    }
}

/// HOOK(entry): the VMCB in a vCPU's VMCB page, shared (borrows the page field only, so the
/// clean-bit tracker beside it can be updated without copying it).
fn vmcb_in(page: &OwnedPage) -> &Vmcb {
    // SAFETY: as in `SvmVcpu::vmcb`: a zeroed, page-aligned 4 KiB page owned by the vCPU;
    // the shared borrow of the field excludes a `&mut` through `SvmVcpu::vmcb` meanwhile, and
    // the CPU only writes the VMCB during VMRUN, which needs `&mut SvmVcpu`.
    unsafe { &*page.virt().cast::<Vmcb>() }
}

/// The EVENTINJ value for the next entry (upstream `svm_inject_exception`, `svm_inject_irq`,
/// `svm_inject_nmi`, in `kvm_check_and_inject_events`' priority): an exception being
/// re-injected or pending first (a pending one becomes injected: in flight until the exit
/// says it was delivered), then an interrupt or NMI whose delivery was cut short. A #PF's
/// payload is its CR2, a #DB's its DR6 bits, written before the injection (upstream
/// `kvm_deliver_exception_payload`).
fn event_to_inject(st: &mut CpuState) -> (u32, u32) {
    let e = &mut st.events.exception;
    if e.pending || e.injected {
        if e.pending && e.has_payload {
            // #PF: CR2; #DB: the DR6 bits (upstream kvm_deliver_exception_payload).
            x86::events::deliver_exception_payload(st);
        }
        // HOOK(cpu11): no error code outside protected mode (upstream kvm_inject_exception).
        x86::events::strip_real_mode_error_code(st);
        let e = &mut st.events.exception;
        e.pending = false;
        e.injected = true;
        let ec = e.has_error_code.then_some(e.error_code);
        return x86::svm::event_inj(e.vector, x86::svm::EventType::Exception, ec);
    }
    let i = st.events.interrupt;
    if i.injected {
        let ty = if i.soft {
            x86::svm::EventType::Soft
        } else {
            x86::svm::EventType::Intr
        };
        return x86::svm::event_inj(i.nr, ty, None);
    }
    if st.events.nmi_injected {
        return x86::svm::event_inj(2, x86::svm::EventType::Nmi, None);
    }
    (0, 0)
}

/// The backend-neutral meaning of an SVM exit.
fn decode_exit(code: u64, info1: u64, info2: u64) -> Exit {
    match code {
        exit::INTR | exit::NMI | exit::SMI => Exit::HostEvent,
        // Upstream reports its u32 exit code, zero-extended.
        exit::INVALID => Exit::FailEntry {
            reason: u64::from(u32::MAX),
        },
        exit::IOIO => {
            let io = x86::svm::IoioInfo(info1);
            Exit::Io {
                port: io.port(),
                size: io.size(),
                is_in: io.is_in(),
                string: io.is_string(),
                rep: io.is_rep(),
                next_rip: info2,
                raw: info1,
            }
        }
        exit::HLT => Exit::Hlt,
        EXIT_READ_CR4 => Exit::Cr4Read,   // HOOK(entry)
        EXIT_WRITE_CR4 => Exit::Cr4Write, // HOOK(entry)
        // HOOK(cr8)
        cr8::EXIT_WRITE_CR8 => Exit::Cr8Write,
        // RDPMC without a virtual PMU: #GP(0), as upstream's kvm_emulate_rdpmc answers an
        // invalid counter.
        exit::RDPMC => Exit::Exception {
            vector: vector::GP,
            error_code: 0,
        },
        exit::SHUTDOWN => Exit::Shutdown,
        exit::NPF => Exit::Npf {
            gpa: info2,
            error: info1,
        },
        exit::CPUID => Exit::Cpuid,
        exit::MSR => Exit::Msr { write: info1 == 1 },
        exit::VMMCALL => Exit::Vmmcall,
        exit::XSETBV => Exit::Xsetbv,
        exit::INVD => Exit::Invd,
        exit::WBINVD => Exit::Wbinvd,
        exit::VMRUN
        | exit::VMLOAD
        | exit::VMSAVE
        | exit::STGI
        | exit::CLGI
        | exit::SKINIT
        | exit::INVLPGA
        | exit::RDPRU => Exit::Undefined,
        // HOOK(cpu11): MONITOR/MWAIT (upstream kvm_emulate_monitor/_mwait; the conditional
        // MWAIT's exit, should it come, is the same instruction).
        exit::MONITOR => Exit::MonitorMwait { mwait: false },
        exit::MWAIT | exit::MWAIT_COND => Exit::MonitorMwait { mwait: true },
        c if c == exit::EXCP_BASE + u64::from(vector::MC) => Exit::MachineCheck,
        c if (exit::EXCP_BASE..exit::EXCP_BASE + 32).contains(&c) => Exit::Exception {
            vector: (c - exit::EXCP_BASE) as u8,
            error_code: info1 as u32,
        },
        _ => Exit::Other { code, info1, info2 },
    }
}
