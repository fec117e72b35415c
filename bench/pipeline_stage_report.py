#!/usr/bin/python3
"""Per-stage time of a served pipeline over one benchmark run, from two scrapes of `bitserve serve
--metrics-listen` (before and after the run) and the run's wall time:

    pipeline_stage_report.py BEFORE.prom AFTER.prom WALL_SECONDS [--layers 45,35]

For each stage: steps, compute and transport (NCCL or TCP, waits for the peer included) time per
step, and utilization = compute / wall. The pipeline bubble is 1 - the mean utilization: the share
of the stages' time that no step kept them computing (transport waits, the scheduler between steps,
the fill and drain of the micro-batches).

--layers (the split served: layers per stage, as `serve` logs it) adds the split that would equalize
the stages' compute at this workload, for `serve --pipeline-split`: a layer's time is the mean of
compute / layers over the stages without the LM head, the head's time what the last stage computes
beyond its layers (the embedding, a few row gathers, counts as nothing), and the stages end where
the running cost is nearest each stage's share (as BalanceStages does with bytes).
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


def suggest_split(compute_ms, layers):
    """The layers per stage that equalize per-step compute, and each stage's predicted time."""
    n, stages = sum(layers), len(layers)
    layer = sum(t / l for t, l in zip(compute_ms[:-1], layers[:-1])) / (stages - 1)
    head = max(0.0, compute_ms[-1] - layers[-1] * layer)
    total = n * layer + head
    split, begin = [], 0
    for s in range(stages - 1):
        target = total * (s + 1) / stages
        end = begin + 1
        while end < n - (stages - 1 - s) and abs((end + 1) * layer - target) <= abs(end * layer - target):
            end += 1
        split.append(end - begin)
        begin = end
    split.append(n - begin)
    predicted = [c * layer for c in split]
    predicted[-1] += head
    return split, predicted


def main():
    args = sys.argv[1:]
    layers = None
    if "--layers" in args:
        i = args.index("--layers")
        layers = [int(x) for x in args[i + 1].split(",")]
        del args[i:i + 2]
    if len(args) != 3:
        sys.exit(__doc__)
    before, after, wall = scrape(args[0]), scrape(args[1]), float(args[2])
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
    if layers is not None:
        if len(layers) != len(stages) or len(stages) < 2:
            sys.exit(f"--layers has {len(layers)} counts for {len(stages)} stages")
        compute_ms = [1e3 * delta("compute", "sum", s) / max(1.0, delta("compute", "count", s))
                      for s in stages]
        split, predicted = suggest_split(compute_ms, layers)
        now, then = max(compute_ms), max(predicted)
        print(f"balanced by measured compute: --pipeline-split {','.join(map(str, split))} "
              f"(per-step compute {' / '.join(f'{t:.2f}' for t in predicted)} ms predicted, "
              f"slowest stage {now:.2f} -> {then:.2f} ms, {100 * (now / then - 1):+.1f}% throughput)")


if __name__ == "__main__":
    main()
