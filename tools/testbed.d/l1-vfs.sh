#!/bin/sh
# Usage: l1-vfs.sh PF N (in the testbed's L1, as root)
#
# Gives the 82576 PF at PCI address PF to Linux's igb (taking it from vfio-pci
# if the testbed bound it there), brings its netdev up (the PF answers its VFs
# only then), creates N SR-IOV VFs without letting a VF driver probe them,
# gives VF k the MAC 52:54:00:c0:03:0<k+1> with spoof checking on (as a host
# admin would) and binds every VF to vfio-pci. Prints one line: the PF's
# interface, then the VFs' addresses. Used by l1-stage2.sh
# (SHIMVMM_TESTBED_VFS) and by tests/net_vf.rs in an L1 set up without VFs.
set -u
PF=${1:?usage: l1-vfs.sh PF N}
N=${2:?usage: l1-vfs.sh PF N}
dev=/sys/bus/pci/devices/$PF
fail() {
    echo "l1-vfs: $*" >&2
    exit 1
}
[ -e "$dev" ] || fail "no PCI device $PF"

# The PF to igb.
echo >"$dev/driver_override" 2>/dev/null
cur=$(readlink "$dev/driver" 2>/dev/null)
cur=${cur##*/}
if [ "$cur" != igb ]; then
    [ -z "$cur" ] || echo "$PF" >"$dev/driver/unbind" || fail "unbinding $PF from $cur failed"
    modprobe igb || fail "modprobe igb failed"
    [ -e /sys/bus/pci/drivers/igb/"$PF" ] || echo "$PF" >/sys/bus/pci/drivers/igb/bind \
        || fail "binding $PF to igb failed"
fi
pf_if=
i=0
while [ $i -lt 100 ] && [ -z "$pf_if" ]; do
    for n in "$dev/net/"*; do
        [ -e "$n" ] && pf_if=${n##*/}
    done
    [ -n "$pf_if" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$pf_if" ] || fail "no network interface for the PF $PF"
ip link set "$pf_if" up || fail "ip link set $pf_if up failed"

# The VFs, for nobody but vfio-pci.
read -r have <"$dev/sriov_numvfs"
if [ "$have" != "$N" ]; then
    echo 0 >"$dev/sriov_drivers_autoprobe" 2>/dev/null
    [ "$have" = 0 ] || echo 0 >"$dev/sriov_numvfs"
    echo "$N" >"$dev/sriov_numvfs" || fail "echo $N > sriov_numvfs on $PF failed"
fi
batch=
k=0
while [ $k -lt "$N" ]; do
    batch="${batch}link set $pf_if vf $k mac 52:54:00:c0:03:0$((k + 1)) spoofchk on
"
    k=$((k + 1))
done
printf '%s' "$batch" | ip -batch - || fail "setting the VFs' MACs on $pf_if failed"

modprobe vfio-pci 2>/dev/null
vfs=
for v in "$dev"/virtfn*; do
    [ -e "$v" ] || fail "no VFs under $PF after sriov_numvfs"
    vf=$(readlink "$v")
    vf=${vf##*/}
    echo vfio-pci >"/sys/bus/pci/devices/$vf/driver_override" || fail "driver_override on $vf"
    if [ ! -e "/sys/bus/pci/drivers/vfio-pci/$vf" ]; then
        [ -e "/sys/bus/pci/devices/$vf/driver" ] && echo "$vf" >"/sys/bus/pci/devices/$vf/driver/unbind"
        echo "$vf" >/sys/bus/pci/drivers_probe 2>/dev/null
    fi
    [ -e "/sys/bus/pci/drivers/vfio-pci/$vf" ] || fail "VF $vf did not bind to vfio-pci"
    group=
    for g in /sys/kernel/iommu_groups/*/devices/"$vf"; do
        g=${g%/devices/*}
        group=${g##*/}
    done
    [ -n "$group" ] && [ -c "/dev/vfio/$group" ] || fail "/dev/vfio/<group> of VF $vf missing"
    # QEMU's 82576 registers its VF BARs as 32-bit: a VF whose BAR0 L1 placed
    # above 4 GiB is decoded at the low 32 bits and reads all zeros. L1 with
    # no RAM above 4 GiB (tools/testbed with SHIMVMM_TESTBED_VFS) keeps them low.
    read -r bar0 _ <"/sys/bus/pci/devices/$vf/resource"
    [ $((bar0 >> 32)) -eq 0 ] || fail "VF $vf's BAR0 is at $bar0, above 4 GiB: QEMU's emulated 82576 would not decode it (start L1 with SHIMVMM_TESTBED_VFS, which keeps its RAM below 4 GiB)"
    echo "l1-vfs: VF $vf bound to vfio-pci, IOMMU group $group" >&2
    vfs="$vfs $vf"
done
echo "$pf_if$vfs"
