// SPDX-License-Identifier: GPL-2.0-only
//! The GSI routing table and MSI decoding (upstream virt/kvm/irqchip.c, arch/x86/kvm/irq_comm.c).
