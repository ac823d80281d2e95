#!/bin/sh
# Runs guest tests of one test binary in turn, ROUNDS times, inside one L1,
# and records for each run its verdict (pass, triple fault, stall, fail), its
# length, and the IOMMU fault and unhandled-MSR lines L1's kernel logged
# meanwhile. Used for the shim-vs-tap fault rates in findings.md:
#   SHIMVMM_TESTBED_LOCK=/tmp/shimvmm-l1.lock tools/testbed run --timeout 3600 -- \
#     tools/testbed.d/net-fault-rate.sh target/release/deps/net_reset-HASH target/fault-rate 10 \
#     shim_reset_cycle tap_reset_cycle
# Output: OUTDIR/summary (one RUN line per run), OUTDIR/N-TEST.log (the test's
# output), OUTDIR/N-TEST.dmesg (L1's kernel log lines new during the run).
set -u
bin=$1 out=$2 rounds=$3
shift 3
mkdir -p "$out"
i=0
while [ "$i" -lt "$rounds" ]; do
    for t in "$@"; do
        log=$out/$i-$t.log
        before=$(dmesg | wc -l)
        start=$(date +%s)
        timeout 900 env SHIMVMM_REQUIRE_GUEST=1 "$bin" --exact "$t" --include-ignored --nocapture --test-threads=1 >"$log" 2>&1
        rc=$?
        secs=$(( $(date +%s) - start ))
        dmesg | tail -n +"$((before + 1))" >"$out/$i-$t.dmesg"
        if grep -q "KVM_EXIT_SHUTDOWN: the guest triple-faulted" "$log"; then v=triple-fault
        elif grep -q -e "the guest stopped while we waited" -e "GuestStalled {" "$log"; then v=stalled
        elif [ "$rc" -eq 0 ]; then v=pass
        else v="fail($rc)"; fi
        iommu=$(grep -ciE 'dmar.*(fault|\[dma )|iommu.*fault|io_page_fault' "$out/$i-$t.dmesg")
        msr=$(grep -c 'Unhandled WRMSR' "$out/$i-$t.dmesg")
        echo "RUN $i $t $v secs=$secs iommu_fault_lines=$iommu unhandled_wrmsr=$msr uptime=$(cut -d' ' -f1 /proc/uptime)" | tee -a "$out/summary"
        sync
    done
    i=$((i + 1))
done
dmesg >"$out/dmesg-full"
sync
