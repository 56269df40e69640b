#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Counts the places in mmu/src outside the transition layer (mmu/src/tdp/transition.rs) that
# write a page-table entry, update page accounting or zap figures, call an ExternalPageTable hook,
# flush TLBs or free a table page; fails unless every count is 0. The counting rules live in
# mmu/tests/transition_layer.rs (which `cargo test` runs too).
#
#   scripts/check-transition-layer.sh          # this tree
#   scripts/check-transition-layer.sh <rev>    # mmu/src as of a git revision (e.g. for "before")
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    git archive "$1" mmu/src | tar -x -C "$tmp"
    export MMU_SRC="$tmp/mmu/src"
fi
cargo test -q -p mmu --test transition_layer only_the_transition_layer_changes_entries \
    -- --nocapture 2>&1 | grep -E '^(places outside|  )' | grep -v '^  *[0-9]*: \|^  *at '
exit "${PIPESTATUS[0]}"
