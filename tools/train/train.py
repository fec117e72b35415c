"""Quantization-aware training of a small BitNet b1.58 model (dense or MoE) on Tiny Shakespeare,
then export in the packed Hugging Face format (export.py).

The corpus is split by tokenizer_train.split_corpus (last ~10% held out). Training samples are
random windows of seq_len tokens of [BOS] + encode(train split); a quarter of them start with BOS
(so that both prompts that begin with BOS and mid-text windows are in distribution). Every
--eval-every steps the validation loss (non-overlapping windows) is measured; the weights with
the lowest validation loss are exported (early stopping on the validation split). Training stops
at --time-budget seconds or after --patience evaluations without improvement.
"""
import argparse
import copy
import json
import math
import os
import random
import time

import torch
import torch.nn.functional as F

from bitnet_model import BitNetLM, ModelArgs
from export import export
from text_data import BOS, Encoder, split_corpus

PRESETS = {
    "dense": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2,
                  head_dim=64, intermediate_size=1024),
    "moe": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2,
                head_dim=64, intermediate_size=384, num_experts=8, num_experts_per_tok=2,
                moe_intermediate_size=384, norm_topk_prob=True, router_aux_loss_coef=0.01),
    # smoke tests on a CPU
    "tiny-dense": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=16, intermediate_size=128),
    "tiny-moe": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     head_dim=16, intermediate_size=64, num_experts=4, num_experts_per_tok=2,
                     moe_intermediate_size=64),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", choices=sorted(PRESETS), required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--tokenizer-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--time-budget", type=float, default=300, help="seconds of training")
    p.add_argument("--max-steps", type=int, default=1000000)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    enc = Encoder(os.path.join(args.tokenizer_dir, "tokenizer.json"))
    bos = enc.token_to_id(BOS)
    text = open(args.corpus, encoding="utf-8").read()
    train_text, valid_text = split_corpus(text)
    train_ids = torch.tensor([bos] + enc.encode(train_text), dtype=torch.long)
    valid_ids = torch.tensor([bos] + enc.encode(valid_text), dtype=torch.long)
    vocab = json.load(open(os.path.join(args.tokenizer_dir, "tokenizer.json")))
    vocab_size = len(vocab["model"]["vocab"]) + len(vocab["added_tokens"])
    print(f"tokens: train {len(train_ids)}, valid {len(valid_ids)}, vocab {vocab_size}, encoder {enc.kind}", flush=True)

    margs = ModelArgs(vocab_size=vocab_size, max_position_embeddings=args.seq_len, dropout=args.dropout,
                      **PRESETS[args.preset])
    model = BitNetLM(margs).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.preset}: {n_params / 1e6:.2f}M parameters", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    use_amp = dev.type == "cuda"
    train_dev, valid_dev = train_ids.to(dev), valid_ids.to(dev)
    T = args.seq_len
    nv = (len(valid_ids) - 1) // T
    vx = valid_dev[:nv * T].view(nv, T)
    vy = valid_dev[1:nv * T + 1].view(nv, T)

    def batch():
        starts = torch.randint(0, len(train_ids) - T - 1, (args.batch,), device=dev)
        idx = starts[:, None] + torch.arange(T + 1, device=dev)[None, :]
        seq = train_dev[idx]
        seq[: args.batch // 4, 0] = bos
        return seq[:, :-1], seq[:, 1:]

    @torch.no_grad()
    def evaluate():
        model.eval()
        total = 0.0
        for i in range(0, nv, 32):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                logits, _ = model(vx[i:i + 32])
            total += F.cross_entropy(logits.float().flatten(0, 1), vy[i:i + 32].flatten(), reduction="sum").item()
        model.train()
        return total / (nv * T)

    log, best, best_state, bad_evals = [], float("inf"), None, 0
    start = time.time()
    step, running = 0, []
    while step < args.max_steps:
        elapsed = time.time() - start
        if elapsed > args.time_budget:
            break
        progress = min(1.0, elapsed / args.time_budget)
        lr = args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * progress))
        lr *= min(1.0, (step + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            logits, aux = model(x)
        ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss = ce + margs.router_aux_loss_coef * aux if margs.num_experts else ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running.append(ce.item() if step % 10 == 0 else None)
        step += 1
        if step % args.eval_every == 0:
            vl = evaluate()
            tl = [v for v in running if v is not None]
            running = []
            entry = {"step": step, "seconds": round(time.time() - start, 1), "lr": lr,
                     "train_loss": round(sum(tl) / len(tl), 4), "valid_loss": round(vl, 4),
                     "aux_loss": round(float(aux), 4) if margs.num_experts else None}
            log.append(entry)
            print(json.dumps(entry), flush=True)
            if vl < best:
                best, bad_evals = vl, 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                best_step = step
            else:
                bad_evals += 1
                if bad_evals >= args.patience:
                    print("early stop: validation loss stopped improving", flush=True)
                    break
    if best_state is None:
        best_state, best_step, best = {k: v.detach().cpu() for k, v in model.state_dict().items()}, step, evaluate()
    model.load_state_dict(best_state)
    model.cpu().eval()
    summary = {"preset": args.preset, "model_args": margs.to_dict(), "seed": args.seed, "steps": step,
               "train_seconds": round(time.time() - start, 1), "best_step": best_step,
               "best_valid_loss_bf16_autocast": round(best, 4), "parameters": n_params,
               "train_tokens": len(train_ids), "valid_tokens": len(valid_ids),
               "hyperparameters": {k: getattr(args, k) for k in
                                   ("seq_len", "batch", "lr", "min_lr", "warmup", "weight_decay", "dropout",
                                    "time_budget", "eval_every", "patience")},
               "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
               "torch": torch.__version__, "log": log}
    export(model, args.tokenizer_dir, args.out, extra_files={"training_log.json": summary})
    print(f"exported {args.out}: best step {best_step}, valid loss {best:.4f} (ppl {math.exp(best):.2f})", flush=True)


if __name__ == "__main__":
    main()
