#!/usr/bin/env bash
# End to end: `bitserve batch --model` on a tiny generated model. Results equal `bitserve generate`
# (greedy and seeded), malformed lines are reported and do not stop the job, a second run skips
# everything, a torn last line is cut away, a deleted result is redone, and the exit status is 1
# only when the job cannot run.
# Usage: batch_command_test.sh PATH/TO/bitserve
set -euo pipefail
bitserve=$1
python=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_error() {  # expect_error SUBSTRING COMMAND...
  local want=$1; shift
  if out=$("$@" 2>&1); then fail "succeeded: $*"; fi
  [[ $out == *"$want"* ]] || fail "error of '$*' lacks '$want': $out"
}

"$bitserve" make-model --preset tiny --out "$work/tiny" 2>/dev/null
in=$work/in.jsonl
out=$work/out.jsonl
cat > "$in" <<'EOF'
{"id": "text", "prompt": "The capital of France is", "max_tokens": 5, "ignore_eos": true}
{"id": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, "ignore_eos": true}
{"id": 3, "prompt_ids": [5, 6, 7], "max_tokens": 6, "ignore_eos": true}
{"id": "sampled", "prompt_ids": [5], "max_tokens": 12, "ignore_eos": true, "temperature": 1, "seed": 7}
{"id": "lp", "prompt_ids": [5, 6], "max_tokens": 3, "ignore_eos": true, "logprobs": 2}
{"id": "bad", "prompt": 5}
not json
{"id": 3, "prompt_ids": [1]}
EOF
# Enough requests of different lengths to fill batches and finish out of order.
for i in $(seq 0 39); do
  echo "{\"id\": \"n$i\", \"prompt_ids\": [$((i % 7 + 1)), 9, $((i + 10))], \"max_tokens\": $((i % 5 + 1)), \"ignore_eos\": true}" >> "$in"
done

"$bitserve" batch --model "$work/tiny" --input "$in" --output "$out" 2> "$work/err1" \
  || fail "batch run 1: $(cat "$work/err1")"
grep -q "in.jsonl:6: \"prompt\": expected a string" "$work/err1" || fail "line 6 not reported: $(cat "$work/err1")"
grep -q "in.jsonl:7: not valid JSON" "$work/err1" || fail "line 7 not reported"
grep -q "in.jsonl:8: duplicate id 3" "$work/err1" || fail "line 8 not reported"
grep -q "bitserve batch: 48 lines: 45 done" "$work/err1" || fail "summary: $(tail -1 "$work/err1")"

g_text=$("$bitserve" generate --model "$work/tiny" --prompt "The capital of France is" --max-tokens 5 --ignore-eos --json 2>/dev/null)
g_chat=$("$bitserve" generate --model "$work/tiny" --chat "hello" --max-tokens 5 --ignore-eos --json 2>/dev/null)
g_ids=$("$bitserve" generate --model "$work/tiny" --prompt-ids 5,6,7 --max-tokens 6 --ignore-eos --json 2>/dev/null)
g_sampled=$("$bitserve" generate --model "$work/tiny" --prompt-ids 5 --max-tokens 12 --ignore-eos --temperature 1 --seed 7 --json 2>/dev/null)
g_n7=$("$bitserve" generate --model "$work/tiny" --prompt-ids 1,9,17 --max-tokens 3 --ignore-eos --json 2>/dev/null)
$python - "$out" "$g_text" "$g_chat" "$g_ids" "$g_sampled" "$g_n7" <<'PY' || fail "results of run 1"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
records = [json.loads(l) for l in lines]
by_id = {}
for r in records:
    key = json.dumps(r["id"])
    assert key not in by_id, ("two records", r)
    by_id[key] = r
assert len(records) == 46, len(records)
def same(batch_id, generated):
    r, g = by_id[json.dumps(batch_id)], json.loads(generated)
    assert r["token_ids"] == g["token_ids"], (batch_id, r, g)
    assert r["text"] == g["text"], (batch_id, r, g)
    assert r["finish_reason"] == g["finish_reason"] == "length", (r, g)
    assert r["usage"] == {"prompt_tokens": g["prompt_tokens"],
                          "completion_tokens": g["completion_tokens"]}, (r, g)
same("text", sys.argv[2])
same("chat", sys.argv[3])
same(3, sys.argv[4])
same("sampled", sys.argv[5])
same("n7", sys.argv[6])
assert by_id['"sampled"']["seed"] == 7
lp = by_id['"lp"']
assert len(lp["logprobs"]) == 3 and all(len(t["top"]) == 2 for t in lp["logprobs"]), lp
assert all(t["logprob"] <= 0 for t in lp["logprobs"]), lp
bad = by_id['"bad"']
assert bad["finish_reason"] == "error" and bad["error"]["code"] == "INVALID_ARGUMENT", bad
assert bad["error"]["message"] == '"prompt": expected a string, got 5', bad
assert bad["error"]["retryable"] is False and len(bad["error"]["input_hash"]) == 16, bad
for i in range(40):
    r = by_id[json.dumps("n%d" % i)]
    assert len(r["token_ids"]) == i % 5 + 1 and r["usage"]["prompt_tokens"] == 3, r
PY

# Run 2: nothing left to do; the output does not change.
cp "$out" "$work/out.1"
"$bitserve" batch --model "$work/tiny" --input "$in" --output "$out" 2> "$work/err2" \
  || fail "batch run 2: $(cat "$work/err2")"
cmp -s "$out" "$work/out.1" || fail "run 2 changed the output"
grep -q "0 done, 45 already done earlier" "$work/err2" || fail "run 2 summary: $(tail -1 "$work/err2")"

# A crash in the middle of a write: the torn line is cut away, the request redone.
grep -v '"id": *"chat"' "$work/out.1" > "$out"
printf '{"id":"chat","text":"Hel' >> "$out"
"$bitserve" batch --model "$work/tiny" --input "$in" --output "$out" 2> "$work/err3" \
  || fail "batch run 3: $(cat "$work/err3")"
grep -q "torn last line" "$work/err3" || fail "torn line not reported: $(cat "$work/err3")"
grep -q "1 done, 44 already done earlier" "$work/err3" || fail "run 3 summary: $(tail -1 "$work/err3")"
$python - "$out" "$work/out.1" <<'PY' || fail "run 3 output"
import json, sys
new = [json.loads(l) for l in open(sys.argv[1]).read().splitlines()]
old = {json.dumps(r["id"]): r for r in map(json.loads, open(sys.argv[2]).read().splitlines())}
assert len(new) == 46, len(new)
assert new[-1] == old['"chat"'], (new[-1], old['"chat"'])
PY

# A request that can never run (its prompt is longer than max_model_len) is a permanent error: the
# job exits 0, and a rerun keeps its one record and does not run it again.
printf '{"id": "long", "prompt_ids": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n{"id": "short", "prompt_ids": [1, 2]}\n' > "$work/p.jsonl"
for run in 1 2; do
  "$bitserve" batch --model "$work/tiny" --max-model-len 8 --input "$work/p.jsonl" --output "$work/p.out" \
    2> "$work/perr" || fail "permanent-error run $run exited $?: $(cat "$work/perr")"
done
grep -q "0 done, 2 already done earlier" "$work/perr" || fail "rerun summary: $(tail -1 "$work/perr")"
$python - "$work/p.out" <<'PY' || fail "permanent error records"
import json, sys
records = [json.loads(l) for l in open(sys.argv[1]).read().splitlines()]
assert len(records) == 2, records
long = [r for r in records if r["id"] == "long"][0]
assert long["error"]["code"] == "RESOURCE_EXHAUSTED" and long["error"]["retryable"] is False, long
PY

# The job cannot run: exit status 1 with a message.
expect_error "missing.jsonl" "$bitserve" batch --model "$work/tiny" --input "$work/missing.jsonl" --output "$work/o.jsonl"
expect_error "exactly one of --model" "$bitserve" batch --input "$in" --output "$work/o.jsonl"
expect_error "does not exist" "$bitserve" batch --model "$work/none" --input "$in" --output "$work/o.jsonl"
expect_error "cannot reach the backend" "$bitserve" batch --server 127.0.0.1:1 --input "$in" --output "$work/o.jsonl"
echo "not a result" > "$work/foreign.jsonl"
expect_error "foreign.jsonl:1: not a" "$bitserve" batch --model "$work/tiny" --input "$in" --output "$work/foreign.jsonl"
echo "batch_command_test: all checks passed"
