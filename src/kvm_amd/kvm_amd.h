/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The interface between kvm.ko and its companion kvm-amd.ko (src/kvm_amd/companion.c): the
 * companion's parameters ask kvm.ko for their values, which src/kvm_amd.rs owns.
 */
#ifndef TDXKVM_KVM_AMD_H
#define TDXKVM_KVM_AMD_H

#include <linux/types.h>

/* What tdxkvm_amd_param() returns for a known parameter: how sysfs shows its value. */
#define TDXKVM_AMD_PARAM_BOOL 0 /* "Y\n" / "N\n", as param_get_bool */
#define TDXKVM_AMD_PARAM_INT 1  /* "%lld\n", as param_get_int / param_get_ushort */

/*
 * Exported by kvm.ko: the value kvm.ko's SVM backend uses for kvm_amd's parameter @name, in
 * *@value; returns its TDXKVM_AMD_PARAM_* kind, -ENOENT for a name upstream's kvm_amd 6.12 does
 * not have (or this module does not reflect), -ENODEV when the SVM backend is not running.
 */
int tdxkvm_amd_param(const char *name, s64 *value);

/* Rust (src/kvm_amd.rs). */
int tdxkvm_rust_amd_param(const u8 *name, size_t len, s64 *value);

#endif
