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
"$build/tools/bitserve" generate --model "$model" --prompt-ids 128000,791,4320,315 --max-tokens 16 \
  --ignore-eos
