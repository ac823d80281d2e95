#!/bin/sh
# Runs a Firecracker client library's driver where the library expects a host
# of its own, without changing the real one: in fresh mount and network
# namespaces (`unshare --mount --net`, started by tests/py_clients.rs) it
#   - lays writable overlays (upper layers in WORK) over /usr/local/bin and
#     /var/lib, the paths firecracker-python hardcodes (the testbed's root is
#     read-only), and installs shimvmm there as /usr/local/bin/firecracker;
#   - gives the namespace an uplink: one end of a veth pair with 192.0.2.2/24
#     and a default route (the clients name their NAT rules after the default
#     route's interface), plus loopback.
# Usage: sandbox.sh WORK SHIMVMM_BIN CMD...
set -eu
work=$1 shimvmm=$2
shift 2
for d in /usr/local/bin /var/lib; do
    key=$(echo "$d" | tr / _)
    mkdir -p "$work/ovl$key/up" "$work/ovl$key/work"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$work/ovl$key/up,workdir=$work/ovl$key/work" "$d"
done
ln -sf "$shimvmm" /usr/local/bin/firecracker
ip link set lo up
ip link add uplink0 type veth peer name uplink1
ip link set uplink1 up
ip addr add 192.0.2.2/24 dev uplink0
ip link set uplink0 up
ip route add default via 192.0.2.1 dev uplink0
exec "$@"
