#!/usr/bin/env bash
# The whole fixture pipeline on one GPU host (PyTorch, transformers, tokenizers installed):
# tokenizer, both models trained concurrently, export, PyTorch reference perplexities.
#   tools/train/run_gpu.sh OUTDIR        (from the repository root)
# CORPUS defaults to .traindata/tinyshakespeare-train.txt (a copy of
# ../shared/testdata/tinyshakespeare-train.txt); TIME_BUDGET is seconds of training per model.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCHDYNAMO_DISABLE=1
CORPUS=${CORPUS:-.traindata/tinyshakespeare-train.txt}
OUTDIR=${1:?usage: run_gpu.sh OUTDIR}
T=${TIME_BUDGET:-240}
SEED=${SEED:-1234}
VALID=models/data/shakespeare-valid.txt
EXCERPT=models/data/shakespeare-valid-excerpt.txt
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c 'import torch, transformers, tokenizers; print("torch", torch.__version__, "transformers", transformers.__version__, "tokenizers", tokenizers.__version__)'
python3 tools/train/tokenizer_train.py --corpus "$CORPUS" --out "$OUTDIR/tokenizer" --vocab-size 2048 --impl hf || exit 1
for kind in dense moe; do
  python3 tools/train/train.py --preset $kind --corpus "$CORPUS" --tokenizer-dir "$OUTDIR/tokenizer" \
    --out "$OUTDIR/shakespeare-$kind" --seed $SEED --time-budget $T > "$OUTDIR/train-$kind.log" 2>&1 &
  eval "pid_$kind=$!"
done
wait $pid_dense; echo "dense training exit $?"
wait $pid_moe; echo "moe training exit $?"
tail -n 4 "$OUTDIR"/train-*.log
python3 tools/train/reference.py --model "$OUTDIR/shakespeare-dense" --input $VALID --input $EXCERPT \
  --context 256 --stride 128 --transformers --out "$OUTDIR/shakespeare-dense/expected_perplexity.json" \
  2>&1 | tail -n 5
python3 tools/train/reference.py --model "$OUTDIR/shakespeare-moe" --input $VALID --input $EXCERPT \
  --context 256 --stride 128 --out "$OUTDIR/shakespeare-moe/expected_perplexity.json" 2>&1 | tail -n 5
