#!/usr/bin/env python3
"""Where do bitserve and transformers first disagree? Compares every activation right before its
int8 quantization, layer by layer, and reports the elements whose int8 rounding differs.

  bitserve logits --model M --tokens IDS --out /tmp/l.npy --trace-dir /tmp/trace
  python3 tests/reference/compare_activations.py M IDS /tmp/trace
"""
import os
import sys

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import numpy as np
import torch
from transformers import BitNetForCausalLM

HOOKS = {"qkv_in": "self_attn.q_proj", "o_in": "self_attn.o_proj",
         "gate_up_in": "mlp.gate_proj", "down_in": "mlp.down_proj"}


def quantize(x):
    # torch evaluates 127 / t as t.reciprocal() * 127
    s = (np.float32(1) / np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(1e-5))) * np.float32(127)
    return np.clip(np.round(x * s), -128, 127), x * s


def main():
    model_dir, ids, trace = sys.argv[1], [int(t) for t in sys.argv[2].split(",")], sys.argv[3]
    model = BitNetForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    captured = {}
    for i, layer in enumerate(model.model.layers):
        for name, path in HOOKS.items():
            module = layer.get_submodule(path)
            module.register_forward_pre_hook(
                lambda m, args, key=(i, name): captured.__setitem__(key, args[0][0].detach().float().numpy()))
    with torch.no_grad():
        model(torch.tensor([ids]))
    for (layer, name), ref in sorted(captured.items()):
        ours = np.load(os.path.join(trace, f"L{layer}_{name}.npy"))
        rel = np.abs(ours - ref).max(axis=-1) / np.abs(ref).max(axis=-1)
        q_ours, xs_ours = quantize(ours)
        q_ref, xs_ref = quantize(ref)
        flips = np.argwhere(q_ours != q_ref)
        print(f"L{layer} {name:10s} max rel diff {rel.max():.2e} (row {rel.argmax()}), "
              f"int8 flips {len(flips)}", end="")
        for row, col in flips[:4]:
            print(f" | row {row} col {col}: ours {xs_ours[row, col]:.7f} ref {xs_ref[row, col]:.7f}", end="")
        print()


if __name__ == "__main__":
    main()
