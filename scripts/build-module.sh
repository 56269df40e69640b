#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Builds kvm.ko against $KDIR (default: the pipeline's cached kernel, see kernel-env.sh).
#
#   scripts/build-module.sh            # against the pipeline kernel (builds it if needed)
#   KDIR=/lib/modules/$(uname -r)/build scripts/build-module.sh   # against a host kernel
#
# bitflags comes from its crates.io release: `cargo fetch` puts it in the cargo registry and
# `cargo metadata` says where; it is never copied into the repository.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if [[ -z "${KDIR:-}" ]]; then
    # shellcheck source=scripts/kernel-env.sh
    source scripts/kernel-env.sh
    scripts/build-kernel.sh
else
    user_kdir=$KDIR
    # Only for KMAKE_ARGS and PATH; the kernel is the caller's.
    TDXKVM_NO_INSTALL=1 source scripts/kernel-env.sh
    export KDIR="$user_kdir"
    [[ -f "$KDIR/Makefile" ]] || { echo "build-module: no kernel build tree at $KDIR (set KDIR)" >&2; exit 1; }
fi

cargo fetch --quiet
# The bitflags the mmu crate resolves to (other crates in the workspace may pull in others).
BITFLAGS_SRC=$(cargo metadata --format-version 1 --quiet | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
pkgs = {p["id"]: p for p in meta["packages"]}
for node in meta["resolve"]["nodes"]:
    if pkgs[node["id"]]["name"] != "mmu":
        continue
    for dep in node["deps"]:
        if dep["name"] == "bitflags":
            print(os.path.dirname(pkgs[dep["pkg"]]["manifest_path"]))
')
[[ -f "$BITFLAGS_SRC/src/lib.rs" ]] || { echo "build-module: bitflags source not found" >&2; exit 1; }

# Objects built against another kernel (or another rustc) cannot be mixed: start clean then.
stamp="$repo/.tdxkvm-kdir"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$KDIR" ]]; then
    # Not `make M=... clean`: kbuild's clean walks the whole tree (target/ included).
    rm -f "$repo"/*.o "$repo"/*.rmeta "$repo"/*.ko "$repo"/*.mod "$repo"/*.mod.c "$repo"/.*.cmd \
        "$repo"/src/*.o "$repo"/src/.*.cmd "$repo"/Module.symvers "$repo"/modules.order
    echo "$KDIR" > "$stamp"
fi

# clippy-driver of the rustc that builds the module (`make CLIPPY=1`): the kernel's clippy lints
# (undocumented unsafe blocks, ...) plus, from our Kbuild, missing `# Safety` sections as errors.
# It must wrap that very rustc: another one cannot read the kernel crate's metadata. Always on
# against the pipeline kernel; against a caller's kernel only with TDXKVM_CLIPPY=1.
clippy_args=()
if [[ -z "${user_kdir:-}" || "${TDXKVM_CLIPPY:-0}" == 1 ]]; then
    clippy_driver="$(dirname "$TDXKVM_RUSTC")/clippy-driver"
    [[ -x "$clippy_driver" ]] || {
        echo "build-module: no $clippy_driver (Debian: rust-web-clippy, installed by kernel-env.sh)" >&2
        exit 1
    }
    if [[ "$("$clippy_driver" --rustc --version)" != "$("$TDXKVM_RUSTC" --version)" ]]; then
        echo "build-module: $clippy_driver does not wrap $TDXKVM_RUSTC ($("$TDXKVM_RUSTC" --version))" >&2
        exit 1
    fi
    clippy_args=(CLIPPY=1 "CLIPPY_DRIVER=$clippy_driver")
fi

start=$(date +%s)
# shellcheck disable=SC2086  # KMAKE_ARGS is a word list
blog=$(mktemp)
trap 'rm -f "$blog"' EXIT
make -C "$KDIR" M="$repo" $KMAKE_ARGS "${clippy_args[@]}" CONFIG_TDX_KVM_RS=m \
    BITFLAGS_SRC="$BITFLAGS_SRC" modules 2>&1 \
    | tee "$blog"
[[ ${PIPESTATUS[0]} -eq 0 ]] || exit 1
# Our code builds warning-free with the kernel's own flags (they add lints the host build does
# not use, e.g. unreachable_pub, and clippy's); objtool warnings count too. Enforced against the
# pipeline kernel only: a host kernel's own headers are not ours to police.
if [[ -z "${user_kdir:-}" ]] && grep -q 'warning:' "$blog"; then
    echo "build-module: FAILED: the build printed warnings (above)" >&2
    exit 1
fi
echo "build-module: kvm.ko built in $(( $(date +%s) - start )) s"
