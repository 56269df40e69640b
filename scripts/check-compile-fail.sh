#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Runs mmu's doc tests with their compile_fail error codes checked. Stable rustdoc only checks
# that a compile_fail example fails to compile, for any reason (a typo would do); with
# RUSTC_BOOTSTRAP=1 it also checks that it fails with the error code the example names
# (E0277: the sealed lock proof, E0451/E0624: a guard without the lock, E0616/E0624/E0599: an
# entry write from outside, E0133: page->private from outside). Builds in its own target
# directory so the regular one is not invalidated.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTC_BOOTSTRAP=1 cargo test -p mmu --doc --target-dir target/compile-fail-codes "$@"
