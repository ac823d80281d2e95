"""Boots the Alpine guest with firecracker-python (PyPI, module `firecracker`)
through its public API, with shimvmm installed as /usr/local/bin/firecracker
(the library's fixed `binary_path`). Run inside tests/pyclients/sandbox.sh.

Usage: firecracker_python.py KERNEL ROOTFS MARKER TIMEOUT_S [INITRD]

What the library does on its own (none of its code is changed): spawns
`firecracker --api-sock /var/lib/firecracker/<id>/firecracker.socket --id <id>
--log-path ...` with the console on <id>/firecracker.log, probes `GET /`, then
PUT /boot-source, /drives/rootfs, /machine-config, /network-interfaces/<iface>
(a TAP it creates with pyroute2 and NAT rules through python3-nftables),
/actions InstanceStart; checks the process by name (`firecracker`) and pid.
This driver then uses config() (GET /vm/config), pause()/resume() (PATCH /vm),
list() and delete() (SIGTERM, TAP and rule clean-up).

Two things the library needs from the host, supplied here without touching it:
- `MicroVM()` always calls `docker.from_env()`, which asks a Docker daemon for
  its API version (Docker is only used to build a rootfs from an image, which
  this test does not do): a stub daemon on a Unix socket (DOCKER_HOST) answers
  GET /version and nothing else;
- `MicroVM()` always calls `get_public_ip()`, which asks three internet
  services (only port forwarding uses the answer); the testbed has no
  internet, so that one function is replaced by one returning the uplink's
  address. SSH (paramiko) is only used by connect(), which is not called.
"""

import http.server
import json
import os
import socketserver
import sys
import tempfile
import threading
import time

from common import fail, step, tail, wait_for_text, wait_gone


class DockerVersionStub(http.server.BaseHTTPRequestHandler):
    """Answers docker-py's `GET /version` (API version negotiation) only."""

    def do_GET(self):
        if self.path.split("?")[0].rstrip("/").endswith("/version"):
            body = json.dumps({"ApiVersion": "1.45", "MinAPIVersion": "1.24", "Version": "stub"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = json.dumps({"message": "stub daemon: only /version"}).encode()
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return "docker-stub"

    def log_message(self, *args):
        pass


def start_docker_stub():
    path = os.path.join(tempfile.mkdtemp(prefix="docker-stub-"), "docker.sock")
    server = socketserver.ThreadingUnixStreamServer(path, DockerVersionStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["DOCKER_HOST"] = f"unix://{path}"


def main():
    kernel, rootfs, marker, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    initrd = sys.argv[5] if len(sys.argv) > 5 else None
    start_docker_stub()

    import firecracker
    import firecracker.microvm
    from firecracker import MicroVM

    step("imported", f"firecracker-python {firecracker.__version__} from {os.path.dirname(firecracker.__file__)}")
    firecracker.microvm.get_public_ip = lambda timeout=5: "192.0.2.2"

    vm = MicroVM(
        name="shimvmm-pyclient", kernel_file=kernel, initrd_file=initrd, base_rootfs=rootfs, vcpu=2, memory=512
    )
    t0 = time.monotonic()
    try:
        msg = vm.create()
    except Exception as e:  # noqa: BLE001 - report whatever the library raised
        for d in os.listdir("/var/lib/firecracker"):
            log = f"/var/lib/firecracker/{d}/firecracker.log"
            if os.path.exists(log):
                print(tail(log), flush=True)
        fail(f"create() raised {type(e).__name__}: {e}")
    step("create", msg)
    if not msg.endswith(" created"):
        fail(f"create() returned {msg!r}")
    vms = MicroVM.list()
    step("list", json.dumps(vms))
    if len(vms) != 1:
        fail(f"list() shows {len(vms)} VMs, expected the one just created")
    vm_id, pid = vms[0]["id"], vms[0]["pid"]
    console = f"/var/lib/firecracker/{vm_id}/firecracker.log"

    with open(f"/proc/{pid}/comm") as f:
        comm = f.read().strip()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    step("process", f"pid={pid} comm={comm} exe={os.readlink(f'/proc/{pid}/exe')} argv={argv[:-1]}")

    at = wait_for_text(console, f"SHIMVMM-MARKER {marker}", timeout)
    if at is None:
        print(tail(console, 400), flush=True)
        fail(f"no marker {marker} on the console within {timeout:.0f} s")
    step("guest-userspace", f"marker {marker} after {time.monotonic() - t0:.1f} s")
    if wait_for_text(console, "login:", timeout, at) is None:
        print(tail(console), flush=True)
        fail("no login prompt on the console")
    step("guest-login-prompt", f"after {time.monotonic() - t0:.1f} s")

    cfg = vm.config()
    step("config", json.dumps(cfg, sort_keys=True))
    drives = cfg.get("drives", [])
    if [d.get("drive_id") for d in drives] != ["rootfs"]:
        fail(f"GET /vm/config does not show the rootfs drive: {cfg}")
    if cfg.get("machine-config", {}).get("vcpu_count") != 2:
        fail(f"GET /vm/config shows vcpu_count != 2: {cfg}")

    step("pause", vm.pause())
    step("resume", vm.resume())

    step("delete", vm.delete())
    if not wait_gone(pid, 20):
        fail(f"the VMM process {pid} still runs after delete()")
    if MicroVM.list():
        fail(f"list() after delete() is not empty: {MicroVM.list()}")
    step("OK", f"firecracker-python booted the guest through {os.readlink('/usr/local/bin/firecracker')}")


if __name__ == "__main__":
    main()
