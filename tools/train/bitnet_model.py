"""BitNet b1.58 decoder (dense or MoE) for quantization-aware training.

Same architecture and numerics as transformers' BitNetForCausalLM (DESIGN.md "Model and
numerics"): RMSNorm -> per-token absmax int8 ActQuant -> ternary q/k/v (absmean scale per matrix)
-> NeoX RoPE -> causal GQA attention -> attn_sub_norm -> ActQuant -> ternary o_proj; RMSNorm ->
ActQuant -> ternary gate/up -> relu(gate)^2 * up -> ffn_sub_norm -> ActQuant -> ternary down; tied
embedding as the LM head. Quantizers use straight-through estimators (the gradient passes as if
the rounding were the identity). The MoE variant replaces the feed-forward block with a bf16
router, softmax, top-k, renormalized weights (Mixtral) and BitNet FFN experts (docs/formats.md).
"""
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelArgs:
    vocab_size: int = 2048
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 6
    num_key_value_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 1024
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    dropout: float = 0.0
    # MoE (num_experts == 0: dense)
    num_experts: int = 0
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True
    router_aux_loss_coef: float = 0.01

    def to_dict(self):
        return asdict(self)


def weight_quant_ste(w):
    """absmean ternary quantization of one matrix: W ~= round(W / s).clamp(-1, 1) * s, s = mean|W|."""
    s = w.abs().mean().clamp(min=1e-5)
    q = (w / s).round().clamp(-1, 1) * s
    return w + (q - w).detach()


def act_quant_ste(x):
    """Per-token absmax int8: s = 127 / max|x|, q = round(x s).clamp(-128, 127) / s (in float32)."""
    xf = x.float()
    s = 127.0 / xf.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    q = (xf * s).round().clamp(-128, 127) / s
    return (xf + (q - xf).detach()).to(x.dtype)


class BitLinear(nn.Linear):
    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features, bias=False)
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x, prequantized=False):
        if not prequantized:
            x = act_quant_ste(x)
        return F.linear(x, weight_quant_ste(self.weight).to(x.dtype))


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * xf).to(x.dtype)


def rope_tables(head_dim, theta, length, device):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    t = torch.arange(length, device=device).float()
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def causal_attention(q, k, v, dropout_p):
    """q: [B, H, T, D], k/v: [B, KV, T, D]."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    t = q.shape[2]
    att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    att = att.masked_fill(~mask, float("-inf")).softmax(-1)
    att = F.dropout(att, dropout_p)
    return att @ v


class Attention(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.a = a
        self.q_proj = BitLinear(a.hidden_size, a.num_attention_heads * a.head_dim)
        self.k_proj = BitLinear(a.hidden_size, a.num_key_value_heads * a.head_dim)
        self.v_proj = BitLinear(a.hidden_size, a.num_key_value_heads * a.head_dim)
        self.attn_sub_norm = RMSNorm(a.num_attention_heads * a.head_dim, a.rms_norm_eps)
        self.o_proj = BitLinear(a.num_attention_heads * a.head_dim, a.hidden_size)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        a = self.a
        xq = act_quant_ste(x)  # shared by q, k, v (identical per-token quantization)
        q = self.q_proj(xq, True).view(b, t, a.num_attention_heads, a.head_dim).transpose(1, 2)
        k = self.k_proj(xq, True).view(b, t, a.num_key_value_heads, a.head_dim).transpose(1, 2)
        v = self.v_proj(xq, True).view(b, t, a.num_key_value_heads, a.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        o = causal_attention(q, k, v, a.dropout if self.training else 0.0)
        o = o.transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(self.attn_sub_norm(o))


class BitFFN(nn.Module):
    """gate/up -> relu(gate)^2 * up -> ffn_sub_norm -> down, all BitLinear."""

    def __init__(self, hidden, inter, eps):
        super().__init__()
        self.gate_proj = BitLinear(hidden, inter)
        self.up_proj = BitLinear(hidden, inter)
        self.ffn_sub_norm = RMSNorm(inter, eps)
        self.down_proj = BitLinear(inter, hidden)

    def forward(self, xq):  # xq: already activation-quantized
        g = self.gate_proj(xq, True)
        u = self.up_proj(xq, True)
        return self.down_proj(self.ffn_sub_norm(F.relu(g).pow(2) * u))


class MoE(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.a = a
        self.gate = nn.Linear(a.hidden_size, a.num_experts, bias=False)  # router, exported bf16
        nn.init.normal_(self.gate.weight, std=0.02)
        self.experts = nn.ModuleList(
            [BitFFN(a.hidden_size, a.moe_intermediate_size, a.rms_norm_eps) for _ in range(a.num_experts)])

    def forward(self, x):
        a = self.a
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        with torch.autocast(x.device.type, enabled=False):  # the router runs in float32
            probs = F.linear(x.float(), self.gate.weight.float()).softmax(-1)  # [N, E]
        top_w, top_i = probs.topk(a.num_experts_per_tok, dim=-1)
        if a.norm_topk_prob:
            top_w = top_w / top_w.sum(-1, keepdim=True)
        xq = act_quant_ste(x)
        out = torch.zeros_like(x, dtype=torch.float32)
        for e, expert in enumerate(self.experts):
            rows, slot = (top_i == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            y = expert(xq[rows]).float() * top_w[rows, slot].unsqueeze(-1)
            out.index_add_(0, rows, y)
        # Switch/Mixtral load-balancing loss: E * sum_e (fraction of assignments to e) * (mean prob of e).
        frac = F.one_hot(top_i, a.num_experts).float().sum(1).mean(0) / a.num_experts_per_tok
        aux = a.num_experts * (frac * probs.mean(0)).sum()
        return out.to(x.dtype).view(shape), aux


class Block(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.a = a
        self.input_layernorm = RMSNorm(a.hidden_size, a.rms_norm_eps)
        self.self_attn = Attention(a)
        self.post_attention_layernorm = RMSNorm(a.hidden_size, a.rms_norm_eps)
        if a.num_experts:
            self.mlp = MoE(a)
        else:
            self.mlp = BitFFN(a.hidden_size, a.intermediate_size, a.rms_norm_eps)
        self.drop = nn.Dropout(a.dropout)

    def forward(self, x, cos, sin):
        x = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin))
        n = self.post_attention_layernorm(x)
        if self.a.num_experts:
            f, aux = self.mlp(n)
        else:
            f, aux = self.mlp(act_quant_ste(n)), x.new_zeros(())
        return x + self.drop(f), aux


class BitNetLM(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.a = a
        self.embed_tokens = nn.Embedding(a.vocab_size, a.hidden_size)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.layers = nn.ModuleList([Block(a) for _ in range(a.num_hidden_layers)])
        self.norm = RMSNorm(a.hidden_size, a.rms_norm_eps)
        self.drop = nn.Dropout(a.dropout)

    def forward(self, ids):
        t = ids.shape[1]
        cos, sin = rope_tables(self.a.head_dim, self.a.rope_theta, t, ids.device)
        x = self.drop(self.embed_tokens(ids))
        aux = x.new_zeros((), dtype=torch.float32)
        for layer in self.layers:
            x, a = layer(x, cos, sin)
            aux = aux + a
        x = self.norm(x)
        logits = F.linear(x, self.embed_tokens.weight.to(x.dtype))  # tied LM head
        return logits, aux / len(self.layers)
