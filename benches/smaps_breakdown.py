#!/usr/bin/env python3
"""Where a VMM's memory beyond guest RAM goes: /proc/PID/smaps of each binary
after `InstanceStart` is answered (boot-source, 2 vCPUs, 512 MiB), Rss and Pss
summed by kind of mapping. Runs on the host, no testbed.

Usage: smaps_breakdown.py --kernel VMLINUX --initrd INITRD NAME=BINARY[,ARG...]...
(ARGs go before `--api-sock`, e.g. `shimvmm-musl=PATH,--no-seccomp`.)

Kinds: the binary's own pages (text, read-only data, writable data); each
shared library (libc, ld.so, libgcc_s, other); [heap] (the main arena); glibc's
per-thread malloc arenas (anonymous mappings at 64 MiB-aligned addresses, how
glibc places them); thread stacks (anonymous mappings right above a guard
page); other anonymous memory; the guest RAM (the largest anonymous mapping of
at least the guest's size, left out of the total). One JSON object per binary.
"""
import argparse, json, os, socket, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import request, wait_socket  # noqa: E402

GUEST_MIB = 512
ARENA_ALIGN = 64 << 20


def parse_smaps(pid):
    maps, cur = [], None
    for line in open(f"/proc/{pid}/smaps"):
        f = line.split()
        if "-" in f[0] and len(f) >= 5 and ":" in f[3]:
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            cur = {"lo": lo, "hi": hi, "perms": f[1], "path": f[5] if len(f) > 5 else "", "rss": 0, "pss": 0}
            maps.append(cur)
        elif f[0] == "Rss:":
            cur["rss"] = int(f[1])
        elif f[0] == "Pss:":
            cur["pss"] = int(f[1])
    return maps


def kind(m, prev, binary):
    p = m["path"]
    if p == os.path.realpath(binary) or p == binary:
        return "binary " + ("text" if "x" in m["perms"] else "rw data" if "w" in m["perms"] else "ro data")
    base = os.path.basename(p)
    if base.startswith("libc.so"):
        return "libc.so.6"
    if base.startswith("ld-linux"):
        return "ld.so"
    if base.startswith("libgcc_s"):
        return "libgcc_s.so.1"
    if p.startswith("/"):
        return "other files"
    if p == "[heap]":
        return "[heap]"
    if p == "[stack]":
        return "main thread [stack]"
    if p.startswith("["):
        return p
    if m["lo"] % ARENA_ALIGN == 0 and m["hi"] - m["lo"] <= ARENA_ALIGN:
        return "malloc arenas (per thread)"
    if prev is not None and prev["hi"] == m["lo"] and prev["perms"].startswith("---") and prev["hi"] - prev["lo"] <= 64 << 10:
        return "thread stacks"
    return "other anonymous"


def measure(name, binary, extra, kernel, initrd, d):
    sock = os.path.join(d, f"{name}.sock")
    null = os.open(os.devnull, os.O_RDWR)
    fa = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2)]
    t0 = time.perf_counter()
    pid = os.posix_spawn(binary, [binary, *extra, "--api-sock", sock], os.environ, file_actions=fa)
    os.close(null)
    try:
        s, _ = wait_socket(pid, sock, t0)
        for method, path, body in (
            ("PUT", "/boot-source", {"kernel_image_path": kernel, "initrd_path": initrd,
                                     "boot_args": "console=ttyS0 reboot=k panic=-1"}),
            ("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": GUEST_MIB}),
            ("PUT", "/actions", {"action_type": "InstanceStart"}),
        ):
            request(s, method, path, body)
        time.sleep(1.0)
        maps = parse_smaps(pid)
        threads = len(os.listdir(f"/proc/{pid}/task"))
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    ram = max((m for m in maps if not m["path"] and m["hi"] - m["lo"] >= GUEST_MIB << 20),
              key=lambda m: m["hi"] - m["lo"], default=None)
    kinds, prev = {}, None
    for m in maps:
        if m is not ram:
            k = kind(m, prev, binary)
            e = kinds.setdefault(k, {"rss_kib": 0, "pss_kib": 0, "mappings": 0})
            e["rss_kib"] += m["rss"]
            e["pss_kib"] += m["pss"]
            e["mappings"] += 1
        prev = m
    return {"vmm": name, "binary": binary, "args": extra, "threads": threads,
            "overhead_rss_kib": sum(e["rss_kib"] for e in kinds.values()),
            "overhead_pss_kib": sum(e["pss_kib"] for e in kinds.values()),
            "guest_ram_rss_kib": ram["rss"] if ram else None,
            "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1]["rss_kib"]))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("vmms", nargs="+")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for spec in a.vmms:
            name, rest = spec.split("=", 1)
            binary, *extra = rest.split(",")
            print(json.dumps(measure(name, binary, extra, a.kernel, a.initrd, d)), flush=True)


if __name__ == "__main__":
    main()
