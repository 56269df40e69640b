/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * VMRUN (upstream arch/x86/kvm/svm/vmenter.S, __svm_vcpu_run, 6.12) with its speculation
 * mitigations:
 * - the guest's MSR_IA32_SPEC_CTRL before VMRUN and the host's after (RESTORE_GUEST_SPEC_CTRL /
 *   RESTORE_HOST_SPEC_CTRL; only with X86_FEATURE_MSR_SPEC_CTRL and without
 *   X86_FEATURE_V_SPEC_CTRL, which switches it in hardware);
 * - VM_CLEAR_CPU_BUFFERS (VERW) right before VMRUN (X86_FEATURE_CLEAR_CPU_BUF_VM);
 * - the RSB stuffed right after the host's state is back, before any RET
 *   (FILL_RETURN_BUFFER, X86_FEATURE_RSB_VMEXIT);
 * - UNTRAIN_RET_VM (RETBleed/SRSO untraining or IBPB on VM-exit, as the kernel selected);
 * - every GPR but RSP/RAX cleared after the exit.
 * The kernel patches the alternatives at module load (apply_alternatives); a kernel built
 * without CONFIG_CPU_MITIGATIONS (the test kernel) leaves them empty, as it does in kvm-amd.
 * The symbols they use (x86_spec_ctrl_current, x86_verw_sel, entry_ibpb, entry_untrain_ret,
 * srso_alias_untrain_ret) are exported to modules.
 *
 * bool __tdxkvm_svm_vcpu_run(u64 *gprs, u64 vmcb_pa, u64 host_save_pa, u64 *spec_ctrl,
 *                            bool spec_ctrl_intercepted)
 *
 * @gprs: the guest's 16 GPRs in encoding order (RAX=0 ... R15=15); RAX and RSP travel in the
 *        VMCB, the other 14 are loaded before VMRUN and stored after.
 * @vmcb_pa: the vCPU's VMCB.
 * @host_save_pa: this CPU's host save area: VMSAVE puts the host's FS/GS/TR/LDTR/KernelGsBase/
 *        STAR/LSTAR/CSTAR/SFMASK/SYSENTER state there before the guest's is VMLOADed, and
 *        VMLOAD restores it after the guest's is VMSAVEd. Until then GS.base is the guest's, so
 *        no per-CPU data may be touched: everything needed after VMRUN is on the stack.
 * @spec_ctrl: the guest's MSR_IA32_SPEC_CTRL (upstream svm->spec_ctrl; its low 32 bits are
 *        the MSR's, as upstream's movl); written back after the exit when the guest could
 *        write the MSR without an intercept.
 * @spec_ctrl_intercepted: whether guest writes to MSR_IA32_SPEC_CTRL are intercepted (then
 *        *@spec_ctrl is already current and the MSR is not read back).
 *
 * Called with IRQs enabled but GIF clear (see tdxkvm_svm_enter).
 *
 * Returns true if an SVM instruction faulted (EFER.SVME clear, a bad VMCB or save-area address):
 * the VMCB's exit code is then stale and must not be acted on (upstream fixups end in
 * kvm_spurious_fault unless rebooting; the caller fails the entry instead).
 *
 * In .noinstr.text as upstream's __svm_vcpu_run: between the guest VMLOAD and the host VMLOAD
 * GS.base is the guest's, so no kprobe (int3, not a paranoid entry) or ftrace hook may fire
 * in here; the whole window is in this function.
 */
#include <linux/linkage.h>
#include <asm/asm.h>
#include <asm/frame.h>
#include <asm/msr-index.h>
#include <asm/nospec-branch.h>
#include <asm/percpu.h>

#define G_RAX	0
#define G_RCX	8
#define G_RDX	16
#define G_RBX	24
#define G_RBP	40
#define G_RSI	48
#define G_RDI	56
#define G_R8	64
#define G_R9	72
#define G_R10	80
#define G_R11	88
#define G_R12	96
#define G_R13	104
#define G_R14	112
#define G_R15	120

/*
 * The frame below the callee-saved registers, from the top of the stack while all of it is
 * pushed (the offsets shrink as the first three are popped after VMRUN):
 *   0 gprs, 8 VMCB, 16 host save area, 24 &spec_ctrl, 32 spec_ctrl_intercepted, 40 fault flag.
 */

.section .noinstr.text, "ax"

.macro RESTORE_GUEST_SPEC_CTRL
	/* Nothing to do without SPEC_CTRL, or with V_SPEC_CTRL (hardware switches it). */
	ALTERNATIVE_2 "", \
		"jmp 800f", X86_FEATURE_MSR_SPEC_CTRL, \
		"", X86_FEATURE_V_SPEC_CTRL
801:
.endm
.macro RESTORE_GUEST_SPEC_CTRL_BODY
800:
	/*
	 * Write the guest's value if it differs from the host's (out of line so the common case
	 * does not jump). No RET or indirect branch between here and VMRUN.
	 */
	mov 24(%rsp), %rax
	movl (%rax), %eax
	cmp PER_CPU_VAR(x86_spec_ctrl_current), %eax
	je 801b
	mov $MSR_IA32_SPEC_CTRL, %ecx
	xor %edx, %edx
	wrmsr
	jmp 801b
.endm

.macro RESTORE_HOST_SPEC_CTRL
	ALTERNATIVE_2 "", \
		"jmp 900f", X86_FEATURE_MSR_SPEC_CTRL, \
		"", X86_FEATURE_V_SPEC_CTRL
901:
.endm
/* After the host VMLOAD: (%rsp) is &spec_ctrl, 8(%rsp) spec_ctrl_intercepted. */
.macro RESTORE_HOST_SPEC_CTRL_BODY
900:
	mov (%rsp), %rsi
	mov $MSR_IA32_SPEC_CTRL, %ecx
	/* The guest's value, if it could write the MSR without an exit. */
	cmpb $0, 8(%rsp)
	jnz 998f
	rdmsr
	movl %eax, (%rsi)
998:
	/* The host's value back if it differs from the guest's. */
	movl PER_CPU_VAR(x86_spec_ctrl_current), %eax
	cmp (%rsi), %eax
	je 901b
	xor %edx, %edx
	wrmsr
	jmp 901b
.endm

SYM_FUNC_START(__tdxkvm_svm_vcpu_run)
	push %rbp
	mov  %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx

	/* Fault flag (the return value): set by the fixups below. */
	push $0

	/* Needed after VMRUN, popped in reverse order. */
	push %r8	/* spec_ctrl_intercepted */
	push %rcx	/* &spec_ctrl */
	push %rdx	/* host save area */
	push %rsi	/* VMCB */
	push %rdi	/* gprs */

	/* Clobbers RAX, RCX, RDX; per-CPU data is still the host's. */
	RESTORE_GUEST_SPEC_CTRL

	/* Host state VMRUN does not switch. */
	mov 16(%rsp), %rax
1:	vmsave %rax
2:
	/* The guest's. */
	mov 8(%rsp), %rax
3:	vmload %rax
4:
	mov (%rsp), %rdi
	mov G_RCX(%rdi), %rcx
	mov G_RDX(%rdi), %rdx
	mov G_RBX(%rdi), %rbx
	mov G_RBP(%rdi), %rbp
	mov G_RSI(%rdi), %rsi
	mov G_R8(%rdi),  %r8
	mov G_R9(%rdi),  %r9
	mov G_R10(%rdi), %r10
	mov G_R11(%rdi), %r11
	mov G_R12(%rdi), %r12
	mov G_R13(%rdi), %r13
	mov G_R14(%rdi), %r14
	mov G_R15(%rdi), %r15
	mov G_RDI(%rdi), %rdi

	/* Clobbers EFLAGS.ZF. */
	VM_CLEAR_CPU_BUFFERS

5:	vmrun %rax
6:
	/* @gprs into RAX, the only free register. */
	pop %rax
	mov %rcx, G_RCX(%rax)
	mov %rdx, G_RDX(%rax)
	mov %rbx, G_RBX(%rax)
	mov %rbp, G_RBP(%rax)
	mov %rsi, G_RSI(%rax)
	mov %rdi, G_RDI(%rax)
	mov %r8,  G_R8(%rax)
	mov %r9,  G_R9(%rax)
	mov %r10, G_R10(%rax)
	mov %r11, G_R11(%rax)
	mov %r12, G_R12(%rax)
	mov %r13, G_R13(%rax)
	mov %r14, G_R14(%rax)
	mov %r15, G_R15(%rax)

	pop %rax	/* VMCB */
7:	vmsave %rax
8:
	pop %rax	/* host save area: restores GS.base, per-CPU data usable again */
9:	vmload %rax
10:
	/* Stuff the RSB right after the exit, before any RET. */
	FILL_RETURN_BUFFER %rax, RSB_CLEAR_LOOPS, X86_FEATURE_RSB_VMEXIT

	/* Clobbers RAX, RCX, RDX, RSI. */
	RESTORE_HOST_SPEC_CTRL

	/*
	 * RETBleed/SRSO: untrain RET (or IBPB) as soon as the host is back, before IRQs come
	 * on: interrupt handlers do not sanitise RET on a return to the kernel.
	 */
	UNTRAIN_RET_VM

	/*
	 * No guest value survives in a register, not even the ones reloaded from the stack
	 * below (an L1 miss could let speculation run with the guest's values). RSP and RAX
	 * are the hardware's.
	 */
	xor %ecx, %ecx
	xor %edx, %edx
	xor %ebx, %ebx
	xor %ebp, %ebp
	xor %esi, %esi
	xor %edi, %edi
	xor %r8d,  %r8d
	xor %r9d,  %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d
	xor %r12d, %r12d
	xor %r13d, %r13d
	xor %r14d, %r14d
	xor %r15d, %r15d

	add $16, %rsp	/* &spec_ctrl, spec_ctrl_intercepted */
	pop %rax	/* fault flag */
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET

	RESTORE_GUEST_SPEC_CTRL_BODY
	RESTORE_HOST_SPEC_CTRL_BODY

	/*
	 * A fault on an SVM instruction: note it in the fault flag (its stack offset depends on
	 * what is still pushed at that point) and restore the host state as far as it was
	 * switched.
	 * - Host VMSAVE (1b) or guest VMLOAD (3b): the host's FS/GS/TR/... are still loaded and
	 *   no guest register either: skip the VMLOADs (a host VMLOAD from a save area the VMSAVE
	 *   did not fill would corrupt GS.base); the guest's SPEC_CTRL may be loaded: continue
	 *   where the host's is restored.
	 * - VMRUN (5b): the guest's VMLOAD state is live: the normal path stores the (unchanged)
	 *   guest GPRs back and VMLOADs the host's.
	 */
.Lfault_early:
	movq $1, 40(%rsp)
	add $24, %rsp	/* gprs, VMCB, host save area */
	jmp 10b
.Lfault_vmrun:
	movq $1, 40(%rsp)
	jmp 6b
.Lfault_7:		/* host save area, &spec_ctrl, intercepted above the flag */
	movq $1, 24(%rsp)
	jmp 8b
.Lfault_9:		/* &spec_ctrl, intercepted above the flag */
	movq $1, 16(%rsp)
	jmp 10b

	_ASM_EXTABLE(1b, .Lfault_early)
	_ASM_EXTABLE(3b, .Lfault_early)
	_ASM_EXTABLE(5b, .Lfault_vmrun)
	_ASM_EXTABLE(7b, .Lfault_7)
	_ASM_EXTABLE(9b, .Lfault_9)
SYM_FUNC_END(__tdxkvm_svm_vcpu_run)
