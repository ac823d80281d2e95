#!/usr/bin/env python3
"""VMM start-up, side by side: spawn until the API socket accepts a connection,
and spawn until `InstanceStart` is answered (whatever the answer).

Usage: startup.py [--runs N] [--kernel VMLINUX --initrd INITRD] NAME=BINARY...

Every BINARY is started as `BINARY --api-sock S` (shimvmm and Firecracker take
the same flag and speak the same API), stdout/stderr to /dev/null, with
os.posix_spawn (the same spawn cost for all). The VMMs alternate within each
round and the order rotates every round. Per run, one JSON object:

- socket_ms: spawn until connect() to S succeeds (polled every 0.05 ms, a
  failed connect costs ~2 us);
- with --kernel: a second process of the same binary gets PUT /boot-source
  (kernel, initrd, console=ttyS0 ...), PUT /machine-config (2 vCPUs, 512 MiB)
  and PUT /actions InstanceStart on one connection right after its socket
  accepts; instance_start_ms is spawn until that answer, instance_start_call_ms
  the InstanceStart request alone, with the HTTP status and body;
- cpu_ms_at_ready, minflt_at_ready, threads_at_ready, rss_kib_at_ready: the
  child's CPU time (all threads' schedstat), minor faults, threads and RSS
  read from /proc the moment its socket accepted (after the time was taken);
- cpu_ms: the child's user+system CPU (wait4 after SIGKILL, right after the
  measurement). (Its ru_maxrss is not reported: after posix_spawn's vfork it
  starts at this script's own RSS.)
"""
import argparse, json, os, signal, socket, sys, tempfile, time

POLL_S = 0.00005


def spawn(binary, sock):
    null = os.open(os.devnull, os.O_RDWR)
    try:
        fa = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2)]
        t0 = time.perf_counter()
        pid = os.posix_spawn(binary, [binary, "--api-sock", sock], os.environ, file_actions=fa)
    finally:
        os.close(null)
    return pid, t0


def wait_socket(pid, sock, t0):
    deadline = t0 + 10
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock)
            return s, time.perf_counter() - t0
        except OSError:
            s.close()
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                raise RuntimeError(f"exited (status {status}) before its API socket accepted")
            if time.perf_counter() > deadline:
                raise RuntimeError("API socket did not accept within 10 s")
            time.sleep(POLL_S)


def request(s, method, path, body):
    data = json.dumps(body).encode()
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              f"Accept: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed before the answer to {method} {path}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for l in lines[1:]:
        k, _, v = l.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest[:length].decode(errors="replace")


def at_ready(pid):
    """The child's state the moment its socket accepted (read after the time
    was taken): CPU ns of all its threads (schedstat), minor page faults,
    threads, resident KiB."""
    r = {}
    try:
        cpu = 0
        for t in os.listdir(f"/proc/{pid}/task"):
            cpu += int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
        r["cpu_ms_at_ready"] = cpu / 1e6
        st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        r["minflt_at_ready"] = int(st[7])
        r["threads_at_ready"] = int(st[17])
        for l in open(f"/proc/{pid}/status"):
            if l.startswith("VmRSS:"):
                r["rss_kib_at_ready"] = int(l.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return r


def reap(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, _, ru = os.wait4(pid, 0)
    return (ru.ru_utime + ru.ru_stime) * 1e3


def socket_run(name, binary, d, i):
    sock = os.path.join(d, f"{name}-{i}.sock")
    pid, t0 = spawn(binary, sock)
    r = {"bench": "startup", "vmm": name, "run": i, "binary": binary}
    try:
        s, wall = wait_socket(pid, sock, t0)
        r.update(at_ready(pid))
        s.close()
        r["socket_ms"] = wall * 1e3
    except RuntimeError as e:
        r["error"] = str(e)
    r["cpu_ms"] = reap(pid)
    try:
        os.unlink(sock)
    except OSError:
        pass
    return r


def start_run(name, binary, d, i, kernel, initrd):
    sock = os.path.join(d, f"{name}-{i}-start.sock")
    pid, t0 = spawn(binary, sock)
    r = {"bench": "instance_start", "vmm": name, "run": i, "binary": binary}
    try:
        s, wall = wait_socket(pid, sock, t0)
        with s:
            s.settimeout(30)
            r["socket_ms"] = wall * 1e3
            st, body = request(s, "PUT", "/boot-source", {
                "kernel_image_path": kernel, "initrd_path": initrd,
                "boot_args": "console=ttyS0 reboot=k panic=-1 root=/dev/vda rw"})
            r["boot_source_status"] = st
            st, body = request(s, "PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 512})
            r["machine_config_status"] = st
            t1 = time.perf_counter()
            st, body = request(s, "PUT", "/actions", {"action_type": "InstanceStart"})
            t2 = time.perf_counter()
            r.update(instance_start_ms=(t2 - t0) * 1e3, instance_start_call_ms=(t2 - t1) * 1e3,
                     instance_start_status=st, instance_start_body=body[:300])
    except (RuntimeError, OSError) as e:
        r["error"] = str(e)
    r["cpu_ms"] = reap(pid)
    try:
        os.unlink(sock)
    except OSError:
        pass
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--kernel")
    ap.add_argument("--initrd")
    ap.add_argument("vmms", nargs="+", metavar="NAME=BINARY")
    a = ap.parse_args()
    vmms = [tuple(v.split("=", 1)) for v in a.vmms]
    for name, binary in vmms:
        if not os.access(binary, os.X_OK):
            sys.exit(f"startup.py: {name}: {binary} is not executable")
    with tempfile.TemporaryDirectory(prefix="startup-") as d:
        # One untimed run each: page cache and dentries warm for everyone.
        for name, binary in vmms:
            socket_run(name, binary, d, -1)
        for i in range(a.runs):
            for k in range(len(vmms)):
                name, binary = vmms[(i + k) % len(vmms)]
                print(json.dumps(socket_run(name, binary, d, i)), flush=True)
        if a.kernel:
            for i in range(a.runs):
                for k in range(len(vmms)):
                    name, binary = vmms[(i + k) % len(vmms)]
                    print(json.dumps(start_run(name, binary, d, i, a.kernel, a.initrd)), flush=True)


if __name__ == "__main__":
    main()
