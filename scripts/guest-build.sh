# SPDX-License-Identifier: GPL-2.0-only
# Sourced by guest-suite.sh and run.sh: sets up the kernel environment, builds the kernel (or
# reuses the cache), tdx_kvm.ko and the static guest client, and stages both in "$work/tests"
# (a temporary directory removed on exit). Expects `repo` set and the current directory there.
# shellcheck source=scripts/kernel-env.sh
source scripts/kernel-env.sh
scripts/build-kernel.sh
scripts/build-module.sh
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release -p guest-client \
    --target x86_64-unknown-linux-gnu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tests"
cp tdx_kvm.ko target/x86_64-unknown-linux-gnu/release/guest-client "$work/tests/"
