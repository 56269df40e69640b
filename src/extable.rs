// SPDX-License-Identifier: GPL-2.0-only
//! Exception-table entries for instructions issued from Rust inline assembly that may fault
//! (VMXON, VMXOFF, SEAMCALL): the kernel's `_ASM_EXTABLE_TYPE()`, so a fault resumes at a fixup
//! label instead of an oops. Module loading sorts the entries like any module's.

/// Resume at the fixup (Linux `EX_TYPE_DEFAULT`).
pub(crate) const EX_TYPE_DEFAULT: u32 = 1;
/// Resume at the fixup with the trap number in RAX (Linux `EX_TYPE_FAULT`).
pub(crate) const EX_TYPE_FAULT: u32 = 2;

/// Assembly that adds one `__ex_table` entry: a fault at label `$from` resumes at label `$to`
/// (both local labels such as `"2b"`), handled as the `ex` const operand of the `asm!` says.
macro_rules! ex_table_entry {
    ($from:literal, $to:literal) => {
        concat!(
            ".pushsection __ex_table, \"a\"\n",
            ".balign 4\n",
            ".long ",
            $from,
            " - .\n",
            ".long ",
            $to,
            " - .\n",
            ".long {ex}\n",
            ".popsection",
        )
    };
}
pub(crate) use ex_table_entry;
