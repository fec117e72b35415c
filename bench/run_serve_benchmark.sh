#!/usr/bin/env bash
# The serving benchmark of docs/perf.md: starts `bitserve serve` on MODEL, runs `bitserve
# bench-serve --server` with each setting below (random token ids, seed 0), writes OUT/NAME.txt
# (the command and the result block), OUT/NAME.json and OUT/NAME.log (progress), and stops the
# server with SIGTERM. The last setting runs against a second server with a smaller token budget.
# Usage: bench/run_serve_benchmark.sh [BITSERVE [MODEL [OUT]]]
set -euo pipefail
bitserve=${1:-build/tools/bitserve}
model=${2:-models/shakespeare-dense}
out=${3:-bench/results/serve_cpu}
mkdir -p "$out"
server_pid=
addr=
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then kill -TERM "$server_pid"; fi
}
trap cleanup EXIT

start_server() {  # start_server LOG SERVE_FLAGS...: sets server_pid and addr
  local log=$1; shift
  : > "$log"  # exists before the background redirect does: the loop below reads it
  "$bitserve" serve --model "$model" --listen 127.0.0.1:0 "$@" 2>> "$log" &
  server_pid=$!
  addr=
  for _ in $(seq 1 600); do
    addr=$(sed -n 's/^bitserve serve: listening on //p' "$log" | head -1)
    [[ -n $addr ]] && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "bitserve serve did not start" >&2
  exit 1
}
stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid"
  server_pid=
}
run() {  # run NAME FLAGS...
  local name=$1; shift
  echo "== $name: bitserve bench-serve --server $addr $*" | tee "$out/$name.txt"
  "$bitserve" bench-serve --server "$addr" "$@" --json "$out/$name.json" 2> "$out/$name.log" \
    | tee -a "$out/$name.txt"
}

fixed=(--input-len 128 --output-len 128 --seed 0)
start_server "$out/server.log"
# Warm-up: as many requests as the concurrency, so that the first measured batch is not the first
# batch of that size the server runs.
run c1 "${fixed[@]}" --num-prompts 16 --max-concurrency 1 --warmup 2
run c8 "${fixed[@]}" --num-prompts 64 --max-concurrency 8 --warmup 8
run c32 "${fixed[@]}" --num-prompts 128 --max-concurrency 32 --warmup 32
run poisson2 "${fixed[@]}" --num-prompts 64 --request-rate 2 --warmup 2
# Lengths in [72, 120] each, so that prompt + output stays within the model's 256 positions.
run poisson4-range --input-len 96 --output-len 96 --input-len-range 0.25 --output-len-range 0.25 \
  --seed 0 --num-prompts 64 --request-rate 4 --warmup 2
stop_server

# The same closed loop of 32 against a server whose steps hold at most 512 tokens.
start_server "$out/server-budget512.log" --max-batch-tokens 512
run c32-budget512 "${fixed[@]}" --num-prompts 128 --max-concurrency 32 --warmup 32
stop_server
