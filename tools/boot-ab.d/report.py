"""Summarises tools/boot-ab logs: per boot and per variant (medians).

wall: seconds from spawn to the marker; first: to the first kernel line;
guest_init: the guest's own timestamp on the marker line; us/byte: the
console's cost per byte, from the gap between "console [ttyS0] enabled" and
the next line (the kernel replays its backlog to the UART in between).
"""
import collections
import glob
import os
import re
import statistics
import sys

d = sys.argv[1]
rows = collections.defaultdict(list)
for f in sorted(glob.glob(os.path.join(d, "*_*.txt"))):
    var, rnd = os.path.basename(f)[:-4].rsplit("_", 1)
    lines = open(f, errors="replace").read().splitlines()

    def find(pat):
        for i, l in enumerate(lines):
            if pat in l:
                m = re.match(r"([\d.]+) .*?\[\s*([\d.]+)\]", l)
                if m:
                    return i, float(m.group(1)), float(m.group(2))
        return None

    first, en, init = find("Linux version"), find("console [ttyS0] enabled"), find(os.environ.get("MARK", "Run /init"))
    if not (first and en and init) or en[0] + 1 >= len(lines):
        print("%-6s %s incomplete (boot lost or marker missing)" % (var, rnd))
        continue
    nxt = re.match(r"[\d.]+ .*?\[\s*([\d.]+)\]", lines[en[0] + 1])
    backlog = sum(len(l.split(" ", 1)[1]) + 2 for l in lines[first[0]:en[0]])
    usb = (float(nxt.group(1)) - en[2]) * 1e6 / backlog if nxt and backlog else float("nan")
    r = (init[1], first[1], init[2], usb)
    rows[var].append(r)
    print("%-6s %s wall=%.2f first=%.2f guest_init=%.2f us/byte=%.0f" % ((var, rnd) + r))
for v, r in rows.items():
    med = [statistics.median(x[i] for x in r) for i in range(4)]
    print("MEDIAN %-6s n=%d wall=%.2f first=%.2f guest_init=%.2f us/byte=%.0f" % ((v, len(r)) + tuple(med)))
