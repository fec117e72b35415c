#!/usr/bin/env python3
"""Sums ncu's per-kernel device times (`ncu --metrics gpu__time_duration.sum --csv`) by kernel name.

Usage: ncu_kernel_times.py NCU_CSV [--per N] [--categories]
  --per N:        also print each kernel's time divided by N (e.g. the number of decode steps
                  profiled, or steps x layers for per-layer costs).
  --categories:   also sum the times by what the kernels do (ternary products, attention, norms and
                  quantization, q/k/v epilogue + RoPE + KV write, LM head, sampling, embedding, MoE
                  routing, other), one line per category: `category: total us [per unit] share`.
"""
import collections
import csv
import re
import sys

# First match wins; patterns are searched in ncu's demangled kernel names.
CATEGORIES = [
    ("MoE routing / dispatch", r"SoftmaxTopK|GroupByExpert|MapExperts|CombineExperts|GatherDispatch|"
                               r"LocalExpertRows|ResultsInReceivedOrder|Bf16RowProducts"),
    ("attention", r"paged_attention::|DecodeMmaKernel|HadamardRotate"),
    # cuBLASLt's int8 kernels (i8i32) are the ternary products' unpack + cuBLASLt path at the
    # largest batches; the int8 LM head's GEMM (--lm-head-dtype int8, off here) would count there too.
    ("ternary products", r"Gemv|Ternary|PermuteForWgmma|i8i32"),
    ("q/k/v epilogue + RoPE + KV write", r"QkvEpilogueRope|WriteBf16Kernel|WriteQuantizedKernel"),
    ("LM head (norm + GEMM)", r"RmsNormToBf16|nvjet|gemm|Gemm|cublas|xmma|Int8LmHead"),
    ("norms / quantization / residual", r"FusedNormQuantize|QuantizeRows|AddKernel|GatedFfn|Residual"),
    ("sampling", r"Greedy|Sample|TopLogprobs|Penalt"),
    ("embedding", r"Embedding"),
]


def category(name):
    for label, pattern in CATEGORIES:
        if re.search(pattern, name):
            return label
    return "other"


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
    by_category = collections.defaultdict(float)
    for r in rows[1:]:
        t = float(r[vi].replace(",", "")) * scale[r[ui]]
        name = r[ki].split("(")[0][:70]
        total[name] += t
        count[name] += 1
        by_category[category(r[ki])] += t
    s = sum(total.values())
    print(f"{len(rows) - 1} kernels, {s:.1f} us total" + (f", {s / per:.1f} us per unit" if per else ""))
    for name, t in sorted(total.items(), key=lambda kv: -kv[1])[:30]:
        extra = f" {t / per:8.2f} us/unit" if per else ""
        print(f"{t:9.1f} us {count[name]:5d} x {t / count[name]:7.2f} us{extra}  {name}")
    if "--categories" in argv:
        print("by category:")
        for label, t in sorted(by_category.items(), key=lambda kv: -kv[1]):
            extra = f" {t / per:10.1f} us/unit" if per else ""
            print(f"  {label}: {t:.1f} us{extra} {100 * t / s:5.1f}%")


if __name__ == "__main__":
    main(sys.argv)
