"""Writes a trained BitNetLM as a packed Hugging Face BitNet checkpoint (dense: exactly what
transformers' BitNetForCausalLM loads; MoE: bitserve's format, docs/formats.md)."""
import json
import os
import shutil

import numpy as np
import torch

from checkpoint_io import bf16_bits, pack_ternary, write_safetensors
from tokenizer_train import BOS, EOS, EOT


def ternary(w):
    s = w.detach().float().abs().mean().clamp(min=1e-5)
    t = (w.detach().float() / s).round().clamp(-1, 1).to(torch.int8)
    return t, s


def config_json(a, bos, eos):
    c = {
        "architectures": ["BitNetMoeForCausalLM" if a.num_experts else "BitNetForCausalLM"],
        "model_type": "bitnet_moe" if a.num_experts else "bitnet",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "hidden_act": "relu2",
        "hidden_size": a.hidden_size,
        "intermediate_size": a.moe_intermediate_size if a.num_experts else a.intermediate_size,
        "num_hidden_layers": a.num_hidden_layers,
        "num_attention_heads": a.num_attention_heads,
        "num_key_value_heads": a.num_key_value_heads,
        "head_dim": a.head_dim,
        "vocab_size": a.vocab_size,
        "max_position_embeddings": a.max_position_embeddings,
        "rope_theta": a.rope_theta,
        "rms_norm_eps": a.rms_norm_eps,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                "quantization_mode": "offline"},
    }
    if a.num_experts:
        c.update({"num_experts": a.num_experts, "num_experts_per_tok": a.num_experts_per_tok,
                  "moe_intermediate_size": a.moe_intermediate_size, "norm_topk_prob": a.norm_topk_prob,
                  "shared_expert_intermediate_size": 0, "router_aux_loss_coef": a.router_aux_loss_coef})
    return c


def export(model, tokenizer_dir, out_dir, extra_files=None):
    a = model.a
    os.makedirs(out_dir, exist_ok=True)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tensors = [("model.embed_tokens.weight", "BF16", bf16_bits(sd["embed_tokens.weight"]))]

    def norm(name):
        tensors.append((name, "BF16", bf16_bits(sd[name[len("model."):]])))

    def bitlinear(prefix):
        t, s = ternary(sd[prefix[len("model."):] + ".weight"])
        tensors.append((prefix + ".weight", "U8", pack_ternary(t).numpy()))
        tensors.append((prefix + ".weight_scale", "BF16", bf16_bits(s.reshape(1))))

    for i in range(a.num_hidden_layers):
        p = f"model.layers.{i}."
        norm(p + "input_layernorm.weight")
        for m in ("q_proj", "k_proj", "v_proj"):
            bitlinear(p + "self_attn." + m)
        norm(p + "self_attn.attn_sub_norm.weight")
        bitlinear(p + "self_attn.o_proj")
        norm(p + "post_attention_layernorm.weight")
        if a.num_experts:
            tensors.append((p + "mlp.gate.weight", "BF16", bf16_bits(sd[f"layers.{i}.mlp.gate.weight"])))
            for e in range(a.num_experts):
                q = p + f"mlp.experts.{e}."
                bitlinear(q + "gate_proj")
                bitlinear(q + "up_proj")
                norm(q + "ffn_sub_norm.weight")
                bitlinear(q + "down_proj")
        else:
            bitlinear(p + "mlp.gate_proj")
            bitlinear(p + "mlp.up_proj")
            norm(p + "mlp.ffn_sub_norm.weight")
            bitlinear(p + "mlp.down_proj")
    norm("model.norm.weight")
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)

    tj = json.load(open(os.path.join(tokenizer_dir, "tokenizer.json"), encoding="utf-8"))
    ids = {t["content"]: t["id"] for t in tj["added_tokens"]}
    bos, eos = ids[BOS], [ids[EOS], ids[EOT]]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config_json(a, bos, eos), f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos, "do_sample": False}, f, indent=2)
        f.write("\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))
    for name, obj in (extra_files or {}).items():
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
