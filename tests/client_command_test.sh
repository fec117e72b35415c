#!/usr/bin/env bash
# End to end: `bitserve client` against `bitserve serve` processes in the background, one on a model
# without tokenizer (test-gqa: token ids) and one with the LLaMA-3 tokenizer (tiny). The client
# prints what `bitserve generate` prints; errors name their gRPC code and the field; an address
# with nothing listening fails fast; a deadline passes; Ctrl-C cancels on the server (exit 130)
# and the server stays healthy; SIGTERM stops the servers with exit status 0.
# Every wait is bounded (the `timeout` command, or wait_exit).
# Usage: client_command_test.sh PATH/TO/bitserve
set -euo pipefail
bitserve=$1
work=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  local log
  for log in "$work"/*.log; do [[ -f $log ]] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }; done
  exit 1
}
# Runs a client command with a bound; its stdout is the function's, its stderr goes to $work/err.
client() { timeout 60 "$bitserve" client "$@" 2> "$work/err"; }
expect_error() {  # expect_error SUBSTRING... -- CLIENT ARGS...: non-zero exit, stderr has each
  local want=() out
  while [[ $1 != -- ]]; do want+=("$1"); shift; done
  shift
  if client "$@" > /dev/null; then fail "succeeded: client $*"; fi
  out=$(cat "$work/err")
  for w in "${want[@]}"; do [[ $out == *"$w"* ]] || fail "error of 'client $*' lacks '$w': $out"; done
}
# forget PID: a process that has been waited for; cleanup must not signal its (reusable) pid.
forget() {
  local kept=() p
  for p in "${pids[@]}"; do [[ $p == "$1" ]] || kept+=("$p"); done
  pids=("${kept[@]}")
}
# wait_exit PID SECONDS: sets exit_status to PID's exit status; fails when it runs longer.
wait_exit() {
  local pid=$1 i
  for ((i = 0; i < $2 * 10; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      exit_status=0
      wait "$pid" || exit_status=$?
      forget "$pid"
      return
    fi
    sleep 0.1
  done
  fail "process $pid still running after $2 s"
}
# wait_for_line FILE PATTERN SECONDS: until grep -q PATTERN FILE, or fail.
wait_for_line() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -q -- "$2" "$1" 2>/dev/null && return
    sleep 0.1
  done
  fail "no '$2' in $1 within $3 s"
}
# start_server NAME MODEL: serve MODEL on a free port; sets NAME_pid and NAME_addr.
start_server() {
  local log=$work/$1.log pid addr=""
  "$bitserve" serve --model "$2" --listen 127.0.0.1:0 2> "$log" &
  pid=$!
  pids+=("$pid")
  wait_for_line "$log" "listening on" 60
  addr=$(sed -n 's/^bitserve serve: listening on //p' "$log")
  [[ $addr == 127.0.0.1:[0-9]* ]] || fail "server $1: no address in '$(cat "$log")'"
  printf -v "$1_pid" %s "$pid"
  printf -v "$1_addr" %s "$addr"
}

"$bitserve" make-model --preset test-gqa --out "$work/gqa" --seed 3 2>/dev/null
"$bitserve" make-model --preset tiny --out "$work/tiny" 2>/dev/null
start_server gqa "$work/gqa"
start_server tiny "$work/tiny"

# ModelInfo and Tokenize.
info=$(client info --server "$gqa_addr") || fail "client info: $(cat "$work/err")"
python3 - "$info" <<'PY' || fail "client info: $info"
import json, sys
r = json.loads(sys.argv[1])
assert r["vocab_size"] == 1024 and r["num_layers"] == 3 and r["eos_token_ids"] == [2], r
assert r["architecture"] == "BitNetForCausalLM" and r["kv_capacity_tokens"] > 0, r
PY
want=$("$bitserve" tokenize --tokenizer "$work/tiny" --text "Hello, world")
got=$(client tokenize --server "$tiny_addr" --text "Hello, world") || fail "client tokenize: $(cat "$work/err")"
[[ $got == "$want" ]] || fail "client tokenize: '$got', tokenize: '$want'"
# With special tokens: the prompt a text request is (BOS only where the tokenizer's config says).
got=$(client tokenize --server "$tiny_addr" --text "Hello, world" --add-special-tokens) \
  || fail "client tokenize --add-special-tokens: $(cat "$work/err")"
want=$(timeout 60 "$bitserve" generate --model "$work/tiny" --prompt "Hello, world" --max-tokens 1 --json 2>/dev/null)
[[ $want == *"\"prompt_tokens\":$(wc -w <<< "$got"),"* ]] || fail "tokenize --add-special-tokens '$got' vs $want"
expect_error FAILED_PRECONDITION "no tokenizer.json" -- tokenize --server "$gqa_addr" --text hi

# The same JSON as `bitserve generate`, key for key: greedy, to the model's eos, and seeded
# sampling (whose seed is printed).
same_as_generate() {  # same_as_generate ADDR MODEL GENERATE_ARGS...
  local addr=$1 model=$2 want got
  shift 2
  want=$(timeout 60 "$bitserve" generate --model "$model" "$@" 2>/dev/null) || fail "generate $*"
  got=$(client generate --server "$addr" "$@") || fail "client generate $*: $(cat "$work/err")"
  [[ $got == "$want" ]] || fail "client generate $* printed
  $got
where generate printed
  $want"
}
same_as_generate "$gqa_addr" "$work/gqa" --prompt-ids 5,6,7 --max-tokens 8 --ignore-eos --json
same_as_generate "$gqa_addr" "$work/gqa" --prompt-ids 5,6,7 --max-tokens 300 --json
same_as_generate "$gqa_addr" "$work/gqa" --prompt-ids 5 --max-tokens 12 --ignore-eos --temperature 1 --seed 7 --json
same_as_generate "$tiny_addr" "$work/tiny" --chat "hello" --max-tokens 5 --ignore-eos --json
# Streamed: token ids without a tokenizer, text with one, then the finish reason.
same_as_generate "$gqa_addr" "$work/gqa" --prompt-ids 5,6,7 --max-tokens 4 --ignore-eos
same_as_generate "$tiny_addr" "$work/tiny" --prompt "The capital of France is" --max-tokens 6 --ignore-eos
same_as_generate "$tiny_addr" "$work/tiny" --chat "hello" --max-tokens 8 --ignore-eos --temperature 0.8 --top-p 0.9 --seed 1
out=$(client generate --server "$gqa_addr" --prompt-ids 5,6,7 --max-tokens 4 --ignore-eos)
[[ $out =~ ^([0-9]+\ ){4}$'\n'\[length\]$ ]] || fail "token-id stream: '$out'"
# Logprobs: the fields of generate's, the same tokens, values equal to float rounding.
lp_want=$(timeout 60 "$bitserve" generate --model "$work/gqa" --prompt-ids 5,6 --max-tokens 3 --ignore-eos --logprobs 2 --json 2>/dev/null)
lp_got=$(client generate --server "$gqa_addr" --prompt-ids 5,6 --max-tokens 3 --ignore-eos --logprobs 2 --json) \
  || fail "logprobs: $(cat "$work/err")"
python3 - "$lp_got" "$lp_want" <<'PY' || fail "logprobs: $lp_got vs $lp_want"
import json, sys
got, want = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert set(got) == set(want) and "logprobs" in got, (got.keys(), want.keys())
assert got["token_ids"] == want["token_ids"], (got, want)
for g, w in zip(got["logprobs"], want["logprobs"], strict=True):
    assert g["token_id"] == w["token_id"] and abs(g["logprob"] - w["logprob"]) < 1e-4, (g, w)
    assert [t["token_id"] for t in g["top"]] == [t["token_id"] for t in w["top"]], (g, w)
PY

# Bad requests: non-zero exit, the gRPC code and the field named, nothing generated.
expect_error INVALID_ARGUMENT sampling.temperature -- generate --server "$gqa_addr" --prompt-ids 1 --temperature -1
expect_error INVALID_ARGUMENT sampling.top_p -- generate --server "$gqa_addr" --prompt-ids 1 --top-p 2
expect_error INVALID_ARGUMENT "outside the vocabulary" -- generate --server "$gqa_addr" --prompt-ids 1,5000
expect_error INVALID_ARGUMENT --prompt-ids -- generate --server "$gqa_addr" --prompt-ids 1,x
expect_error FAILED_PRECONDITION "no tokenizer.json" -- generate --server "$gqa_addr" --prompt hi
expect_error INVALID_ARGUMENT "one of --prompt" -- generate --server "$gqa_addr"
# Nothing listening: UNAVAILABLE within about the connect timeout.
start=$(date +%s%N)
expect_error UNAVAILABLE 127.0.0.1:1 -- generate --server 127.0.0.1:1 --connect-timeout 1 --prompt-ids 1
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
((elapsed_ms < 10000)) || fail "unreachable server took $elapsed_ms ms to report"
expect_error UNAVAILABLE -- info --server 127.0.0.1:1 --connect-timeout 1
# Ctrl-C while still connecting ends the command at once, not when --connect-timeout passes.
"$bitserve" client generate --server 127.0.0.1:1 --connect-timeout 60 --prompt-ids 1 \
  2> "$work/connect.err" &
client_pid=$!
pids+=("$client_pid")
# A background job starts with SIGINT ignored: one sent before the client takes SIGINT in hand (a
# slow start under load) is lost, so keep sending until it has been taken.
for _ in $(seq 20); do
  sleep 0.5
  kill -INT "$client_pid" 2>/dev/null || break
done
wait_exit "$client_pid" 10
((exit_status == 130)) || fail "Ctrl-C while connecting: exit $exit_status: $(cat "$work/connect.err")"
grep -q "interrupted" "$work/connect.err" || fail "Ctrl-C while connecting: $(cat "$work/connect.err")"

# A deadline far shorter than the generation: DEADLINE_EXCEEDED, and the server drops the request.
expect_error DEADLINE_EXCEEDED -- generate --server "$tiny_addr" --prompt-ids 5,6,7 --max-tokens 4000 \
  --ignore-eos --timeout 0.2 --request-id deadline-1
wait_for_line "$work/tiny.log" 'request_id="deadline-1" outcome=deadline_exceeded code=DEADLINE_EXCEEDED' 30

# Ctrl-C while streaming: the request is cancelled on the server, the client exits 130.
"$bitserve" client generate --server "$tiny_addr" --prompt-ids 5,6,7 --max-tokens 4000 --ignore-eos \
  --request-id sigint-1 > "$work/sigint.out" 2> "$work/sigint.err" &
client_pid=$!
pids+=("$client_pid")
for ((i = 0; i < 300; i++)); do [[ -s $work/sigint.out ]] && break; sleep 0.1; done
[[ -s $work/sigint.out ]] || fail "no streamed output within 30 s: $(cat "$work/sigint.err")"
kill -0 "$client_pid" 2>/dev/null || fail "the stream ended before Ctrl-C could be tested"
kill -INT "$client_pid"
wait_exit "$client_pid" 15
((exit_status == 130)) || fail "client exited $exit_status after SIGINT: $(cat "$work/sigint.err")"
grep -q "interrupted" "$work/sigint.err" || fail "no interruption message: $(cat "$work/sigint.err")"
wait_for_line "$work/tiny.log" 'request_id="sigint-1" outcome=cancelled' 30
# The server is healthy afterwards.
out=$(client generate --server "$tiny_addr" --prompt-ids 5,6,7 --max-tokens 3 --ignore-eos --json) \
  || fail "request after SIGINT: $(cat "$work/err")"
[[ $out == *'"finish_reason":"length"'* ]] || fail "request after SIGINT: $out"

# SIGTERM: each server drains and exits 0.
for name in gqa tiny; do
  pid_var=${name}_pid
  kill -TERM "${!pid_var}"
  wait_exit "${!pid_var}" 60
  ((exit_status == 0)) || fail "server $name exited $exit_status after SIGTERM"
done
echo "client_command_test: all checks passed"
