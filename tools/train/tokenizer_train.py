"""Byte-level BPE tokenizer for the trained fixtures, in the LLaMA-3 tokenizer.json structure
that bitserve's tokenizer reads (runtime/text/tokenizer/tokenizer_json.cc): pre_tokenizer
Sequence[Split(LLaMA-3 regex, Isolated), ByteLevel(add_prefix_space=false, use_regex=false)],
ByteLevel decoder, BPE model, special tokens after the BPE vocabulary, a [BOS, $A] template.

--impl hf (the GPU host): Hugging Face `tokenizers` BpeTrainer.
--impl simple: a small pure-Python BPE (approximate pre-tokenization with `re`), only for smoke
tests on machines without `tokenizers`; never used for the committed models.
"""
import argparse
import collections
import json
import os
import re

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>"]
BOS, EOS, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"


def split_corpus(text):
    """Training split: everything before the first blank line at or after 90% of the characters;
    validation: the rest (starting at the next speaker's line)."""
    cut = text.index("\n\n", int(len(text) * 0.9)) + 2
    return text[:cut], text[cut:]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def canonical_json(vocab, merges, ignore_merges):
    """vocab: token -> id (ids 0..n-1), merges: list of (a, b)."""
    n = len(vocab)
    assert sorted(vocab.values()) == list(range(n))
    specials = {tok: n + i for i, tok in enumerate(SPECIAL_TOKENS)}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t, i in specials.items()],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": BOS, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {BOS: {"id": BOS, "ids": [specials[BOS]], "tokens": [BOS]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": bool(ignore_merges), "vocab": vocab,
                  "merges": [[a, b] for a, b in merges]},
    }


def tokenizer_config(specials_start):
    added = {str(specials_start + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                       "single_word": False, "special": True}
             for i, t in enumerate(SPECIAL_TOKENS)}
    return {"added_tokens_decoder": added, "bos_token": BOS, "eos_token": EOT, "add_bos_token": True,
            "add_eos_token": False, "clean_up_tokenization_spaces": False,
            "model_max_length": 1000000, "tokenizer_class": "PreTrainedTokenizerFast",
            "model_input_names": ["input_ids", "attention_mask"]}


def train_hf(text, bpe_vocab_size):
    from tokenizers import Tokenizer, Regex, models, pre_tokenizers, decoders, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator([text], trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges, model.get("ignore_merges", False)


def train_simple(text, bpe_vocab_size):
    """Naive BPE over word counts: fine for a few hundred merges (smoke tests only)."""
    b2u = bytes_to_unicode()
    pat = re.compile(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\w]?[^\W\d_]+|\d{1,3}| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    words = collections.Counter("".join(b2u[b] for b in w.encode()) for w in pat.findall(text))
    vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u))}
    seqs = {w: list(w) for w in words}
    merges = []
    while len(vocab) < bpe_vocab_size:
        pairs = collections.Counter()
        for w, c in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), c = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if c < 2:
            break
        merges.append((a, b))
        vocab[a + b] = len(vocab)
        for w in words:
            s = seqs[w]
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return vocab, merges, False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True, help="directory for tokenizer.json and tokenizer_config.json")
    p.add_argument("--vocab-size", type=int, default=2048, help="total, special tokens included")
    p.add_argument("--impl", choices=["hf", "simple"], default="hf")
    args = p.parse_args()
    text = open(args.corpus, encoding="utf-8").read()
    train, _ = split_corpus(text)
    bpe_size = args.vocab_size - len(SPECIAL_TOKENS)
    vocab, merges, ignore_merges = (train_hf if args.impl == "hf" else train_simple)(train, bpe_size)
    os.makedirs(args.out, exist_ok=True)
    tj = canonical_json(vocab, merges, ignore_merges)
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(len(vocab)), f, indent=2)
    print(f"tokenizer: {len(vocab)} BPE tokens ({len(merges)} merges) + {len(SPECIAL_TOKENS)} special, impl {args.impl}")


if __name__ == "__main__":
    main()
