# Shared shell library of shimvmm's tools (devtool, bench, guest-artifacts; the
# testbed, which is Python, runs its apt_install through it). Source it:
#
#   TOOL=devtool; . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# TOOL prefixes every message (default: the sourcing script's file name). Run
# as a command, `bash tools/lib.sh FUNCTION ARGS...` calls one function, e.g.
# `TOOL=testbed bash tools/lib.sh apt_install -t bookworm-backports qemu-system-x86`.
#
#   say MESSAGE...                   "TOOL: MESSAGE" on stderr
#   die MESSAGE...                   "TOOL: error: MESSAGE" on stderr, exit 1
#   apt_install [-t RELEASE] PACKAGE...
#                                    apt-get install as root; after a failure once more after apt-get update
#   apt_ensure CMD PACKAGE...        apt_install PACKAGEs unless CMD is on PATH or in /usr/sbin, /sbin
#   cargo_executables CARGO-ARGS...  builds with `cargo CARGO-ARGS... --no-run --message-format=json`
#                                    and prints "NAME KIND PATH" per executable (KIND: test, bench, lib...)

TOOL=${TOOL:-$(basename "$0")}

say() { printf '%s: %s\n' "$TOOL" "$*" >&2; }
die() { printf '%s: error: %s\n' "$TOOL" "$*" >&2; exit 1; }

apt_install() {
    local release=()
    if [ "${1:-}" = -t ]; then release=(-t "$2"); shift 2; fi
    [ $# -gt 0 ] || die "apt_install: no package given"
    [ "$(id -u)" -eq 0 ] || die "$* missing and not root: run apt-get install -y ${release[*]} $*"
    command -v apt-get >/dev/null 2>&1 || die "$* missing and no apt-get to install them"
    say "installing $*"
    local apt=(apt-get -y -q -o DPkg::Lock::Timeout=600)
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${release[@]}" "$@" >/dev/null && return 0
    say "apt-get install $* failed; running apt-get update and trying once more"
    "${apt[@]}" update >/dev/null || true
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${release[@]}" "$@" >/dev/null \
        || die "apt-get install ${release[*]} $* failed"
}

apt_ensure() {
    local cmd=$1; shift
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/sbin/$cmd" ] && return 0
    say "$cmd is missing"
    apt_install "$@"
}

cargo_executables() {
    command -v jq >/dev/null 2>&1 || apt_ensure jq jq
    local out st=0
    out=$(cargo "$@" --no-run --message-format=json) || st=$?
    [ $st -eq 0 ] || die "cargo $* --no-run failed (status $st)"
    jq -r 'select(.reason == "compiler-artifact" and .executable != null)
           | "\(.target.name) \(.target.kind[0]) \(.executable)"' <<<"$out"
}

# `bash tools/lib.sh FUNCTION ARGS...`
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case ${1:-} in
        say | die | apt_install | apt_ensure | cargo_executables) "$@" ;;
        *) die "usage: bash tools/lib.sh say|die|apt_install|apt_ensure|cargo_executables ARGS..." ;;
    esac
fi
