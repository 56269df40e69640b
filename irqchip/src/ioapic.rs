// SPDX-License-Identifier: GPL-2.0-only
//! The IOAPIC (upstream arch/x86/kvm/ioapic.c).
