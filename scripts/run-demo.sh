#!/usr/bin/env bash
# `make run`: generate a small BitNet checkpoint (the `tiny` preset: 2 layers, the real LLaMA-3
# vocabulary and tokenizer files), serve it with `bitserve serve` on a free loopback port, stream
# one chat answer through `bitserve client generate`, then stop the server with SIGTERM and check
# that it drained and exited 0. Every wait is bounded; the server is killed if anything fails.
set -euo pipefail
build=${1:-build}
bitserve=$build/tools/bitserve
model=$build/demo/tiny
log=$(mktemp)
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill -KILL "$server_pid" 2>/dev/null
  rm -f "$log"
}
trap cleanup EXIT
die() {
  echo "run-demo: $*" >&2
  [[ -s $log ]] && sed 's/^/  server: /' "$log" >&2
  exit 1
}

if [[ ! -f $model/model.safetensors ]]; then
  echo "== make-model: tiny preset -> $model"
  "$bitserve" make-model --preset tiny --out "$model" --seed 0 >/dev/null 2>&1 ||
    die "make-model failed"
fi

echo "== serve: starting on 127.0.0.1 (any free port)"
"$bitserve" serve --model "$model" --listen 127.0.0.1:0 2> "$log" &
server_pid=$!
address=""
for ((i = 0; i < 600; i++)); do  # 60 s: loading the tiny model takes well under a second
  address=$(sed -n 's/^bitserve serve: listening on //p' "$log")
  [[ -n $address ]] && break
  kill -0 "$server_pid" 2>/dev/null || die "the server exited while starting"
  sleep 0.1
done
[[ -n $address ]] || die "the server was not listening within 60 s"
info=$(timeout 30 "$bitserve" client info --server "$address" --connect-timeout 10) ||
  die "client info failed"
device=$(sed -n 's/.*"device":"\([^"]*\)".*/\1/p' <<< "$info")
capacity=$(sed -n 's/.*"kv_capacity_tokens":\([0-9]*\).*/\1/p' <<< "$info")
echo "== ready on $address: device $device, KV cache of $capacity tokens"

echo "== client generate: streaming one chat answer (sampled, seed 1)"
timeout 120 "$bitserve" client generate --server "$address" --chat "Tell me about ternary weights." \
  --max-tokens 24 --ignore-eos --temperature 0.8 --top-p 0.95 --seed 1 || die "client generate failed"
echo "(random weights: the text is gibberish by construction; it shows the whole path: chat"
echo " template, tokenizer, scheduler, CPU engine, sampling, detokenization, gRPC streaming)"

echo "== SIGTERM: draining the server"
kill -TERM "$server_pid"
status=""
for ((i = 0; i < 600; i++)); do  # 60 s; nothing is in flight, so the drain is immediate
  if ! kill -0 "$server_pid" 2>/dev/null; then
    status=0
    wait "$server_pid" || status=$?
    break
  fi
  sleep 0.1
done
[[ -n $status ]] || die "the server did not exit within 60 s of SIGTERM"
server_pid=""
[[ $status == 0 ]] || die "the server exited with status $status"
echo "== server exited cleanly (status 0)"
