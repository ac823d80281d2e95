"""Runs a VMM, stamps each console line with seconds since start, stops at MARK.

usage: ts.py OUT MARK CMD...  -- prints "secs=S" (time to MARK) or "FAIL".
"""
import subprocess
import sys
import time

out, mark, cmd = sys.argv[1], sys.argv[2].encode(), sys.argv[3:]
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
found = None
with open(out, "w") as f:
    for line in p.stdout:
        t = time.monotonic() - t0
        f.write("%.3f %s\n" % (t, line.decode(errors="replace").rstrip()))
        if mark in line:
            found = t
            break
p.kill()
p.wait()
print("secs=%.3f" % found if found is not None else "FAIL")
