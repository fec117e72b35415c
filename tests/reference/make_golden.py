#!/usr/bin/env python3
"""Reference logits and greedy tokens for bitserve's golden tests, from Hugging Face transformers.

For every tests/data/golden/NAME/ that holds model/ (a checkpoint written by
`bitserve make-model --preset NAME`) and prompts.json, this loads the checkpoint with
transformers' BitNetForCausalLM in float32 on the CPU (eager attention, no KV cache), generates
greedily by recomputing the whole sequence at every step, and writes
  NAME/logits_K.npy     float32 [prompt + new tokens, vocab]: logits of the final sequence K
  NAME/activations_K.npy float32 [prompt + new tokens, sum of widths]: per layer, the inputs of
                        q_proj, o_proj, gate_proj and down_proj (each right before its int8
                        quantization), concatenated in that order. The golden test uses them to
                        tell a rounding tie (x * s within float noise of k + 1/2, which any two
                        float32 implementations may round apart) from a real disagreement.
  NAME/reference.json   generated ids, top-1 margins and the library versions used.
Run it where transformers has BitNet (>= 4.52), e.g. on the GPU host:
  python3 tests/reference/make_golden.py tests/data/golden [NAME...]
The rope-* cases are test-gqa's weights (symlinked) under a config.json with rope_scaling: they
check RoPE scaling as transformers computes it. rope-dynamic's sequences are exactly
max_position_embeddings x factor long and generate nothing: transformers rescales dynamic RoPE with
the current length, bitserve (like vLLM) for that fixed length.
"""
import json
import os
import sys

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # transformers' BitNet helpers use torch.compile

import numpy as np
import torch
import transformers
from transformers import BitNetForCausalLM


QUANTIZED_INPUTS = ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"]


def run(case_dir):
    model_dir = os.path.join(case_dir, "model")
    prompts = json.load(open(os.path.join(case_dir, "prompts.json")))["sequences"]
    model, info = BitNetForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    model.eval()
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"{model_dir}: transformers did not load the checkpoint cleanly: {bad}")
    # transformers' BitLinear (linear_class "bitlinear") computes in the dtype it was built with,
    # which follows config.json's torch_dtype (bfloat16), not from_pretrained's dtype. The
    # reference semantics are float32 throughout, so switch those modules to float32.
    built_with = set()
    for module in model.modules():
        if type(module).__name__ == "BitLinear":
            built_with.add(str(module.dtype))
            module.dtype = torch.float32
            module.weight_scale.data = module.weight_scale.data.float()
    if built_with:
        print(f"{case_dir}: BitLinear modules were built with {sorted(built_with)}; using float32")
    layer = model.model.layers[0].self_attn.q_proj
    w = layer.weight.detach()
    print(f"{case_dir}: q_proj {type(layer).__name__} {tuple(w.shape)} values {sorted(set(w.flatten().tolist()))}"
          f" weight_scale {float(layer.weight_scale)} ({layer.weight_scale.dtype})", flush=True)
    captured = {}
    for i, layer in enumerate(model.model.layers):
        for j, path in enumerate(QUANTIZED_INPUTS):
            layer.get_submodule(path).register_forward_pre_hook(
                lambda m, args, key=(i, j): captured.__setitem__(key, args[0][0].detach().float().numpy()))
    out = {"transformers": transformers.__version__, "torch": torch.__version__, "sequences": []}
    rope = getattr(model.config, "rope_scaling", None) or getattr(model.config, "rope_parameters", None)
    if rope:
        emb = model.model.rotary_emb
        out["rope"] = {"config": rope, "rope_type": getattr(emb, "rope_type", None),
                       "attention_scaling": float(getattr(emb, "attention_scaling", 1.0))}
        print(f"{case_dir}: RoPE {out['rope']}", flush=True)
    for k, seq in enumerate(prompts):
        ids = list(seq["prompt_ids"])
        margins = []
        with torch.no_grad():
            for _ in range(seq["new_tokens"]):
                logits = model(torch.tensor([ids])).logits[0, -1]
                top = torch.topk(logits, 2).values
                margins.append(float(top[0] - top[1]))
                ids.append(int(torch.argmax(logits)))
            captured.clear()
            full = model(torch.tensor([ids])).logits[0].float().numpy()
        np.save(os.path.join(case_dir, f"logits_{k}.npy"), full.astype(np.float32))
        acts = np.concatenate([captured[key] for key in sorted(captured)], axis=1)
        np.save(os.path.join(case_dir, f"activations_{k}.npy"), acts.astype(np.float32))
        margin = min(margins) if margins else None
        out["sequences"].append({"prompt_ids": seq["prompt_ids"],
                                 "generated_ids": ids[len(seq["prompt_ids"]):],
                                 "min_greedy_margin": margin})
        print(f"  sequence {k}: {len(ids)} tokens, generated {ids[len(seq['prompt_ids']):]}, "
              f"min top-1 margin {margin}", flush=True)
    json.dump(out, open(os.path.join(case_dir, "reference.json"), "w"), indent=1)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "tests/data/golden"
    only = set(sys.argv[2:])
    torch.manual_seed(0)
    for name in sorted(os.listdir(root)):
        if only and name not in only:
            continue
        case = os.path.join(root, name)
        if os.path.isdir(os.path.join(case, "model")):
            run(case)


if __name__ == "__main__":
    main()
