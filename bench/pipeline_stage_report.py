#!/usr/bin/python3
"""Per-stage time of a served pipeline over one benchmark run, from two scrapes of `bitserve serve
--metrics-listen` (before and after the run) and the run's wall time:

    pipeline_stage_report.py BEFORE.prom AFTER.prom WALL_SECONDS

For each stage: steps, compute and transport (NCCL or TCP, waits for the peer included) time per
step, and utilization = compute / wall. The pipeline bubble is 1 - the mean utilization: the share
of the stages' time that no step kept them computing (transport waits, the scheduler between steps,
the fill and drain of the micro-batches).
"""
import re
import sys


def scrape(path):
    values = {}
    pattern = re.compile(r'^bitserve_pipeline_stage_(compute|transfer)_seconds_(sum|count)\{stage="(\d+)"\} (\S+)$')
    with open(path) as f:
        for line in f:
            m = pattern.match(line.strip())
            if m:
                values[(m.group(1), m.group(2), int(m.group(3)))] = float(m.group(4))
    return values


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    before, after, wall = scrape(sys.argv[1]), scrape(sys.argv[2]), float(sys.argv[3])
    stages = sorted({k[2] for k in after})
    if not stages:
        sys.exit("no bitserve_pipeline_stage_* metrics in " + sys.argv[2])
    delta = lambda kind, part, s: after.get((kind, part, s), 0.0) - before.get((kind, part, s), 0.0)
    print("| stage | steps | compute (ms/step) | transport (ms/step) | utilization |")
    print("|---:|---:|---:|---:|---:|")
    utilization = []
    for s in stages:
        steps = delta("compute", "count", s)
        compute, transfer = delta("compute", "sum", s), delta("transfer", "sum", s)
        per = lambda x: 1e3 * x / steps if steps else 0.0
        utilization.append(compute / wall if wall > 0 else 0.0)
        print(f"| {s} | {steps:.0f} | {per(compute):.3f} | {per(transfer):.3f} | {utilization[-1]:.1%} |")
    print(f"pipeline bubble: {1 - sum(utilization) / len(utilization):.1%} over {wall:.2f} s")


if __name__ == "__main__":
    main()
