/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * VMRUN (upstream arch/x86/kvm/svm/vmenter.S, __svm_vcpu_run, without the speculation
 * mitigations this kernel is built without: CONFIG_CPU_MITIGATIONS=n).
 *
 * bool __tdxkvm_svm_vcpu_run(u64 *gprs, u64 vmcb_pa, u64 host_save_pa)
 *
 * @gprs: the guest's 16 GPRs in encoding order (RAX=0 ... R15=15); RAX and RSP travel in the
 *        VMCB, the other 14 are loaded before VMRUN and stored after.
 * @vmcb_pa: the vCPU's VMCB.
 * @host_save_pa: this CPU's host save area: VMSAVE puts the host's FS/GS/TR/LDTR/KernelGsBase/
 *        STAR/LSTAR/CSTAR/SFMASK/SYSENTER state there before the guest's is VMLOADed, and
 *        VMLOAD restores it after the guest's is VMSAVEd. Until then GS.base is the guest's, so
 *        no per-CPU data may be touched: everything needed after VMRUN is on the stack.
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
#include <asm/nospec-branch.h>

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

.section .noinstr.text, "ax"

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
	push %rdx	/* host save area */
	push %rsi	/* VMCB */
	push %rdi	/* gprs */

	/* Host state VMRUN does not switch. */
	mov %rdx, %rax
1:	vmsave %rax
2:
	/* The guest's. */
	mov %rsi, %rax
3:	vmload %rax
4:
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
	/* No guest value survives in a register. */
	xor %ecx, %ecx
	xor %edx, %edx
	xor %esi, %esi
	xor %edi, %edi
	xor %r8d,  %r8d
	xor %r9d,  %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d

	pop %rax	/* fault flag */
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET

	/*
	 * A fault on an SVM instruction: note it in the fault flag (its stack offset depends on
	 * what is still pushed at that point) and restore the host state as far as it was
	 * switched.
	 * - Host VMSAVE (1b) or guest VMLOAD (3b): the host's FS/GS/TR/... are still loaded and
	 *   no guest register either: skip everything (a host VMLOAD from a save area the VMSAVE
	 *   did not fill would corrupt GS.base).
	 * - VMRUN (5b): the guest's VMLOAD state is live: the normal path stores the (unchanged)
	 *   guest GPRs back and VMLOADs the host's.
	 */
.Lfault_early:
	movq $1, 24(%rsp)
	add $24, %rsp	/* gprs, VMCB, host save area */
	jmp 10b
.Lfault_vmrun:
	movq $1, 24(%rsp)
	jmp 6b
.Lfault_7:		/* host save area above the flag */
	movq $1, 8(%rsp)
	jmp 8b
.Lfault_9:		/* nothing above the flag */
	movq $1, (%rsp)
	jmp 10b

	_ASM_EXTABLE(1b, .Lfault_early)
	_ASM_EXTABLE(3b, .Lfault_early)
	_ASM_EXTABLE(5b, .Lfault_vmrun)
	_ASM_EXTABLE(7b, .Lfault_7)
	_ASM_EXTABLE(9b, .Lfault_9)
SYM_FUNC_END(__tdxkvm_svm_vcpu_run)
