"""Independent PyTorch forward of an exported checkpoint (read from its files, float32, the
numerics of transformers' BitNetForCausalLM with AutoBitLinear) and the strided perplexity that
`bitserve perplexity` computes. For dense checkpoints it can also run transformers itself.

Strided perplexity (Hugging Face's "perplexity of fixed-length models", with exact token counts):
  ids = [BOS] + encode(text)                                  N = len(ids)
  windows start at b = 0, S, 2S, ... and cover [b, min(b + C, N)); stop after the one reaching N
  a window scores the positions p in [max(prev_end, b + 1), end), p predicted from ids[b:p]
  nll = sum of -log softmax(logits)[ids[p]] over scored p / their count; ppl = exp(nll)
With S < C every text token is scored exactly once (count = N - 1), with between C - S and C - 1
tokens of context (fewer in the first window). With S == C the first token of each later window
has no context inside its window and is not scored (as in Hugging Face's recipe).
"""
import argparse
import json
import math
import os

import torch
import torch.nn.functional as F

from checkpoint_io import bits_to_float, read_safetensors, unpack_ternary


class ReferenceModel:
    def __init__(self, model_dir, device="cpu"):
        self.c = json.load(open(os.path.join(model_dir, "config.json")))
        qc = self.c["quantization_config"]
        assert qc["linear_class"] == "autobitlinear" and qc["quantization_mode"] == "offline"
        self.device = device
        self.t = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.moe = self.c.get("model_type") == "bitnet_moe"

    def f(self, name):
        return bits_to_float(self.t[name]).to(self.device)

    def ternary(self, prefix):
        w = unpack_ternary(torch.from_numpy(self.t[prefix + ".weight"].copy())).float().to(self.device)
        return w, self.f(prefix + ".weight_scale")

    @staticmethod
    def act_quant(x):
        scale = 127 / x.abs().max(dim=-1, keepdim=True).values.clamp_(min=1e-5)
        return (x * scale).round().clamp(-128, 127) / scale

    def linear(self, x, prefix):
        w, s = self.ternary(prefix)
        return F.linear(self.act_quant(x), w) * s

    def rms(self, x, name):
        eps = self.c["rms_norm_eps"]
        var = x.pow(2).mean(-1, keepdim=True)
        return self.f(name) * (x * torch.rsqrt(var + eps))

    def ffn(self, n, p):
        g, u = self.linear(n, p + "gate_proj"), self.linear(n, p + "up_proj")
        return self.linear(self.rms(F.relu(g).square() * u, p + "ffn_sub_norm.weight"), p + "down_proj")

    def moe_ffn(self, n, p):
        c = self.c
        shape = n.shape
        x = n.reshape(-1, shape[-1])
        probs = F.softmax(F.linear(x, self.f(p + "gate.weight")), dim=-1, dtype=torch.float32)
        top_w, top_i = torch.topk(probs, c["num_experts_per_tok"], dim=-1)
        if c.get("norm_topk_prob", True):
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        ys = torch.zeros(x.shape[0], top_i.shape[1], x.shape[1], device=x.device)
        for e in range(c["num_experts"]):
            rows, slot = (top_i == e).nonzero(as_tuple=True)
            if rows.numel():
                ys[rows, slot] = self.ffn(x[rows], p + f"experts.{e}.")
        out = top_w[:, 0:1] * ys[:, 0]
        for k in range(1, top_i.shape[1]):
            out = out + top_w[:, k:k + 1] * ys[:, k]
        if c.get("shared_expert_intermediate_size", 0):
            gate = torch.sigmoid(F.linear(x, self.f(p + "shared_expert_gate.weight")))
            out = out + gate * self.ffn(x, p + "shared_expert.")
        return out.view(shape)

    @torch.no_grad()
    def logits(self, ids):
        """ids: LongTensor [B, T] -> float32 logits [B, T, V]."""
        c = self.c
        ids = ids.to(self.device)
        b, t = ids.shape
        h, nh, kvh, hd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        emb = self.f("model.embed_tokens.weight")
        x = emb[ids]
        inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64, device=self.device).float() / hd))
        pos = torch.arange(t, device=self.device).float()
        freqs = (inv_freq[:, None] @ pos[None, :]).T
        e = torch.cat((freqs, freqs), dim=-1)
        cos, sin = e.cos(), e.sin()

        def rot(v):
            v1, v2 = v[..., :hd // 2], v[..., hd // 2:]
            return v * cos + torch.cat((-v2, v1), dim=-1) * sin

        mask = torch.full((t, t), float("-inf"), device=self.device).triu(1)
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            a = self.rms(x, p + "input_layernorm.weight")
            q = self.linear(a, p + "self_attn.q_proj").view(b, t, nh, hd).transpose(1, 2)
            k = self.linear(a, p + "self_attn.k_proj").view(b, t, kvh, hd).transpose(1, 2)
            v = self.linear(a, p + "self_attn.v_proj").view(b, t, kvh, hd).transpose(1, 2)
            q, k = rot(q), rot(k)
            k = k.repeat_interleave(nh // kvh, dim=1)
            v = v.repeat_interleave(nh // kvh, dim=1)
            att = torch.matmul(q, k.transpose(2, 3)) * hd ** -0.5 + mask
            att = F.softmax(att, dim=-1, dtype=torch.float32)
            o = torch.matmul(att, v).transpose(1, 2).reshape(b, t, nh * hd)
            o = self.rms(o, p + "self_attn.attn_sub_norm.weight")
            x = x + self.linear(o, p + "self_attn.o_proj")
            n = self.rms(x, p + "post_attention_layernorm.weight")
            x = x + (self.moe_ffn(n, p + "mlp.") if self.moe else self.ffn(n, p + "mlp."))
        x = self.rms(x, "model.norm.weight")
        return F.linear(x, emb)


def windows(n, context, stride):
    """[(begin, end, first_scored)] as defined in the module docstring."""
    assert 1 <= stride <= context and n >= 2
    out, prev_end, begin = [], 0, 0
    while True:
        end = min(begin + context, n)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            return out
        begin += stride


def strided_perplexity(ids, context, stride, logits_fn, batch=32):
    """ids: list of token ids (BOS first). logits_fn(LongTensor [B, T]) -> [B, T, V]."""
    ws = windows(len(ids), context, stride)
    nll, count = 0.0, 0
    for j in range(0, len(ws), batch):
        group = ws[j:j + batch]
        by_len = {}
        for w in group:
            by_len.setdefault(w[1] - w[0], []).append(w)
        for length, ws_len in by_len.items():
            x = torch.tensor([ids[b:e] for b, e, _ in ws_len])
            logp = F.log_softmax(logits_fn(x).float(), dim=-1).cpu().double()
            for row, (b, e, first) in enumerate(ws_len):
                pos = torch.arange(first, e)
                tgt = torch.tensor(ids[first:e])
                nll -= float(logp[row, pos - 1 - b, tgt].sum())
                count += e - first
    return {"tokens": count, "nll": nll / count, "ppl": math.exp(nll / count)}


def transformers_logits_fn(model_dir, device):
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    from transformers import BitNetForCausalLM
    model, info = BitNetForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager",
                                                    output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"{model_dir}: transformers did not load the checkpoint cleanly: {bad}")
    model.to(device).eval()

    @torch.no_grad()
    def fn(x):
        return model(x.to(device), use_cache=False).logits
    return fn


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--input", action="append", required=True, help="text file(s), repo-relative paths recorded")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--stride", type=int, default=128)
    p.add_argument("--transformers", action="store_true", help="dense only: also evaluate with transformers")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="write expected_perplexity.json here")
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from text_data import Encoder
    enc = Encoder(os.path.join(args.model, "tokenizer.json"))
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    ref = ReferenceModel(args.model, args.device)
    tf, tf_error = None, None
    if args.transformers:
        try:
            tf = transformers_logits_fn(args.model, args.device)
        except BaseException as e:  # recorded, and the own reference still runs
            tf_error = f"{type(e).__name__}: {e}"
            print("transformers failed:", tf_error, flush=True)
    results = []
    for path in args.input:
        text = open(path, encoding="utf-8").read()
        ids = [cfg["bos_token_id"]] + enc.encode(text)
        r = strided_perplexity(ids, args.context, args.stride, ref.logits)
        entry = {"input": path, "context": args.context, "stride": args.stride, "tokens": r["tokens"]}
        if tf is not None:
            t = strided_perplexity(ids, args.context, args.stride, tf)
            entry.update({"nll": t["nll"], "ppl": t["ppl"], "source": "transformers BitNetForCausalLM",
                          "own_reference_nll": r["nll"], "own_reference_ppl": r["ppl"]})
        else:
            entry.update({"nll": r["nll"], "ppl": r["ppl"], "source": "tools/train/reference.py"})
            if tf_error:
                entry["transformers_error"] = tf_error
        print(json.dumps(entry), flush=True)
        results.append(entry)
    if args.out:
        versions = {"torch": torch.__version__}
        try:
            import transformers
            versions["transformers"] = transformers.__version__
        except ImportError:
            pass
        try:
            import tokenizers
            versions["tokenizers"] = tokenizers.__version__
        except ImportError:
            pass
        doc = {"definition": "strided perplexity, tools/train/reference.py docstring; ids = [BOS] + encode(text)",
               "device": str(torch.cuda.get_device_name(0)) if args.device.startswith("cuda") else "cpu",
               "dtype": "float32 (TF32 off)", "versions": versions, "results": results}
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
