#!/usr/bin/env bash
# `make run`: generate a small BitNet checkpoint (the `tiny` preset: 2 layers, the real LLaMA-3
# vocabulary and tokenizer files) and run the CPU engine on it.
set -euo pipefail
build=${1:-build}
model=$build/demo/tiny
if [[ ! -f $model/model.safetensors ]]; then
  "$build/tools/bitserve" make-model --preset tiny --out "$model" --seed 0
fi
echo "== bitserve generate (greedy, CPU) on $model"
"$build/tools/bitserve" generate --model "$model" --chat "Tell me about ternary weights." \
  --max-tokens 24 --ignore-eos --temperature 0.8 --top-p 0.95 --seed 1
echo "(random weights: the text is gibberish by construction; it shows the whole path:"
echo " chat template, tokenizer, CPU engine, sampling, streaming detokenization)"
