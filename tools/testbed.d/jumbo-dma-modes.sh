#!/bin/sh
# Inside one L1 (PF on vfio-pci): net_jumbo with dma=ram and with dma=strict
# (a guest buffer is in the IOMMU only while the NIC owns it: a stray NIC write
# is an IOMMU fault in L1's log), and net_shim, in turn, ROUNDS times; a
# verdict per run and L1's kernel lines during it. Used in findings.md:
#   SHIMVMM_TESTBED_LOCK=/tmp/shimvmm-l1.lock tools/testbed run --timeout 1400 -- \
#     env SHIMVMM_BIN=$PWD/target/release/shimvmm tools/testbed.d/jumbo-dma-modes.sh \
#     target/release/deps/net_jumbo-HASH target/release/deps/net_shim-HASH target/jumbo-modes 2 \
#     "jumbo-ram jumbo-strict shim-ram"
# Output: OUTDIR/summary (one RUN line per run), OUTDIR/N-KIND.log, OUTDIR/N-KIND.dmesg.
set -u
jumbo=$1 shim=$2 out=$3 rounds=$4 kinds=${5:-jumbo-ram jumbo-strict shim-ram}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
i=0
while [ "$i" -lt "$rounds" ]; do
  for t in $kinds; do
    case $t in
      jumbo-*) exe=$jumbo; name=shim_jumbo_mtu_9000_pings_8972_moves_64mib_and_frames_span_buffers ;;
      *) exe=$shim; name=shim_guest_pings_moves_64mib_each_way_and_survives_reset_under_flood ;;
    esac
    case $t in
      *-strict) bin=$here/strict-dma-wrap.sh ;;
      *) bin=$SHIMVMM_BIN ;;
    esac
    log=$out/$i-$t.log
    before=$(dmesg | wc -l)
    start=$(date -u +%H:%M:%S)
    timeout 600 env SHIMVMM_REQUIRE_GUEST=1 SHIMVMM_REQUIRE_TESTBED=1 SHIMVMM_REAL_BIN="$SHIMVMM_BIN" \
      SHIMVMM_BIN="$bin" "$exe" --exact "$name" --nocapture --test-threads=1 > "$log" 2>&1
    rc=$?
    if grep -q "KVM_EXIT_SHUTDOWN: the guest triple-faulted" "$log"; then r=triple-fault
    elif grep -q -e "the guest stopped while we waited" -e "GuestStalled {" "$log"; then r=stall
    elif [ $rc = 0 ]; then r=pass; else r="fail($rc)"; fi
    dmesg | tail -n +$((before + 1)) > "$out/$i-$t.dmesg"
    echo "RUN $i $t $r $start-$(date -u +%H:%M:%S) iommu-fault-lines=$(grep -c -i -e DMAR -e 'iommu.*fault' "$out/$i-$t.dmesg")" | tee -a "$out/summary"
    sync
  done
  i=$((i + 1))
done
