#!/usr/bin/env bash
# End-to-end checks of the `bitserve` command line: make-model, logits, generate, and their errors.
# Usage: cli_test.sh PATH/TO/bitserve
set -euo pipefail
bitserve=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_error() {  # expect_error SUBSTRING COMMAND...
  local want=$1; shift
  if out=$("$@" 2>&1); then fail "succeeded: $*"; fi
  [[ $out == *"$want"* ]] || fail "error of '$*' lacks '$want': $out"
}

"$bitserve" make-model --list | grep -q '^bitnet-2b4t' || fail "make-model --list"
for preset in qwen3-30b-a3b qwen3-235b-a22b mixtral-8x7b test-moe; do
  "$bitserve" make-model --list | grep -q "^$preset"$'\t' || fail "make-model --list lacks $preset"
done
# --config-only: the shapes without weights, for --load-format dummy (GPU only: refused on cpu).
"$bitserve" make-model --preset qwen3-235b-a22b --out "$work/dummy" --config-only --no-tokenizer 2>/dev/null
grep -q '"num_experts": 128' "$work/dummy/config.json" || fail "config-only: no MoE config"
! ls "$work/dummy"/*.safetensors >/dev/null 2>&1 || fail "config-only wrote weights"
expect_error "use --device cuda" "$bitserve" generate --model "$work/dummy" --load-format dummy --prompt-ids 1,2
expect_error "--load-format: load format \"x\"" "$bitserve" generate --model "$work/dummy" --load-format x --prompt-ids 1,2
# Workers make their own shard's random weights: CPU workers refuse, and serve says why.
expect_error "use --device cuda" "$bitserve" serve --model "$work/dummy" --load-format dummy --pipeline-stages 2 --listen 127.0.0.1:0
"$bitserve" make-model --preset test-gqa --out "$work/one" --seed 3 2>/dev/null
"$bitserve" make-model --preset test-gqa --out "$work/sharded" --seed 3 --max-shard-size 150000 2>/dev/null
ls "$work/sharded"/model-00001-of-*.safetensors >/dev/null || fail "no shards written"
[[ -f $work/sharded/model.safetensors.index.json ]] || fail "no shard index"
"$bitserve" make-model --preset test-gqa --layers 1 --out "$work/one-layer" 2>/dev/null
grep -q '"num_hidden_layers": 1,' "$work/one-layer/config.json" || fail "make-model --layers 1"
"$bitserve" generate --model "$work/one-layer" --prompt-ids 5,6 --max-tokens 2 >/dev/null ||
  fail "generate on make-model --layers 1"
expect_error "--layers must be >= 1" "$bitserve" make-model --preset test-gqa --layers 0 --out "$work/x"

# Same weights sharded or not: same greedy tokens.
a=$("$bitserve" generate --model "$work/one" --prompt-ids 5,6,7 --max-tokens 6 --ignore-eos --json)
b=$("$bitserve" generate --model "$work/sharded" --prompt-ids 5,6,7 --max-tokens 6 --ignore-eos --json)
[[ $a == "$b" ]] || fail "sharded checkpoint generates differently: $a vs $b"
python3 - "$a" <<'PY' || fail "generate --json fields: $a"
import json, sys
r = json.loads(sys.argv[1])
assert set(r) == {"token_ids", "text", "finish_reason", "prompt_tokens", "completion_tokens"}, r
assert len(r["token_ids"]) == 6 and r["completion_tokens"] == 6 and r["prompt_tokens"] == 3, r
assert r["finish_reason"] == "length", r
assert all(0 <= t < 1024 for t in r["token_ids"]), r
PY

# logits: float32 [tokens, vocab] in .npy, the last row's argmax is the first greedy token.
"$bitserve" logits --model "$work/one" --tokens 5,6,7 --out "$work/l.npy"
python3 - "$work/l.npy" "$a" <<'PY' || fail "logits .npy"
import json, struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:6] == b"\x93NUMPY", "magic"
hlen = struct.unpack("<H", data[8:10])[0]
header = data[10:10 + hlen].decode()
assert "'<f4'" in header and "(3, 1024)" in header, header
vals = struct.unpack("<%df" % (3 * 1024), data[10 + hlen:])
last = vals[2 * 1024:]
assert max(range(1024), key=lambda i: last[i]) == json.loads(sys.argv[2])["token_ids"][0]
PY

# Streaming output: token ids as they come, then the finish reason.
"$bitserve" generate --model "$work/one" --prompt-ids 5,6,7 --max-tokens 3 --ignore-eos | grep -q '\[length\]' \
  || fail "streaming generate"

expect_error "unknown preset" "$bitserve" make-model --preset nope --out "$work/x"
expect_error "--tokens" "$bitserve" logits --model "$work/one" --tokens 1,x --out "$work/x.npy"
expect_error "outside the vocabulary" "$bitserve" logits --model "$work/one" --tokens 1,5000 --out "$work/x.npy"
expect_error "does not exist" "$bitserve" generate --model "$work/none" --prompt-ids 1
expect_error "temperature" "$bitserve" generate --model "$work/one" --prompt-ids 1 --temperature -1
expect_error "no tokenizer.json" "$bitserve" generate --model "$work/one" --prompt "hi"
expect_error "--pipeline-stages must be >= 1" "$bitserve" generate --model "$work/one" --prompt-ids 1 --pipeline-stages 0
expect_error "pipeline stages must be in" "$bitserve" generate --model "$work/one" --prompt-ids 1 --pipeline-stages 99
expect_error "int8 or bf16" "$bitserve" generate --model "$work/one" --prompt-ids 1 --pipeline-stages 2 --pp-transfer fp8
expect_error "auto, nccl or tcp" "$bitserve" serve --model "$work/one" --listen 127.0.0.1:0 --pipeline-stages 2 --pp-transport ib
expect_error "needs --pipeline-stages of 2 or more" "$bitserve" serve --model "$work/one" --listen 127.0.0.1:0 --pipeline-split 1,1
expect_error "summing to the model's" "$bitserve" serve --model "$work/one" --listen 127.0.0.1:0 --pipeline-stages 2 --pipeline-split 1,99
expect_error "--pipeline-split: pipeline split \"1;1\" is not a comma-separated" "$bitserve" serve --model "$work/one" --listen 127.0.0.1:0 --pipeline-stages 2 --pipeline-split "1;1"
expect_error "--pipeline-split 1,1 needs --pipeline-stages of 2 or more" "$bitserve" generate --model "$work/one" --prompt-ids 1 --pipeline-split 1,1
expect_error "--lm-head-dtype: LM head dtype \"fp8\" is not one of bf16, int8" "$bitserve" generate --model "$work/one" --prompt-ids 1 --lm-head-dtype fp8
# A local stage worker that cannot start (no such GPU here) fails serve, naming it, instead of
# leaving it waiting for a pipeline that will never form.
expect_error "(cuda:77) ended (exit status 1) before the pipeline was ready" timeout 60 "$bitserve" serve --model "$work/one" \
  --listen 127.0.0.1:0 --pipeline-stages 2 --device cuda:77

# Sampling: the same seed reproduces the output, another seed (almost surely) does not.
s1=$("$bitserve" generate --model "$work/one" --prompt-ids 5 --max-tokens 12 --ignore-eos --temperature 1 --seed 7 --json 2>/dev/null)
s2=$("$bitserve" generate --model "$work/one" --prompt-ids 5 --max-tokens 12 --ignore-eos --temperature 1 --seed 7 --json 2>/dev/null)
s3=$("$bitserve" generate --model "$work/one" --prompt-ids 5 --max-tokens 12 --ignore-eos --temperature 1 --seed 8 --json 2>/dev/null)
[[ $s1 == "$s2" ]] || fail "same seed, different output"
[[ $s1 != "$s3" ]] || fail "different seeds, same output"

# Text in and out on a model with the LLaMA-3 tokenizer.
"$bitserve" make-model --preset tiny --out "$work/tiny" 2>/dev/null
t=$("$bitserve" generate --model "$work/tiny" --chat "hello" --max-tokens 5 --ignore-eos --json 2>/dev/null)
python3 - "$t" <<'PY' || fail "chat generate: $t"
import json, sys
r = json.loads(sys.argv[1])
assert r["prompt_tokens"] == 9 and len(r["token_ids"]) == 5 and isinstance(r["text"], str), r
PY
"$bitserve" generate --model "$work/tiny" --prompt "The capital of France is" --max-tokens 4 --ignore-eos \
  | grep -q '\[length\]' || fail "text streaming"
expect_error "device \"tpu\"" "$bitserve" generate --model "$work/one" --prompt-ids 1 --device tpu
cp -r "$work/one" "$work/broken"
truncate -s 2000 "$work/broken/model.safetensors"
expect_error "model.safetensors" "$bitserve" generate --model "$work/broken" --prompt-ids 1
echo "cli_test: all checks passed"
