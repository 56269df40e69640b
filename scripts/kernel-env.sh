#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Kernel-in-QEMU environment: installs what is missing, then exports what the other scripts use.
#
#   source scripts/kernel-env.sh     # from bash: installs if needed, exports the variables
#   scripts/kernel-env.sh            # run: installs if needed, prints the variables
#
# Installs (idempotent; a no-op taking well under a second when everything is there):
#   - Debian packages (as root, apt-get update first): the 6.12 kernel source, Debian's rustc-web
#     1.96, its library sources (the rustup toolchains have no rust-src) and its clippy-driver
#     (the module is built with `make CLIPPY=1`, which needs the very same rustc), clang/lld/llvm,
#     busybox-static, qemu-system-x86, the kernel build tools, and gcc + libc6-dev for the static
#     upstream KVM selftests (scripts/kselftests.sh).
#   - bindgen >= 0.65.1 (Debian's 0.60 is too old for 6.12): `cargo install --locked bindgen-cli`
#     into $TDXKVM_CACHE/bindgen, unless one is found on PATH or there already.
# Exports:
#   TDXKVM_CACHE    cache root (default ~/.cache/tdx-kvm-rs; set it beforehand to move it)
#   KERNEL_VERSION  Debian version of linux-source-6.12 ("~" replaced by "_")
#   KERNEL_TARBALL  /usr/src/linux-source-6.12.tar.xz
#   KERNEL_SRC      unpacked source tree: $TDXKVM_CACHE/linux-src-$KERNEL_VERSION
#   KERNEL_FRAGMENT kernel/config.fragment of this repo
#   KERNEL_BUILD    out-of-tree build dir: $TDXKVM_CACHE/kernel-<sha256 of fragment + versions>
#   KDIR            same as KERNEL_BUILD (for `make -C $KDIR M=... modules`)
#   BZIMAGE         $KDIR/arch/x86/boot/bzImage
#   KMAKE_ARGS      "LLVM=1 RUSTC=/usr/bin/rustc RUST_LIB_SRC=/usr/lib/rustlib/src/rust/library"
#                   (word-split it: make $KMAKE_ARGS ...); also the bash array KMAKE_ARGV
#   PATH            with the bindgen install dir in front
# Set TDXKVM_NO_INSTALL=1 to skip the install step (then only the variables are computed).

_tdxkvm_env_main() {
    local repo
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

    export TDXKVM_CACHE="${TDXKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tdx-kvm-rs}"
    export TDXKVM_RUSTC="${TDXKVM_RUSTC:-/usr/bin/rustc}"
    export TDXKVM_RUST_LIB_SRC="${TDXKVM_RUST_LIB_SRC:-/usr/lib/rustlib/src/rust/library}"
    export KERNEL_TARBALL=/usr/src/linux-source-6.12.tar.xz
    export KERNEL_FRAGMENT="$repo/kernel/config.fragment"
    local bindgen_root="$TDXKVM_CACHE/bindgen"

    if [[ "${TDXKVM_NO_INSTALL:-0}" != 1 ]]; then
        # In a subshell so that `set -e` and friends don't leak into a sourcing shell.
        (
            set -euo pipefail
            _tdxkvm_install "$bindgen_root"
        ) || { echo "kernel-env: install step failed" >&2; return 1; }
    fi

    # Prefer a bindgen already on PATH if new enough, else the cached one.
    if ! _tdxkvm_bindgen_ok bindgen; then
        PATH="$bindgen_root/bin:$PATH"
    fi
    export PATH

    local ver
    ver=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null) || ver=unknown
    export KERNEL_VERSION="${ver//\~/_}"
    export KERNEL_SRC="$TDXKVM_CACHE/linux-src-$KERNEL_VERSION"

    # Cache key: the fragment, the kernel version and the rustc that builds the kernel's Rust
    # crates (an out-of-tree Rust module must be built by the very same rustc).
    local rustc_ver key
    rustc_ver=$("$TDXKVM_RUSTC" --version 2>/dev/null) || rustc_ver=none
    key=$({ cat "$KERNEL_FRAGMENT"; echo "kernel=$KERNEL_VERSION"; echo "rustc=$rustc_ver"; } \
        | sha256sum | cut -c1-16)
    export KERNEL_BUILD="$TDXKVM_CACHE/kernel-$key"
    export KDIR="$KERNEL_BUILD"
    export BZIMAGE="$KDIR/arch/x86/boot/bzImage"
    export KMAKE_ARGS="LLVM=1 RUSTC=$TDXKVM_RUSTC RUST_LIB_SRC=$TDXKVM_RUST_LIB_SRC"
    # shellcheck disable=SC2034  # used by the scripts that source this one
    KMAKE_ARGV=(LLVM=1 "RUSTC=$TDXKVM_RUSTC" "RUST_LIB_SRC=$TDXKVM_RUST_LIB_SRC")
}

# True if "$1" runs and reports a bindgen version >= 0.65.1.
_tdxkvm_bindgen_ok() {
    local out v
    out=$("$1" --version 2>/dev/null) || return 1
    v=$(grep -oE '[0-9]+\.[0-9]+\.[0-9]+' <<<"$out" | head -n1)
    [[ -n "$v" ]] || return 1
    [[ "$(printf '%s\n%s\n' 0.65.1 "$v" | sort -V | head -n1)" == 0.65.1 ]]
}

_tdxkvm_install() {
    local bindgen_root=$1
    local pkgs=(linux-source-6.12 rustc-web rust-web-src rust-web-clippy clang lld llvm libclang-dev
        busybox-static qemu-system-x86 bc flex bison libelf-dev libssl-dev cpio xz-utils kmod
        rsync gcc libc6-dev make)
    local missing=() p
    for p in "${pkgs[@]}"; do
        if [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" != "ii " ]]; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]})); then
        local t0=$SECONDS sudo=()
        if [[ $(id -u) != 0 ]]; then sudo=(sudo); fi
        echo "kernel-env: installing ${missing[*]}" >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >&2
        echo "kernel-env: apt took $((SECONDS - t0)) s" >&2
    fi
    if ! _tdxkvm_bindgen_ok bindgen && ! _tdxkvm_bindgen_ok "$bindgen_root/bin/bindgen"; then
        local t0=$SECONDS
        echo "kernel-env: cargo install --locked bindgen-cli --root $bindgen_root" >&2
        mkdir -p "$bindgen_root"
        local cargo=cargo
        if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
            cargo="$HOME/.cargo/bin/cargo"
        fi
        # From / so that no rust-toolchain.toml picks the toolchain.
        (cd / && "$cargo" install --locked bindgen-cli --root "$bindgen_root") >&2
        echo "kernel-env: bindgen install took $((SECONDS - t0)) s" >&2
    fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    _tdxkvm_env_main
    for v in TDXKVM_CACHE KERNEL_VERSION KERNEL_TARBALL KERNEL_SRC KERNEL_FRAGMENT KERNEL_BUILD \
        KDIR BZIMAGE KMAKE_ARGS; do
        printf '%s=%s\n' "$v" "${!v}"
    done
    printf 'bindgen=%s\n' "$(command -v bindgen)"
else
    _tdxkvm_env_main || return 1
fi
