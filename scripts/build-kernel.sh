#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Builds the Rust-enabled debug test kernel (Linux 6.12 from Debian's linux-source-6.12).
#
#   scripts/build-kernel.sh [--force]
#
# - Unpacks /usr/src/linux-source-6.12.tar.xz into $KERNEL_SRC (once).
# - Builds out of tree into $KERNEL_BUILD (= $KDIR, see scripts/kernel-env.sh):
#   tinyconfig + kernel/config.fragment + olddefconfig, checks the resulting .config (every
#   `-e` option must be =y, every `-d` option unset; CONFIG_RUST and CONFIG_KASAN above all),
#   then `make -j$(nproc)` and `headers_install` (giving $KDIR/usr/include).
# - Skips everything if $KDIR already has a bzImage and a .done marker (--force rebuilds).
#   The build dir name hashes the fragment, kernel and rustc versions, so an edit of the
#   fragment builds into a new dir. Without a cache it just builds (about 7-10 min on 2 cores).
# The full make log is in $KDIR/build.log. Prints how long it took.
set -euo pipefail

force=0
if [[ "${1:-}" == --force ]]; then force=1; fi

# shellcheck source=scripts/kernel-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/kernel-env.sh"

t0=$SECONDS
cached() { [[ $force == 0 && -f "$KDIR/.done" && -f "$BZIMAGE" ]]; }
if cached; then
    echo "build-kernel: cached: $BZIMAGE"
    exit 0
fi

mkdir -p "$TDXKVM_CACHE" "$KDIR"
# One build per dir at a time; a build that waited for another one reuses its result.
exec 9>"$KDIR.lock"
if ! flock -n 9; then
    echo "build-kernel: waiting for another build of $KDIR"
    flock 9
fi
if cached; then
    echo "build-kernel: cached (built meanwhile by another run): $BZIMAGE"
    exit 0
fi
rm -f "$KDIR/.done"

if [[ ! -f "$KERNEL_SRC/.unpacked" ]]; then
    echo "build-kernel: unpacking $KERNEL_TARBALL into $KERNEL_SRC"
    tmp="$KERNEL_SRC.tmp.$$"
    rm -rf "$tmp" "$KERNEL_SRC"
    mkdir -p "$tmp"
    tar -xf "$KERNEL_TARBALL" -C "$tmp" --strip-components=1
    touch "$tmp/.unpacked"
    mv "$tmp" "$KERNEL_SRC"
    echo "build-kernel: unpacked in $((SECONDS - t0)) s"
fi

K=(make -C "$KERNEL_SRC" O="$KDIR" "${KMAKE_ARGV[@]}")
log="$KDIR/build.log"
: >"$log"

if ! "${K[@]}" rustavailable >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "build-kernel: FAILED: 'make rustavailable' says Rust is not usable (see $log)" >&2
    exit 1
fi

# Configuration: tinyconfig, then the fragment's lines as scripts/config arguments.
"${K[@]}" tinyconfig >>"$log" 2>&1
cfg_args=()
enabled=()
modules=()
disabled=()
while IFS= read -r line; do
    line="${line%%#*}"
    read -r -a words <<<"$line"
    ((${#words[@]})) || continue
    cfg_args+=("${words[@]}")
    case "${words[0]}" in
        -e | --enable) enabled+=("${words[1]}") ;;
        -m | --module) modules+=("${words[1]}") ;;
        -d | --disable) disabled+=("${words[1]}") ;;
    esac
done <"$KERNEL_FRAGMENT"
"$KERNEL_SRC/scripts/config" --file "$KDIR/.config" "${cfg_args[@]}"
"${K[@]}" olddefconfig >>"$log" 2>&1

bad=0
for opt in RUST KASAN; do
    if ! grep -qx "CONFIG_$opt=y" "$KDIR/.config"; then
        echo "build-kernel: FAILED: CONFIG_$opt=y is not in $KDIR/.config after olddefconfig" >&2
        bad=1
    fi
done
for opt in "${enabled[@]}"; do
    if ! grep -qx "CONFIG_$opt=y" "$KDIR/.config"; then
        echo "build-kernel: FAILED: fragment enables $opt but .config does not have CONFIG_$opt=y" >&2
        bad=1
    fi
done
for opt in "${modules[@]}"; do
    if ! grep -qx "CONFIG_$opt=m" "$KDIR/.config"; then
        echo "build-kernel: FAILED: fragment builds $opt as a module but .config does not have CONFIG_$opt=m" >&2
        bad=1
    fi
done
for opt in "${disabled[@]}"; do
    if grep -qE "^CONFIG_$opt=[ym]" "$KDIR/.config"; then
        echo "build-kernel: FAILED: fragment disables $opt but .config has it set" >&2
        bad=1
    fi
done
if ((bad)); then
    echo "build-kernel: a dependency of the options above is missing from kernel/config.fragment" >&2
    exit 1
fi
echo "build-kernel: .config OK (CONFIG_RUST=y, CONFIG_KASAN=y, ${#enabled[@]} enabled, ${#modules[@]} modules, ${#disabled[@]} disabled)"

echo "build-kernel: make -j$(nproc) in $KDIR (log: $log)"
t1=$SECONDS
if ! "${K[@]}" -j"$(nproc)" >>"$log" 2>&1; then
    grep -E 'error|Error' "$log" | tail -n 40 >&2 || true
    tail -n 20 "$log" >&2
    echo "build-kernel: FAILED: kernel build (see $log)" >&2
    exit 1
fi
if ! "${K[@]}" headers_install >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "build-kernel: FAILED: headers_install (see $log)" >&2
    exit 1
fi
[[ -f "$BZIMAGE" ]] || { echo "build-kernel: FAILED: no $BZIMAGE" >&2; exit 1; }
touch "$KDIR/.done"
echo "build-kernel: built $BZIMAGE: make took $((SECONDS - t1)) s, $((SECONDS - t0)) s in all"
