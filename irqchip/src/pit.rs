// SPDX-License-Identifier: GPL-2.0-only
//! The 8254 PIT (upstream arch/x86/kvm/i8254.c).

pub mod uapi;
