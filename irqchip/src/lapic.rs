// SPDX-License-Identifier: GPL-2.0-only
//! The local APIC of one vCPU (upstream arch/x86/kvm/lapic.c).
