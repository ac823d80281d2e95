#!/bin/sh
# Inside one L1: the Alpine kernel booted in several ways, in turn, ROUNDS
# times, to see whether one faults more than the others: elf (the bzImage's
# vmlinux at its link address, as tests/boot.rs's ELF test), bz (the bzImage,
# KASLR), bz-nokaslr, and elf-1cpu / bz-1cpu (one vCPU instead of two). Each
# boots a test image whose script powers off after 1 s (a boot takes 20-30 s in an
# L1; 150 s is a hang); one BOOT line per boot.
#   SHIMVMM_TESTBED_LOCK=/tmp/shimvmm-l1.lock tools/testbed run --timeout 1800 -- \
#     env SHIMVMM_BIN=$PWD/target/release/shimvmm tools/testbed.d/boot-kinds.sh \
#     target/boot-kinds 3 "elf bz bz-nokaslr elf-1cpu bz-1cpu"
# Output: OUTDIR/summary (BOOT ROUND KIND VERDICT TIMES), OUTDIR/ROUND-KIND.log.
set -u
out=$1 rounds=$2 kinds=${3:-elf bz bz-nokaslr elf-1cpu bz-1cpu}
cd "$(dirname "$0")/../.."
mkdir -p "$out"
bin=${SHIMVMM_BIN:-target/release/shimvmm}
eval "$(tools/guest-artifacts paths)"
vmlinux=$(tools/guest-artifacts vmlinux)
cmd="$(tools/guest-artifacts cmdline) quiet"
script=$out/script.sh
printf 'marker booted "$(uname -r)"\n(sleep 1; poweroff) &\n' >"$script"
i=0
while [ "$i" -lt "$rounds" ]; do
    for kind in $kinds; do
        n=2 k=$KERNEL c=$cmd
        case $kind in
            elf) k=$vmlinux ;;
            bz) ;;
            bz-nokaslr) c="$cmd nokaslr" ;;
            elf-1cpu) k=$vmlinux n=1 ;;
            bz-1cpu) n=1 ;;
            *) echo "unknown kind $kind" >&2; exit 2 ;;
        esac
        img=$out/img-$i-$kind.ext4 log=$out/$i-$kind.log
        tools/guest-artifacts test-image --script "$script" --out "$img" --after none >/dev/null
        start=$(date -u +%H:%M:%S)
        timeout 150 "$bin" --kernel "$k" --initrd "$INITRD" --cmdline "$c" --vcpus "$n" --mem 512 \
            --disk "path=$img" >"$log" 2>&1
        rc=$?
        if grep -q "KVM_EXIT_SHUTDOWN: the guest triple-faulted" "$log"; then r=triple-fault
        elif grep -q -e "soft lockup" -e "rcu: INFO: .*stall" "$log"; then r=stall
        elif grep -q "SHIMVMM-MARKER booted" "$log" && [ "$rc" = 0 ]; then r=pass
        else r="other($rc)"; fi
        echo "BOOT $i $kind $r $start-$(date -u +%H:%M:%S)" | tee -a "$out/summary"
        rm -f "$img"
        sync
    done
    i=$((i + 1))
done
