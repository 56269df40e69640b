#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Builds rust-vmm kvm-ioctls' own test suite (the unit tests of its crates.io release 0.25.1,
# x86_64) as one static test binary and stages it for the initramfs; the guest suite runs it
# against kvm.ko. The source is fetched by cargo from crates.io (checksum-verified) at build time
# and never copied into this repository; it is built with the crate's own Cargo.lock (--locked).
#
#   scripts/kvm-ioctls-tests.sh DEST_DIR  # DEST_DIR/kvm-ioctls-tests (debug info stripped) and
#                                         # the run list DEST_DIR/kvm-ioctls.txt
#   scripts/kvm-ioctls-tests.sh --list    # builds, prints the run list
#
# The run list has one line per run: "MODE NAME TIMEOUT" (tdx= mode, the libtest name such as
# ioctls::vcpu::tests::test_run_code, seconds before the guest kills it), taken from the binary's
# own `--list` (ignored tests included: the binary reports them ignored, the suite counts them
# as skipped). The guest runs every test alone (`--exact NAME --test-threads=1`), so a test that
# hangs or crashes costs only its own result. What each test is expected to give is in
# tests/expected/kvm-ioctls.txt (scripts/expectations.sh compares and updates).
#
# Build directory: $TDXKVM_CACHE/kvm-ioctls-0.25.1 (default ~/.cache/tdx-kvm-rs); about 10 s
# the first time on 2 cores, incremental afterwards.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
version=0.25.1
timeout=60
mode=off

dest=""
case "${1:-}" in
    --list) ;;
    "" | -*) echo "usage: $0 DEST_DIR | --list" >&2; exit 64 ;;
    *) dest=$1 ;;
esac
cache="${TDXKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tdx-kvm-rs}/kvm-ioctls-$version"
mkdir -p "$cache"
start=$(date +%s)
(
    flock 9
    # A throw-away package whose only dependency is the release: `cargo fetch` downloads and
    # verifies it, `cargo metadata` says where cargo unpacked it.
    mkdir -p "$cache/fetch/src"
    cat >"$cache/fetch/Cargo.toml" <<EOF
[package]
name = "tdxkvm-fetch-kvm-ioctls"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
kvm-ioctls = "=$version"

[workspace]
EOF
    : >"$cache/fetch/src/lib.rs"
    # From the repository, so that its rust-toolchain.toml picks the toolchain.
    cd "$repo"
    cargo fetch --quiet --manifest-path "$cache/fetch/Cargo.toml"
    manifest=$(cargo metadata --quiet --format-version 1 --manifest-path "$cache/fetch/Cargo.toml" |
        grep -o "\"manifest_path\":\"[^\"]*/kvm-ioctls-$version/Cargo.toml\"" | head -n 1 |
        sed 's/^"manifest_path":"//; s/"$//')
    [[ -f "$manifest" ]] || { echo "kvm-ioctls-tests: cargo did not unpack kvm-ioctls $version" >&2; exit 1; }
    # Built from a copy in the cache: cargo's registry sources are read-only by convention.
    # cp -a keeps the timestamps, so an unchanged copy does not rebuild.
    rm -rf "$cache/src.new"
    cp -a "$(dirname "$manifest")" "$cache/src.new"
    if ! diff -r -q "$cache/src.new" "$cache/src" >/dev/null 2>&1; then
        rm -rf "$cache/src"
        mv "$cache/src.new" "$cache/src"
    else
        rm -rf "$cache/src.new"
    fi
    # Static, like the guest client (the guest has no libc).
    RUSTFLAGS="-C target-feature=+crt-static" cargo test --no-run --locked \
        --manifest-path "$cache/src/Cargo.toml" --target x86_64-unknown-linux-gnu \
        --target-dir "$cache/target" --message-format=json 2>"$cache/build.log" |
        grep -o '"executable":"[^"]*"' | sed 's/^"executable":"//; s/"$//' >"$cache/executables" || {
        echo "kvm-ioctls-tests: the build FAILED, the end of $cache/build.log:" >&2
        tail -n 30 "$cache/build.log" >&2
        exit 1
    }
    [[ $(wc -l <"$cache/executables") -eq 1 ]] ||
        { echo "kvm-ioctls-tests: expected one test executable, got: $(cat "$cache/executables")" >&2; exit 1; }
    bin=$(cat "$cache/executables")
    if readelf -l "$bin" | grep -q 'program interpreter'; then
        echo "kvm-ioctls-tests: $bin is not statically linked" >&2
        exit 1
    fi
    strip --strip-debug -o "$cache/kvm-ioctls-tests" "$bin"
    "$bin" --list --format terse | sed -n "s/^\(.*\): test\$/$mode \1 $timeout/p" >"$cache/run-list"
) 9>"$cache.lock"

n=$(wc -l <"$cache/run-list")
[[ $n -gt 0 ]] || { echo "kvm-ioctls-tests: the test binary lists no test" >&2; exit 1; }
if [[ -z "$dest" ]]; then
    cat "$cache/run-list"
    exit 0
fi
cp "$cache/kvm-ioctls-tests" "$dest/"
cp "$cache/run-list" "$dest/kvm-ioctls.txt"
echo "kvm-ioctls-tests: kvm-ioctls $version's test binary staged, $n tests ($(($(date +%s) - start)) s)"
