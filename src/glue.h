/* SPDX-License-Identifier: GPL-2.0-only */
/* The C glue called from Rust (src/glue.rs declares the same functions). */
#ifndef TDXKVM_GLUE_H
#define TDXKVM_GLUE_H

#include <linux/types.h>

const char *tdxkvm_param_tdx(void);
int tdxkvm_misc_register(void);
void tdxkvm_misc_deregister(void);
int tdxkvm_vm_fd(void *vm);
void tdxkvm_debugfs_init(void);
void tdxkvm_debugfs_exit(void);
void *tdxkvm_alloc_page(void);
void tdxkvm_free_page(void *virt);
u64 tdxkvm_virt_to_pfn(void *virt);
void *tdxkvm_pfn_to_virt(u64 pfn);
bool tdxkvm_pfn_valid(u64 pfn);
u64 tdxkvm_max_pfn(void);
unsigned long tdxkvm_page_private(u64 pfn);
void tdxkvm_set_page_private(u64 pfn, unsigned long value);
void *tdxkvm_alloc_pages(unsigned int order);
void tdxkvm_free_pages(void *virt, unsigned int order);
void *tdxkvm_kzalloc(size_t size);
void tdxkvm_kfree(void *p);
void *tdxkvm_rwlock_new(void);
void tdxkvm_rwlock_free(void *l);
void tdxkvm_read_lock(void *l);
void tdxkvm_read_unlock(void *l);
void tdxkvm_write_lock(void *l);
void tdxkvm_write_unlock(void *l);
int tdxkvm_sha512_init(void);
void tdxkvm_sha512_exit(void);
int tdxkvm_sha512_compress(u64 *state, const u8 *block);
bool tdxkvm_tdx_host_ready(void);

#endif
