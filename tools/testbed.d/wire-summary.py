#!/usr/bin/env python3
"""Medians and ratios of wire-rounds.sh's runs (docs/benchmarks.md 5c).

Usage: wire-summary.py [--base LABEL] OUTDIR [OUTDIR ...]
Each run that finished its transfers left one JSON line in
OUTDIR/ROUND-LABEL-ATTEMPT.log.out. Prints a row per run, the median of each
figure per label, each label's medians over the base label's (default
shimvmm-tap-wire), and the median of each label's ratios to the base run of the
same round in the same L1.
"""

import glob
import json
import os
import re
import statistics
import sys

FIGS = [
    ("guest_to_host_mbit_s", "guest->peer Mbit/s"),
    ("host_to_guest_mbit_s", "peer->guest Mbit/s"),
    ("vmm_cpu_s_per_gib", "VMM CPU s/GiB"),
    ("vmm_own_cpu_s_per_gib", "own CPU s/GiB"),
    ("host_busy_cpu_s_per_gib", "L1 busy CPU s/GiB"),
]
NAN = float("nan")


def load(dirs):
    runs = []
    for d in dirs:
        for path in sorted(glob.glob(f"{d}/*.log.out"), key=os.path.getmtime):
            m = re.match(r"(\d+)-(.+)-(\d+)\.log\.out$", os.path.basename(path))
            if not m:
                continue
            with open(path) as f:
                # libtest may print "test NAME ... " before the JSON.
                for line in f:
                    if '{"bench":"guestnet"' in line:
                        j = json.loads(line[line.index('{"bench"'):])
                        runs.append(dict(j, dir=d, wire_round=int(m[1]), label=m[2]))
    return runs


def main():
    args = sys.argv[1:]
    base = "shimvmm-tap-wire"
    if args[:1] == ["--base"]:
        base, args = args[1], args[2:]
    runs = load(args)
    print("| label | L1:round | " + " | ".join(n for _, n in FIGS) + " |")
    print("|---|---|" + "---|" * len(FIGS))
    for r in runs:
        print(f"| {r['label']} | {os.path.basename(r['dir'])}:{r['wire_round']} | "
              + " | ".join(f"{r.get(k, NAN):.1f}" for k, _ in FIGS) + " |")
    labels = list(dict.fromkeys(r["label"] for r in runs))
    med = {}
    for lb in labels:
        rs = [r for r in runs if r["label"] == lb]
        med[lb] = {k: statistics.median(r.get(k, NAN) for r in rs) for k, _ in FIGS}
        print(f"median {lb} ({len(rs)} runs): " + ", ".join(f"{n} {med[lb][k]:.1f}" for k, n in FIGS))
    if base not in med:
        return
    for lb in labels:
        if lb == base:
            continue
        print(f"{lb} / {base}, medians: " + ", ".join(f"{n} {med[lb][k] / med[base][k]:.2f}" for k, n in FIGS))
        pairs = []
        for d in args:
            by = {(r["wire_round"], r["label"]): r for r in runs if r["dir"] == d}
            for (rnd, l2), s in by.items():
                t = by.get((rnd, base))
                if l2 == lb and t:
                    pairs.append({k: s.get(k, NAN) / t.get(k, NAN) for k, _ in FIGS})
        if pairs:
            print(f"{lb} / {base}, median of {len(pairs)} same-round ratios: "
                  + ", ".join(f"{n} {statistics.median(p[k] for p in pairs):.2f}" for k, n in FIGS))


if __name__ == "__main__":
    main()
