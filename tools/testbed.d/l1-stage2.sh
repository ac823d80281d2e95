#!/bin/sh
# Stage 2 of the testbed's L1: PID 1 after switch_root into the host root.
#
# Prepares what shimvmm's tests need (KVM, VFIO, the NICs, the peer namespace),
# then runs the job written by tools/testbed with its stdout/stderr on the
# virtio-serial ports shimvmm.stdout/shimvmm.stderr and its stdin on the port
# shimvmm.stdin (present only with `run --interactive`, else /dev/null),
# reports progress and the exit status as lines on shimvmm.ctl, and powers L1 off.
#
# ctl protocol (one line each): "BOOTED <uptime>", "READY <uptime>",
# "SETUPFAIL <message>", "ALIVE <uptime>" (every 10 s while COMMAND runs),
# "EXIT <status>".
set -u
JOB=${1:?usage: l1-stage2.sh JOBDIR}
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

# PCI IDs of the emulated NICs (QEMU igb = 82576, e1000e = 82574L).
IGB_ID="0x8086:0x10c9"
E1000E_ID="0x8086:0x10d3"
PEER_NS=peer
PEER_IP=192.0.2.1
LOCAL_IP=192.0.2.2
NET_PREFIX=24

uptime_s() { read -r up _ </proc/uptime; echo "$up"; }

log() { echo "[$(uptime_s)] testbed-stage2: $*" >/dev/console; }

# reboot(2) from the static busybox is synchronous: nothing runs from the 9p
# root after the shares go away (exiting PID 1 would panic L1).
poweroff_now() {
    sync
    exec /bin/busybox poweroff -f
}

# Virtio-serial ports have no udev symlinks here: find /dev/vportNpM by name.
port_dev() {
    for d in /sys/class/virtio-ports/vport*; do
        [ -r "$d/name" ] || continue
        read -r name <"$d/name" || continue
        if [ "$name" = "$1" ]; then
            echo "/dev/${d##*/}"
            return 0
        fi
    done
    return 1
}

# The ports appear when virtio_console probes; give it a moment.
i=0
while ! CTL=$(port_dev shimvmm.ctl); do
    i=$((i + 1))
    if [ $i -gt 100 ]; then
        log "virtio-serial port shimvmm.ctl not found"
        poweroff_now
    fi
    sleep 0.1
done
OUT=$(port_dev shimvmm.stdout) || { log "port shimvmm.stdout not found"; poweroff_now; }
ERR=$(port_dev shimvmm.stderr) || { log "port shimvmm.stderr not found"; poweroff_now; }
exec 3>"$CTL"
ctl() { echo "$*" >&3; }
die() {
    log "setup failed: $*"
    ctl "SETUPFAIL $*"
    poweroff_now
}
ctl "BOOTED $(uptime_s)"

# COMMAND's stdin. The host sends nothing before READY, and QEMU holds bytes
# until a port is opened, so nothing typed is lost; when the caller's stdin
# ends the host disconnects the port and reads here return EOF.
IN=/dev/null
if [ -e "$JOB/interactive" ]; then
    i=0
    while ! IN=$(port_dev shimvmm.stdin); do
        i=$((i + 1))
        [ $i -le 50 ] || die "virtio-serial port shimvmm.stdin not found (run --interactive)"
        sleep 0.1
    done
fi
# `command`: a failed redirection must not end PID 1 (that panics L1).
command exec 4<"$IN" 2>/dev/null || die "cannot open $IN for COMMAND's stdin"

echo shimvmm-l1 >/proc/sys/kernel/hostname
ulimit -l unlimited 2>/dev/null
log "stage 2 started"

# Process start-up is slow under TCG (every exec reads libraries over 9p), so
# this uses shell builtins where it can and batches ip/modprobe calls.

# --- find the NICs --------------------------------------------------------------
IGBS=
E1000E=
for d in /sys/bus/pci/devices/*; do
    read -r vendor <"$d/vendor"
    read -r device <"$d/device"
    case "$vendor:$device" in
        "$IGB_ID") IGBS="$IGBS ${d##*/}" ;;
        "$E1000E_ID") E1000E=${d##*/} ;;
    esac
done
set -- $IGBS
[ $# -eq 2 ] || die "expected 2 igb NICs ($IGB_ID), found $#:$IGBS"
[ -n "$E1000E" ] || die "no e1000e NIC ($E1000E_ID) found"
PNIC=$1
PEER_PCI=$2

# SR-IOV mode ($JOB/vfs, from SHIMVMM_TESTBED_VFS): the first igb's PF stays with
# Linux's igb and gets VFS virtual functions for vfio-pci (set up below).
VFS=0
[ -r "$JOB/vfs" ] && read -r VFS <"$JOB/vfs"

# The first igb (lowest address, behind root port rp1) is claimed for vfio-pci
# before any driver loads, so igb.ko never touches it.
if [ "$VFS" = 0 ]; then
    echo vfio-pci >"/sys/bus/pci/devices/$PNIC/driver_override" || die "driver_override on $PNIC"
fi

# --- modules: KVM & co. load in the background (kvm_amd alone takes seconds under
# TCG) while the NIC drivers come up; their PHYs autonegotiate meanwhile ----------
# Transparent huge pages for anonymous memory that asks (MADV_HUGEPAGE): both
# shimvmm and QEMU ask for their guest RAM, and nested paging under TCG is far
# faster with 2 MiB pages. Shmem THP stays off (no VMM here uses shmem guest RAM).
# THP off was tried against the random guest triple faults: they got more frequent
# (3 boots in 4; docs/testbed.md). `shimvmm.thp=never|always` on L1's command line
# (SHIMVMM_TESTBED_APPEND) overrides, for experiments.
thp=madvise
for arg in $(cat /proc/cmdline); do
    case $arg in shimvmm.thp=*) thp=${arg#shimvmm.thp=} ;; esac
done
echo "$thp" > /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || true
echo never > /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null || true
# KVM's per-VM counters (/sys/kernel/debug/kvm/<pid>-<fd>/exits): the test harness
# calls a guest hung when its VM exit count stops moving.
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
modprobe -a kvm kvm_amd tun vhost_net veth bridge vfio vfio_iommu_type1 vfio-pci &
kvm_modprobe=$!
modprobe -a igb e1000e || die "modprobe igb/e1000e failed"

# Wait for a PCI device's network interface and print its name.
netdev_of() {
    i=0
    while [ $i -lt 100 ]; do
        for n in "/sys/bus/pci/devices/$1/net/"*; do
            if [ -e "$n" ]; then
                echo "${n##*/}"
                return 0
            fi
        done
        i=$((i + 1))
        sleep 0.1
    done
    return 1
}
PEER_IF=$(netdev_of "$PEER_PCI") || die "no interface for the peer igb $PEER_PCI"
E1000E_IF=$(netdev_of "$E1000E") || die "no interface for the e1000e $E1000E"
log "NIC drivers loaded: $PEER_IF ($PEER_PCI), $E1000E_IF ($E1000E)"

ip netns add "$PEER_NS" || die "ip netns add $PEER_NS failed"
ip link set "$PEER_IF" netns "$PEER_NS" || die "moving $PEER_IF into namespace $PEER_NS failed"
printf 'link set lo up\naddr add %s dev %s\nlink set %s up\n' \
    "$PEER_IP/$NET_PREFIX" "$PEER_IF" "$PEER_IF" | ip -n "$PEER_NS" -batch - \
    || die "configuring $PEER_IF in namespace $PEER_NS failed"
printf 'link set lo up\naddr add %s dev %s\nlink set %s up\n' \
    "$LOCAL_IP/$NET_PREFIX" "$E1000E_IF" "$E1000E_IF" | ip -batch - \
    || die "configuring $E1000E_IF failed"
log "links configured"

# --- KVM (nested SVM under TCG), VFIO and what tests may need ----------------------
wait "$kvm_modprobe" || die "modprobe kvm kvm_amd tun vhost_net veth bridge vfio vfio_iommu_type1 vfio-pci failed"
[ -c /dev/kvm ] || die "/dev/kvm missing after modprobe kvm_amd (no nested SVM?)"
[ -c /dev/vfio/vfio ] || die "/dev/vfio/vfio missing after modprobe vfio"
# Bind a PCI function to vfio-pci and check its /dev/vfio/<group>; prints the group.
bind_vfio() {
    echo vfio-pci >"/sys/bus/pci/devices/$1/driver_override" || return 1
    if [ ! -e "/sys/bus/pci/drivers/vfio-pci/$1" ]; then
        echo "$1" >/sys/bus/pci/drivers_probe 2>/dev/null
    fi
    [ -e "/sys/bus/pci/drivers/vfio-pci/$1" ] || return 1
    group=
    for g in /sys/kernel/iommu_groups/*/devices/"$1"; do
        g=${g%/devices/*}
        group=${g##*/}
    done
    [ -n "$group" ] && [ -c "/dev/vfio/$group" ] || return 1
    echo "$group"
}
VF_LIST=
PF_IF=
if [ "$VFS" = 0 ]; then
    group=$(bind_vfio "$PNIC") || die "$PNIC did not bind to vfio-pci (or its /dev/vfio/<group> is missing)"
    log "kvm + vfio ready, $PNIC in IOMMU group $group"
else
    # The PF to igb, its netdev up, VFS VFs with their MACs, bound to vfio-pci.
    set -- $(sh "${0%/*}/l1-vfs.sh" "$PNIC" "$VFS" 2>/dev/console) || die "SR-IOV setup of $PNIC failed"
    [ $# -gt 1 ] || die "SR-IOV setup of $PNIC gave no VFs"
    PF_IF=$1
    shift
    VF_LIST="$*"
    log "kvm + vfio ready, PF $PNIC ($PF_IF) with VFs $VF_LIST"
fi

# --- links: autonegotiation of the emulated PHYs takes a few seconds ---------------
i=0
while [ $i -lt 150 ]; do
    read -r carrier <"/sys/class/net/$E1000E_IF/carrier" 2>/dev/null || carrier=0
    if [ "$carrier" = 1 ]; then
        case "$(ip -n "$PEER_NS" -o link show dev "$PEER_IF")" in
            *LOWER_UP*) break ;;
        esac
    fi
    i=$((i + 1))
    sleep 0.1
done
if [ $i -ge 150 ]; then
    msg="warning: links not up after 15 s ($PEER_IF in $PEER_NS, $E1000E_IF): pings to the peer will fail"
    log "$msg"
    echo "testbed: $msg" >"$ERR"
fi

export SHIMVMM_TESTBED=1
if [ "$VFS" = 0 ]; then
    export SHIMVMM_PNIC="$PNIC"
else
    export SHIMVMM_VFS="$VF_LIST"
    export SHIMVMM_PF_IF="$PF_IF"
fi
export SHIMVMM_PEER_NS="$PEER_NS"
export SHIMVMM_PEER_IP="$PEER_IP"
export SHIMVMM_PEER_IF="$PEER_IF"
export SHIMVMM_E1000E_IF="$E1000E_IF"
export SHIMVMM_LOCAL_IP="$LOCAL_IP"
log "ready: pnic=$PNIC${VF_LIST:+ (PF with VFs $VF_LIST)} peer=$PEER_IF@$PEER_NS e1000e=$E1000E_IF"
ctl "READY $(uptime_s)"

# --- the job --------------------------------------------------------------------
# The heartbeat: the runner calls L1 hung when it stops (a frozen L1 would
# otherwise sit out COMMAND's whole --timeout).
( exec 4<&-; while :; do sleep 10; ctl "ALIVE $(uptime_s)"; done ) &
heartbeat=$!
SHIMVMM_TESTBED_HEARTBEAT_PID=$heartbeat sh "$JOB/job.sh" <&4 >"$OUT" 2>"$ERR" 3>&- 4<&-
status=$?
kill -CONT "$heartbeat" 2>/dev/null  # a self-check may have stopped it
kill "$heartbeat" 2>/dev/null
wait "$heartbeat" 2>/dev/null
ctl "EXIT $status"
exec 3>&-
poweroff_now
