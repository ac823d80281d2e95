#!/usr/bin/env python3
"""shimvmm start-up: process spawn until its API socket accepts a connection.

Usage: startup.py SHIMVMM_BIN [RUNS]. Prints one JSON object per run: wall ms
(spawn to first successful connect, polled every 0.1 ms) and the child's CPU ms
(getrusage via wait4, user + system, up to that point: SIGKILL right after).
"""
import json, os, signal, socket, subprocess, sys, tempfile, time

def one(binary, d, i):
    sock = os.path.join(d, f"api{i}.sock")
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "--api-sock", sock], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = t0 + 10
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock)
            wall = time.perf_counter() - t0
            s.close()
            break
        except OSError:
            s.close()
            if p.poll() is not None:
                raise SystemExit(f"shimvmm exited ({p.returncode}) before its API socket accepted: "
                                 + p.stderr.read().decode(errors="replace").strip())
            if time.perf_counter() > deadline:
                p.kill(); p.wait()
                raise SystemExit("shimvmm's API socket did not accept within 10 s")
            time.sleep(0.0001)
    p.send_signal(signal.SIGKILL)
    _, _, ru = os.wait4(p.pid, 0)
    p.returncode = 0
    try:
        os.unlink(sock)
    except OSError:
        pass
    return {"bench": "startup", "run": i, "wall_ms": wall * 1e3,
            "cpu_ms": (ru.ru_utime + ru.ru_stime) * 1e3, "maxrss_kib": ru.ru_maxrss}

def main():
    binary = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    with tempfile.TemporaryDirectory() as d:
        for i in range(runs):
            print(json.dumps(one(binary, d, i)), flush=True)

if __name__ == "__main__":
    main()
