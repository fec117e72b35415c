"""Tokenizing the corpus: Hugging Face `tokenizers` where installed (the GPU host), else a small
pure-Python BPE encoder of the same tokenizer.json (smoke tests only; approximate pre-tokenizer)."""
import json
import re

from tokenizer_train import BOS, bytes_to_unicode, split_corpus  # noqa: F401 (re-exported)


class SimpleEncoder:
    def __init__(self, path):
        tj = json.load(open(path, encoding="utf-8"))
        self.vocab = tj["model"]["vocab"]
        self.ranks = {tuple(m): i for i, m in enumerate(tj["model"]["merges"])}
        self.specials = {t["content"]: t["id"] for t in tj["added_tokens"]}
        self.b2u = bytes_to_unicode()
        self.pat = re.compile(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\w]?[^\W\d_]+|\d{1,3}| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
        self.cache = {}

    def token_to_id(self, t):
        return self.specials.get(t, self.vocab.get(t))

    def _word(self, w):
        s = list(w)
        while len(s) > 1:
            best = min(((self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(s, s[1:]))))
            if best[0] == 1 << 30:
                break
            i = best[1]
            s = s[:i] + [s[i] + s[i + 1]] + s[i + 2:]
        return [self.vocab[x] for x in s]

    def encode(self, text):
        ids = []
        for w in self.pat.findall(text):
            u = "".join(self.b2u[b] for b in w.encode())
            if u not in self.cache:
                self.cache[u] = self._word(u)
            ids += self.cache[u]
        return ids


class Encoder:
    """encode(text) -> ids without special tokens; token_to_id(name)."""

    def __init__(self, tokenizer_json):
        try:
            from tokenizers import Tokenizer
            self.impl = Tokenizer.from_file(tokenizer_json)
            self.kind = "hf"
        except ImportError:
            self.impl = SimpleEncoder(tokenizer_json)
            self.kind = "simple"
        except Exception as e:  # noqa: BLE001 -- say so loudly; training can still go on
            print(f"WARNING: tokenizers could not load {tokenizer_json} ({e}); using the simple encoder")
            self.impl = SimpleEncoder(tokenizer_json)
            self.kind = "simple"

    def encode(self, text):
        if self.kind == "hf":
            return self.impl.encode(text, add_special_tokens=False).ids
        return self.impl.encode(text)

    def token_to_id(self, t):
        return self.impl.token_to_id(t)
