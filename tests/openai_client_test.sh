#!/usr/bin/env bash
# The OpenAI-compatible HTTP API with the official `openai` npm client (tests/openai_client_test.mjs)
# against `bitserve serve --http-listen` on the generated `tiny` model (LLaMA-3 tokenizer):
# models, chat and completions streamed and not (greedy output equal to `bitserve generate`),
# logprobs, n with a seed, stop strings, 400/404 errors, a stream the client aborts (the server
# cancels it). Then curl-free checks of /health, and SIGTERM drains and exits 0.
# Usage: openai_client_test.sh PATH/TO/bitserve
set -euo pipefail
bitserve=$(realpath "$1")
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pid=""
cleanup() {
  [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  [[ -f $work/serve.log ]] && { echo "--- serve.log" >&2; tail -n 30 "$work/serve.log" >&2; }
  exit 1
}
[[ -f node_modules/openai/package.json ]] || fail "node_modules/openai is missing (scripts/install-deps.sh installs it)"

"$bitserve" make-model --preset tiny --out "$work/tiny" 2>/dev/null
expected=$(timeout 60 "$bitserve" generate --model "$work/tiny" --chat "Hello" --max-tokens 12 \
  --ignore-eos --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).text))') \
  || fail "generate"

"$bitserve" serve --model "$work/tiny" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --served-model-name tiny 2> "$work/serve.log" &
pid=$!
for _ in $(seq 600); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
base=$(sed -n 's|^bitserve serve: OpenAI API on \(http://[^ ]*\) .*|\1|p' "$work/serve.log")
[[ $base == http://127.0.0.1:*/v1 ]] || fail "no OpenAI API address in the log"

timeout 240 node tests/openai_client_test.mjs "$base" tiny "$expected" || fail "the openai client's checks"

# The aborted stream was cancelled on the server, long before its 100000 tokens.
for _ in $(seq 100); do grep -q 'outcome=cancelled' "$work/serve.log" && break; sleep 0.1; done
grep -q 'outcome=cancelled' "$work/serve.log" || fail "the aborted stream was not cancelled"

health=$(node -e 'fetch(process.argv[1]).then(r=>console.log(r.status))' "${base%/v1}/health")
[[ $health == 200 ]] || fail "/health answered $health"

kill -TERM "$pid"
for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
status=0
wait "$pid" || status=$?
pid=""
((status == 0)) || fail "serve exited $status after SIGTERM"
echo "openai_client_test: passed"
