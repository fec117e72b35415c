#!/usr/bin/env python3
"""Sums ncu's per-kernel device times (`ncu --metrics gpu__time_duration.sum --csv`) by kernel name.

Usage: ncu_kernel_times.py NCU_CSV [--per N]
  --per N: also print each kernel's time divided by N (e.g. the number of decode steps profiled,
           or steps x layers for per-layer costs).
"""
import collections
import csv
import sys


def main(argv):
    path = argv[1]
    per = float(argv[argv.index("--per") + 1]) if "--per" in argv else None
    rows = [r for r in csv.reader(open(path)) if len(r) > 10]
    if not rows:
        sys.exit(f"{path}: no ncu rows")
    head = rows[0]
    ki, vi, ui = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
    total = collections.defaultdict(float)
    count = collections.Counter()
    for r in rows[1:]:
        name = r[ki].split("(")[0][:70]
        total[name] += float(r[vi].replace(",", "")) * scale[r[ui]]
        count[name] += 1
    s = sum(total.values())
    print(f"{len(rows) - 1} kernels, {s:.1f} us total" + (f", {s / per:.1f} us per unit" if per else ""))
    for name, t in sorted(total.items(), key=lambda kv: -kv[1])[:30]:
        extra = f" {t / per:8.2f} us/unit" if per else ""
        print(f"{t:9.1f} us {count[name]:5d} x {t / count[name]:7.2f} us{extra}  {name}")


if __name__ == "__main__":
    main(sys.argv)
