/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * VMRUN (upstream arch/x86/kvm/svm/vmenter.S, __svm_vcpu_run, without the speculation
 * mitigations this kernel is built without: CONFIG_CPU_MITIGATIONS=n).
 *
 * void __tdxkvm_svm_vcpu_run(u64 *gprs, u64 vmcb_pa, u64 host_save_pa)
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

.text

SYM_FUNC_START(__tdxkvm_svm_vcpu_run)
	push %rbp
	mov  %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx

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

	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET

	/*
	 * A fault on an SVM instruction only happens when EFER.SVME was cleared under us (the
	 * emergency-reboot path): carry on, the machine is going down.
	 */
	_ASM_EXTABLE(1b, 2b)
	_ASM_EXTABLE(3b, 4b)
	_ASM_EXTABLE(5b, 6b)
	_ASM_EXTABLE(7b, 8b)
	_ASM_EXTABLE(9b, 10b)
SYM_FUNC_END(__tdxkvm_svm_vcpu_run)
