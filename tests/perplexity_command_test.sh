#!/usr/bin/env bash
# bitserve perplexity: --json shape, the stored PyTorch value within 1%, --kv-rotation none, and
# clear errors.
set -euo pipefail
BITSERVE=${1:?usage: perplexity_command_test.sh path/to/bitserve}
MODEL=models/shakespeare-dense
INPUT=models/data/shakespeare-valid-excerpt.txt
fail() { echo "FAIL: $*" >&2; exit 1; }

out=$("$BITSERVE" perplexity --model "$MODEL" --input "$INPUT" --context 256 --stride 128 --json)
echo "$out"
[[ "$out" =~ ^\{\"nll\":[0-9.e+-]+,\"ppl\":[0-9.e+-]+,\"tokens\":2734\}$ ]] || fail "unexpected output: $out"
ppl=$(sed -E 's/.*"ppl":([0-9.e+-]+).*/\1/' <<<"$out")
# The transformers value for this excerpt (models/shakespeare-dense/expected_perplexity.json).
want=$(tr -d ' \n' < "$MODEL/expected_perplexity.json" |
       sed -E 's/.*"input":"models\/data\/shakespeare-valid-excerpt.txt"[^}]*"ppl":([0-9.e+-]+).*/\1/')
awk -v a="$ppl" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.01 * b) }' ||
  fail "ppl $ppl is not within 1% of $want"

if "$BITSERVE" perplexity --model "$MODEL" --input "$INPUT" --context 512 2>/tmp/ppl_err.$$; then
  fail "--context beyond max_position_embeddings was accepted"
fi
grep -q "max_position_embeddings" /tmp/ppl_err.$$ || fail "unclear error: $(cat /tmp/ppl_err.$$)"
if "$BITSERVE" perplexity --model "$MODEL" --input "$INPUT" --context 64 --stride 65 2>/tmp/ppl_err.$$; then
  fail "--stride > --context was accepted"
fi
grep -q "stride" /tmp/ppl_err.$$ || fail "unclear error: $(cat /tmp/ppl_err.$$)"
# --kv-rotation: none is the int8 cache as it was before the rotation (66.5256, 2026-12-07); a
# value outside none|hadamard is refused naming the flag.
out=$("$BITSERVE" perplexity --model "$MODEL" --input "$INPUT" --context 256 --stride 128 \
      --kv-dtype int8 --kv-rotation none --json)
ppl=$(sed -E 's/.*"ppl":([0-9.e+-]+).*/\1/' <<<"$out")
awk -v a="$ppl" 'BEGIN { d = a - 66.52561804; if (d < 0) d = -d; exit !(d <= 1e-6) }' ||
  fail "int8 --kv-rotation none: ppl $ppl, expected the unrotated 66.52561804"
if "$BITSERVE" perplexity --model "$MODEL" --input "$INPUT" --kv-dtype int4 --kv-rotation walsh \
    2>/tmp/ppl_err.$$; then
  fail "--kv-rotation walsh was accepted"
fi
grep -q -- "--kv-rotation: KV rotation \"walsh\" is not one of none, hadamard" /tmp/ppl_err.$$ ||
  fail "unclear error: $(cat /tmp/ppl_err.$$)"
rm -f /tmp/ppl_err.$$
echo PASS
