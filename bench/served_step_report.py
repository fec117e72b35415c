#!/usr/bin/python3
"""Where a served run's wall time goes, from two scrapes of `bitserve serve --metrics-listen`
(before and after the run) and the run's wall time:

    served_step_report.py BEFORE.prom AFTER.prom WALL_SECONDS

Prints the scheduler steps taken, their mean duration, tokens and sequences, the share of the wall
time spent inside steps (bitserve_step_duration_seconds: from the step's plan to its results, the
engine's forward pass and sampling included) and the rest: time between steps, in which the
coordinator plans, delivers tokens and waits for requests (ramp-up and drain included).
"""
import re
import sys

METRICS = ("bitserve_step_duration_seconds", "bitserve_step_tokens", "bitserve_step_sequences",
           "bitserve_generation_tokens_total")


def scrape(path):
    values = {}
    pattern = re.compile(r"^(bitserve_[a-z_]+?)(_sum|_count)?(\{[^}]*\})? (\S+)$")
    with open(path) as f:
        for line in f:
            m = pattern.match(line.strip())
            if m and m.group(1) in METRICS and not m.group(3):
                values[m.group(1) + (m.group(2) or "")] = float(m.group(4))
    return values


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    before, after, wall = scrape(sys.argv[1]), scrape(sys.argv[2]), float(sys.argv[3])
    delta = lambda name: after.get(name, 0.0) - before.get(name, 0.0)
    steps = delta("bitserve_step_duration_seconds_count")
    if steps <= 0:
        sys.exit("no scheduler steps between the two scrapes")
    in_steps = delta("bitserve_step_duration_seconds_sum")
    generated = delta("bitserve_generation_tokens_total")
    print("| steps | mean step (ms) | tokens / step | sequences / step | output tok/s | in steps | between steps |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {steps:.0f} | {in_steps / steps * 1e3:.2f} | {delta('bitserve_step_tokens_sum') / steps:.1f} "
          f"| {delta('bitserve_step_sequences_sum') / steps:.1f} | {generated / wall:.0f} "
          f"| {in_steps:.2f} s ({100 * in_steps / wall:.1f}%) | {wall - in_steps:.2f} s "
          f"({100 * (wall - in_steps) / wall:.1f}%) |")


if __name__ == "__main__":
    main()
