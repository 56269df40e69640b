// SPDX-License-Identifier: GPL-2.0-only
//! The 8259A PIC master/slave pair (upstream arch/x86/kvm/i8259.c).

pub mod uapi;
