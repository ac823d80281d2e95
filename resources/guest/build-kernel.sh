#!/usr/bin/env bash
# Builds shimvmm's module-free microVM guest kernel from Debian's
# linux-source-6.12: `make tinyconfig` + resources/guest/microvm.config.
#
# Why: the Alpine kernel needs an initrd to load virtio_blk/ext4 modules; a
# kernel with everything built in boots the rootfs directly and faster.
#
# Usage: resources/guest/build-kernel.sh [--jobs N] [--keep-tree] [--paths]
#   --paths      only print the cached paths (fails if not built yet)
#   --jobs N     make -j N (default: nproc)
#   --keep-tree  keep the unpacked source/build tree (about 1.5 GB) for rebuilds
#
# Output (cached, keyed by fragment + source package version):
#   ${SHIMVMM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shimvmm}/microvm-kernel-<key>/{bzImage,vmlinux,config}
# then prints KERNEL=... VMLINUX=... CONFIG=... CMDLINE=... shell-style.
#
# About 6 minutes on 2 cores. Runs make under `nice -n 19` so it only uses cycles others leave idle.
set -euo pipefail

readonly SRC_PKG="linux-source-6.12"
readonly SRC_TARBALL="/usr/src/linux-source-6.12.tar.xz"
# No initrd: the root filesystem driver and virtio-blk are built in.
readonly CMDLINE="console=ttyS0 reboot=k panic=-1 root=/dev/vda rootfstype=ext4 rw"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FRAGMENT="$HERE/microvm.config"
CACHE_ROOT="${SHIMVMM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shimvmm}"

die() { echo "build-kernel: error: $*" >&2; exit 1; }
note() { echo "build-kernel: $*" >&2; }

jobs="$(nproc)"
keep_tree=no
paths_only=no
while [ $# -gt 0 ]; do
    case "$1" in
        --jobs) jobs="${2:-}"; shift 2 || die "--jobs needs a number" ;;
        --keep-tree) keep_tree=yes; shift ;;
        --paths) paths_only=yes; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive number, not '$jobs'"
[ -f "$FRAGMENT" ] || die "config fragment $FRAGMENT is missing"

# Installs missing Debian packages (CI starts from a fresh machine).
ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]}: apt-get install ${missing[*]}"
    note "installing ${missing[*]}"
    # The lock timeout: tools/devtool runs this beside other steps that may install packages.
    local apt=(apt-get -y -o DPkg::Lock::Timeout=600)
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2 \
        || { "${apt[@]}" update >&2 && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2; } \
        || die "apt-get install ${missing[*]} failed"
}

print_paths() {
    printf 'KERNEL=%q\nVMLINUX=%q\nCONFIG=%q\nCMDLINE=%q\n' "$1/bzImage" "$1/vmlinux" "$1/config" "$CMDLINE"
}

# The key covers everything that changes the result except the compiler.
src_version() { dpkg-query -W -f='${Version}' "$SRC_PKG" 2>/dev/null || true; }

if [ "$paths_only" = yes ]; then
    ver="$(src_version)"
    [ -n "$ver" ] || die "$SRC_PKG is not installed, so no kernel was built here; run $0"
    key="$( { cat "$FRAGMENT"; echo "$SRC_PKG $ver"; } | sha256sum | cut -c1-12)"
    [ -f "$CACHE_ROOT/microvm-kernel-$key/.complete" ] || die "kernel not built yet (key $key); run $0"
    print_paths "$CACHE_ROOT/microvm-kernel-$key"
    exit 0
fi

ensure_packages "$SRC_PKG" bc flex bison libelf-dev libssl-dev make gcc libc6-dev xz-utils
ver="$(src_version)"
key="$( { cat "$FRAGMENT"; echo "$SRC_PKG $ver"; } | sha256sum | cut -c1-12)"
out="$CACHE_ROOT/microvm-kernel-$key"
if [ -f "$out/.complete" ]; then
    note "already built for this fragment and $SRC_PKG $ver (nothing to do)"
    print_paths "$out"
    exit 0
fi
[ -f "$SRC_TARBALL" ] || die "$SRC_TARBALL missing although $SRC_PKG is installed"

mkdir -p "$CACHE_ROOT"
tree="$CACHE_ROOT/.kbuild-$key"
if [ ! -f "$tree/Makefile" ]; then
    rm -rf "$tree"
    mkdir -p "$tree"
    note "unpacking $SRC_TARBALL"
    tar -xf "$SRC_TARBALL" -C "$tree" --strip-components=1
fi
cd "$tree"

note "configuring: tinyconfig + $(basename "$FRAGMENT")"
make -s tinyconfig >&2
scripts/kconfig/merge_config.sh -m .config "$FRAGMENT" >"$tree/merge.log" 2>&1 || { cat "$tree/merge.log" >&2; die "merge_config failed"; }
make -s olddefconfig >&2

# Kconfig silently drops options whose dependencies are unmet: check each.
bad=0
while IFS= read -r line; do
    if [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
        grep -qx "${BASH_REMATCH[1]}=${BASH_REMATCH[2]}" .config || { note "option not applied: $line"; bad=1; }
    elif [[ "$line" =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        ! grep -q "^${BASH_REMATCH[1]}=" .config || { note "option not disabled: ${BASH_REMATCH[1]}"; bad=1; }
    fi
done <"$FRAGMENT"
[ "$bad" -eq 0 ] || die "the fragment does not apply cleanly to $SRC_PKG $ver (see above)"

note "building bzImage with make -j$jobs (about 6 min on 2 cores)"
start=$(date +%s)
nice -n 19 make -s -j"$jobs" bzImage >&2 || die "kernel build failed"
note "built in $(( $(date +%s) - start )) s"

tmp_out="$(mktemp -d "$CACHE_ROOT/.kout.XXXXXX")"
chmod 755 "$tmp_out"
cp arch/x86/boot/bzImage "$tmp_out/bzImage"
cp vmlinux "$tmp_out/vmlinux"
cp .config "$tmp_out/config"
echo "$SRC_PKG $ver" >"$tmp_out/.complete"
rm -rf "$out"
mv "$tmp_out" "$out"
cd /
[ "$keep_tree" = yes ] || rm -rf "$tree"
print_paths "$out"
