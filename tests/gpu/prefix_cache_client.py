#!/usr/bin/env python3
"""Test driver of tests/gpu/prefix_cache_gpu_test.sh (not part of bitserve): talks to the
OpenAI-compatible HTTP API of a running `bitserve serve`.

  prefix_cache_client.py same BASE_URL OUT.json   requests sharing a document, greedy; writes
                                                  their tokens (from logprobs) to OUT.json
  prefix_cache_client.py ttft BASE_URL TOKENS     time to first token of a TOKENS-token document,
                                                  then of the same document + 8 tokens
"""
import json
import random
import sys
import threading
import time
import urllib.request


def complete(base, prompt, max_tokens):
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "logprobs": 0, "ignore_eos": True}).encode()
    req = urllib.request.Request(base + "/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.load(r)
    return out["choices"][0]["logprobs"]["tokens"], out["usage"]


def same(base, out_path):
    rng = random.Random(7)
    doc = [rng.randrange(10, 250) for _ in range(150)]
    prompts = [doc + [rng.randrange(10, 250) for _ in range(1 + i % 7)] for i in range(12)]
    results = [None] * len(prompts)
    results[0] = complete(base, prompts[0], 24)[0]
    results[1] = complete(base, prompts[1], 24)[0]

    def run(i):
        results[i] = complete(base, prompts[i], 24)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2, len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump(results, open(out_path, "w"))


def ttft(base, tokens):
    rng = random.Random(tokens)
    doc = [rng.randrange(1000, 100000) for _ in range(tokens)]
    t0 = time.perf_counter()
    complete(base, doc, 1)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    complete(base, doc + [rng.randrange(1000, 100000) for _ in range(8)], 1)
    second = time.perf_counter() - t0
    print(f"ttft {tokens} tokens: first {first * 1000:.1f} ms, same document again "
          f"{second * 1000:.1f} ms ({first / second:.1f}x)")


if __name__ == "__main__":
    if sys.argv[1] == "same":
        same(sys.argv[2], sys.argv[3])
    else:
        ttft(sys.argv[2], int(sys.argv[3]))
