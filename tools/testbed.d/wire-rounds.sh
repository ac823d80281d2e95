#!/bin/sh
# Inside one L1 with VFs (SHIMVMM_TESTBED_VFS=1): docs/benchmarks.md 5c's bulk
# TCP rounds, the tap routed to the 82576's PF (`shimvmm-tap-wire`) against the
# shim on its first VF (`shimvmm-shim-vf`), the order turned around every
# round, each slot tried twice when the testbed loses the guest. Bulk TCP and
# pings only (SHIMVMM_GUESTNET_UDP=0). A path may be LABEL:PATH:BINARY, to
# compare two shimvmm builds on one path. Used in docs/benchmarks.md 5c:
#   SHIMVMM_TESTBED_VFS=1 SHIMVMM_TESTBED_LOCK=/tmp/shimvmm-l1.lock tools/testbed run --timeout 3000 -- \
#     env SHIMVMM_BIN=$PWD/target/release/shimvmm tools/testbed.d/wire-rounds.sh \
#     target/release/deps/guestnet_peers-HASH target/wire 4 ["PATH ..."]
# Output: OUTDIR/summary (one RUN line per attempt), OUTDIR/ROUND-LABEL-ATTEMPT.log
# (stderr) and .log.out (stdout: the test's JSON line once the transfers are done);
# `python3 tools/testbed.d/wire-summary.py OUTDIR` prints medians and ratios.
set -u
exe=$1 out=$2 rounds=$3 paths=${4:-shimvmm-tap-wire shimvmm-shim-vf}
mkdir -p "$out"
i=0
while [ "$i" -lt "$rounds" ]; do
  order=$paths
  [ $((i % 2)) = 1 ] && order=$(echo "$paths" | awk '{ for (k = NF; k > 0; k--) printf "%s ", $k }')
  for p in $order; do
    case $p in
      *:*:*) label=${p%%:*}; rest=${p#*:}; v=${rest%%:*}; bin=${rest#*:} ;;
      *) label=$p; v=$p; bin=$SHIMVMM_BIN ;;
    esac
    for a in 1 2; do
      log=$out/$i-$label-$a.log
      start=$(date -u +%H:%M:%S)
      timeout 900 env SHIMVMM_BIN="$bin" SHIMVMM_REQUIRE_GUEST=1 SHIMVMM_GUESTNET_UDP=0 SHIMVMM_GUESTNET_VMMS="$v" \
        "$exe" --exact side_by_side_with_firecracker --nocapture --test-threads=1 > "$log.out" 2> "$log"
      rc=$?
      if grep -q "KVM_EXIT_SHUTDOWN: the guest triple-faulted" "$log"; then r=triple-fault
      elif grep -q -e "the guest stopped while we waited" -e "GuestStalled {" "$log"; then r=stall
      elif [ $rc = 0 ]; then r=pass; else r="fail($rc)"; fi
      echo "RUN $i $label $a $r $start-$(date -u +%H:%M:%S)" | tee -a "$out/summary"
      sync
      [ $rc = 0 ] && break
    done
  done
  i=$((i + 1))
done
