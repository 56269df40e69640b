# SPDX-License-Identifier: GPL-2.0-only
# shellcheck shell=bash
# Sourced by guest-suite.sh and run.sh: sets up the kernel environment, builds the kernel (or
# reuses the cache), kvm.ko and the static guest client, and stages both in "$work/tests"
# (a temporary directory removed on exit), with the client's test list (`guest-client --list`,
# run here on the build host) as "$work/tests/client-tests.txt": the results each mode must
# deliver. Unless `upstream_suites=no` is set (run.sh), it also builds and stages the upstream
# suites with their run lists: kvm-ioctls' tests (scripts/kvm-ioctls-tests.sh,
# "$work/tests/kvm-ioctls.txt") and the KVM selftests (scripts/kselftests.sh,
# "$work/tests/kselftests.txt"), and prints each build's time. Expects `repo` set and the
# current directory there.
# TDXKVM_HARNESS_FAULT=guest-missing leaves the client out of the image (the list stays), so
# that scripts/harness-selftest.sh can check that a missing client fails the run.
# shellcheck source=scripts/kernel-env.sh
source scripts/kernel-env.sh
scripts/build-kernel.sh
scripts/build-module.sh
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release -p guest-client \
    --target x86_64-unknown-linux-gnu
client=target/x86_64-unknown-linux-gnu/release/guest-client
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tests"
"$client" --list >"$work/tests/client-tests.txt"
[[ -s "$work/tests/client-tests.txt" ]] || { echo "guest-build: '$client --list' listed no test" >&2; exit 1; }
cp kvm.ko "$work/tests/"
cp kvm-amd.ko "$work/tests/" # HOOK(abi): the kvm_amd parameter companion
if [[ "${upstream_suites:-yes}" != no ]]; then
    scripts/kvm-ioctls-tests.sh "$work/tests"
    scripts/kselftests.sh "$work/tests"
fi
if [[ "${TDXKVM_HARNESS_FAULT:-}" == guest-missing ]]; then
    echo "guest-build: TDXKVM_HARNESS_FAULT=guest-missing: the guest client is NOT staged" >&2
else
    cp "$client" "$work/tests/"
fi
