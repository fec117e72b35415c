#!/usr/bin/env bash
# API keys end to end: `serve --api-key-file F --metrics-auth` with gRPC, the HTTP API and metrics.
# `bitserve client` / `batch --server` without a key or with a wrong one end UNAUTHENTICATED, with
# --api-key or $BITSERVE_API_KEY they work; the official `openai` client gets 401
# (AuthenticationError) with a wrong key and answers with the right one; /health and /healthz stay
# open, /metrics asks for the key; no key appears in serve's log; a bad key file stops serve with
# the line number.
# Usage: api_keys_test.sh PATH/TO/bitserve
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
  [[ -f $work/serve.log ]] && { echo "--- serve.log" >&2; tail -n 20 "$work/serve.log" >&2; }
  exit 1
}
key=sk-bitserve-test-$RANDOM$RANDOM-key
other=sk-bitserve-second-key-0123456
printf '# test keys\n%s\n\n%s\n' "$key" "$other" > "$work/keys"
"$bitserve" make-model --preset tiny --out "$work/tiny" 2>/dev/null

# A bad key file: serve refuses to start, naming the line (not the key).
printf 'sk-good-key-0123456789\nshort\n' > "$work/bad_keys"
if timeout 60 "$bitserve" serve --model "$work/tiny" --listen 127.0.0.1:0 \
  --api-key-file "$work/bad_keys" 2> "$work/bad.log"; then fail "serve started with a bad key file"; fi
grep -q "line 2" "$work/bad.log" || fail "bad key file: $(cat "$work/bad.log")"

"$bitserve" serve --model "$work/tiny" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 --metrics-auth --api-key-file "$work/keys" \
  --served-model-name tiny 2> "$work/serve.log" &
pid=$!
for _ in $(seq 600); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
addr=$(sed -n 's/^bitserve serve: listening on //p' "$work/serve.log")
base=$(sed -n 's|^bitserve serve: OpenAI API on \(http://[^ ]*\) .*|\1|p' "$work/serve.log")
metrics=$(sed -n 's|^bitserve serve: metrics on \(http://[^ ]*\)$|\1|p' "$work/serve.log")
[[ -n $addr && -n $base && -n $metrics ]] || fail "serve did not start"
grep -q "API keys required (2 in" "$work/serve.log" || fail "no API keys line"

client() { timeout 60 "$bitserve" client "$@" --server "$addr" 2> "$work/err"; }
unset BITSERVE_API_KEY
if client info > /dev/null; then fail "client info without a key succeeded"; fi
grep -q "UNAUTHENTICATED" "$work/err" || fail "no UNAUTHENTICATED: $(cat "$work/err")"
if client info --api-key sk-wrong-key-0123456789 > /dev/null; then fail "a wrong key passed"; fi
grep -q "UNAUTHENTICATED" "$work/err" || fail "wrong key: $(cat "$work/err")"
client info --api-key "$key" > /dev/null || fail "client info --api-key: $(cat "$work/err")"
BITSERVE_API_KEY=$other client generate --prompt "Hello" --max-tokens 3 > /dev/null ||
  fail "client generate with BITSERVE_API_KEY: $(cat "$work/err")"
printf '{"id": 1, "prompt": "Hi", "max_tokens": 2}\n' > "$work/in.jsonl"
timeout 60 "$bitserve" batch --server "$addr" --api-key "$key" --input "$work/in.jsonl" \
  --output "$work/out.jsonl" 2> "$work/err" || fail "batch --server --api-key: $(cat "$work/err")"
grep -q '"id":1' "$work/out.jsonl" || fail "batch output: $(cat "$work/out.jsonl")"

# HTTP: the official client, and plain requests for health and metrics.
timeout 120 node --input-type=module - "$base" "$key" <<'JS' || fail "openai client with keys"
import assert from "node:assert/strict";
import OpenAI, { AuthenticationError } from "openai";
const [baseURL, key] = process.argv.slice(2);
const wrong = new OpenAI({ baseURL, apiKey: "sk-wrong-key-0123456789", maxRetries: 0 });
await assert.rejects(wrong.models.list(), (e) => e instanceof AuthenticationError && e.status === 401);
const right = new OpenAI({ baseURL, apiKey: key, maxRetries: 0 });
const r = await right.completions.create({ model: "tiny", prompt: "Hi", max_tokens: 2 });
assert.equal(r.usage.completion_tokens, 2);
JS
status() {  # status URL [KEY]
  node -e 'const [u, k] = process.argv.slice(1); fetch(u, k ? {headers: {Authorization: "Bearer " + k}} : {}).then(r => console.log(r.status))' "$@"
}
[[ $(status "${base%/v1}/health") == 200 ]] || fail "/health is not open"
[[ $(status "$metrics") == 401 ]] || fail "/metrics without a key is not 401"
[[ $(status "$metrics" "$key") == 200 ]] || fail "/metrics with the key is not 200"
[[ $(status "${metrics%/metrics}/healthz") == 200 ]] || fail "/healthz is not open"

kill -TERM "$pid"
wait "$pid" || true
pid=""
if grep -q -e "$key" -e "$other" "$work/serve.log"; then fail "a key appears in serve's log"; fi
echo "api_keys_test: passed"
