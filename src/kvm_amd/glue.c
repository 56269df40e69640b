// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvm.ko's side of the kvm_amd companion module: one exported function (a module cannot
 * export a Rust symbol in 6.12) that hands the question to src/kvm_amd.rs.
 */
#include <linux/export.h>
#include <linux/string.h>

#include "kvm_amd.h"

int tdxkvm_amd_param(const char *name, s64 *value)
{
	return tdxkvm_rust_amd_param((const u8 *)name, strlen(name), value);
}
EXPORT_SYMBOL_GPL(tdxkvm_amd_param);
