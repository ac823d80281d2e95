"""Boots the Alpine guest with microheart (PyPI) through its public API, with
shimvmm installed as $MICROHEART_HOME/firecracker (where microheart's
assets.firecracker_path() looks after its wheel's own bin/, which this wheel
does not ship) and the kernel as $MICROHEART_HOME/vmlinux-<version>. Run
inside tests/pyclients/sandbox.sh with MICROHEART_HOME set.

Usage: microheart_boot.py ROOTFS SSH_KEY MARKER TIMEOUT_S

What microheart does on its own (none of its code is changed): registers the
VM (SQLite), copies the disk, makes TAP `mh0` with 172.16.0.1/30, turns on
forwarding and an iptables MASQUERADE rule on the default route's interface,
writes a config file and runs `firecracker --api-sock S --config-file F
--enable-pci` with the console in console.log, then waits until
`ssh -i KEY root@172.16.0.2 true` works. This driver then runs a command in
the guest with run() (SSH), reads GET /machine-config with machine_config(),
and clean(): `ssh reboot` (the VMM exits on the guest's reboot), TAP and rule
removed.
"""

import os
import sys
import time

from common import fail, step, tail, wait_for_text, wait_gone


def main():
    rootfs, key, marker, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

    import microheart
    from microheart import MicroVM, assets

    step("imported", f"microheart {microheart.__version__} from {os.path.dirname(microheart.__file__)}")
    step("assets", f"firecracker={assets.firecracker_path()} kernel={assets.kernel_path()}")

    vm = MicroVM(name="shimvmm", rootfs=rootfs, key=key, vcpu=2, mem_mib=512)
    try:
        secs = vm.start(wait=timeout)
    except Exception as e:  # noqa: BLE001 - report whatever the library raised
        print(tail(vm.console, 400), flush=True)
        fail(f"start() raised {type(e).__name__}: {e}")
    step("start", f"SSH into the guest worked after {secs:.1f} s")
    pid = vm.pid()
    with open(f"/proc/{pid}/comm") as f:
        comm = f.read().strip()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")[:-1]
    step("process", f"pid={pid} comm={comm} exe={os.readlink(f'/proc/{pid}/exe')} argv={argv}")

    if wait_for_text(vm.console, f"SHIMVMM-MARKER {marker}", 60) is None:
        print(tail(vm.console, 60), flush=True)
        fail(f"no marker {marker} on the console")
    step("guest-userspace", f"marker {marker} on the console")

    r = vm.run(["cat", "/proc/version"])
    if r.returncode != 0:
        fail(f"run(cat /proc/version) exited {r.returncode}: {r.stderr}")
    step("ssh-run", r.stdout.strip())
    r = vm.run(["cat", "/etc/alpine-release"])
    if r.returncode != 0 or not r.stdout.strip():
        fail(f"run(cat /etc/alpine-release) exited {r.returncode}: {r.stderr}")
    step("ssh-run-alpine", r.stdout.strip())

    mc = vm.machine_config()
    step("machine-config", str(mc))
    if mc.get("vcpu_count") != 2 or mc.get("mem_size_mib") != 512:
        fail(f"GET /machine-config does not show 2 vCPUs and 512 MiB: {mc}")

    t = time.monotonic()
    vm.clean()
    if not wait_gone(pid, 20):
        fail(f"the VMM process {pid} still runs after clean()")
    if vm.rec is not None:
        fail(f"the registry still lists the VM after clean(): {dict(vm.rec)}")
    step("clean", f"VMM gone, TAP and record removed ({time.monotonic() - t:.1f} s)")
    step("OK", f"microheart booted the guest through {os.readlink(assets.firecracker_path())}")


if __name__ == "__main__":
    main()
