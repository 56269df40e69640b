#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Instructions per 4K fault into present tables (shared and mirror root), counted by callgrind:
# the difference between N faults and none, divided by N. Repeatable for the same binary.
# The mirror figure includes one call of a counting external hook; zaps every 511 faults are
# included (amortised), as the bench's fault loop does them to keep faults from being spurious.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p bench
n=${1:-20000}
ir() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/bench faults "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for kind in shared mirror; do
    base=$(ir "$kind" 0)
    total=$(ir "$kind" "$n")
    echo "$kind: $(( (total - base) / n )) instructions per 4K fault (tables present, incl. top-up)"
done
