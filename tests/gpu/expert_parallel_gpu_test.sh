#!/usr/bin/env bash
# Expert parallelism of CUDA worker processes (label gpu; run by run_gpu_suite.sh `ep`), on
# models/shakespeare-moe (8 experts, top-2). Every check: four requests at once, greedy tokens equal
# to the one-GPU engine's (`generate --device cuda`; with pipeline stages, the one-process CUDA
# pipeline's `generate --device cuda --pipeline-stages 2`: hidden states cross stages as int8).
#   1. EP2 over NCCL: `serve --worker-listen --expert-parallel 2 --pp-transport nccl` + two
#      `bitserve worker --device cuda:N`: int8 rows and f32 results cross in device memory.
#   2. An EP rank killed mid-stream: the request ends UNAVAILABLE, the coordinator stays up, the
#      survivor registers again, a replacement joins, a new communicator forms, same tokens.
#   3. PP2 x EP2 over NCCL: four workers (two stages of two ranks).
#   4. Local workers, `serve --expert-parallel 2 --device cuda:0`: both ranks on one GPU, the
#      exchange over TCP through host memory.
# On a machine with one GPU the NCCL ranks share it, each worker with its own NCCL_HOSTID (NCCL's
# socket transport on loopback; pipeline_gpu_test.sh says why).
#
#   expert_parallel_gpu_test.sh BITSERVE [MODEL]
set -euo pipefail
bitserve=$1
model=${2:-models/shakespeare-moe}
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
[ "$gpus" -ge 1 ] || { echo "no GPU: skipped"; exit 0; }
export NCCL_NVLS_ENABLE=0
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "== $f"; tail -20 "$f"; done; exit 1; }
wait_for() {  # FILE REGEX SECONDS
  for _ in $(seq $(($3 * 10))); do grep -qE "$2" "$1" && return 0; sleep 0.1; done
  fail "no \"$2\" in $1 after $3 s"
}
tokens() { grep -o '"token_ids":\[[^]]*\]' | head -1; }
prompts=("2043,50,60,70,80" "2043,318,1000,77,1500,12,13" "2043,900" "2043,40,41,42,43,44,45,46,47,48")
declare -A want
echo "references: generate --device cuda (one GPU, every expert), also as a 2-stage pipeline"
for p in "${prompts[@]}"; do
  for stages in 1 2; do
    want[$stages:$p]=$("$bitserve" generate --model "$model" --device cuda --pipeline-stages $stages \
      --prompt-ids "$p" --max-tokens 24 --ignore-eos --json 2>"$tmp/reference.log" | tokens)
    [ -n "${want[$stages:$p]}" ] || fail "no reference for $p"
  done
done
check_served() {  # ADDRESS WHAT [STAGES]
  local i=0 clients=()
  for p in "${prompts[@]}"; do
    timeout 120 "$bitserve" client generate --server "$1" --prompt-ids "$p" --max-tokens 24 --ignore-eos --json \
      >"$tmp/client_$i.json" 2>"$tmp/client_$i.err" &
    clients+=($!)
    i=$((i + 1))
  done
  for c in "${clients[@]}"; do wait "$c" || true; done
  i=0
  for p in "${prompts[@]}"; do
    got=$(tokens <"$tmp/client_$i.json" || true)
    ref=${want[${3:-1}:$p]}
    [ "$got" == "$ref" ] || fail "$2: prompt $p served $got, reference $ref ($(cat "$tmp/client_$i.err"))"
    i=$((i + 1))
  done
  echo "ok: $2: ${#prompts[@]} concurrent requests equal the one-GPU engine (${3:-1} stage(s))"
}
worker() {  # NAME DEVICE JOIN
  if [ "$gpus" -eq 1 ]; then
    NCCL_HOSTID=bitserve-ep-$1 NCCL_SOCKET_IFNAME=lo "$bitserve" worker --coordinator "$3" --device "$2" \
      --worker-id "$1" --connect-timeout 60 >/dev/null 2>"$tmp/worker_$1.log" &
  else
    "$bitserve" worker --coordinator "$3" --device "$2" --worker-id "$1" --connect-timeout 60 \
      >/dev/null 2>"$tmp/worker_$1.log" &
  fi
  pids+=($!)
  eval "pid_$1=$!"
}
serve_workers() {  # LOG STAGES EP
  "$bitserve" serve --model "$model" --listen 127.0.0.1:0 --worker-listen 127.0.0.1:0 --pipeline-stages "$2" \
    --expert-parallel "$3" --pp-transport nccl --num-kv-blocks 256 --worker-heartbeat-timeout 1500 \
    >/dev/null 2>"$1" &
  serve=$!
  pids+=($serve)
  wait_for "$1" "workers join at" 60
  join=$(grep -oE "workers join at \S+" "$1" | awk '{print $4}')
}
[ "$gpus" -eq 1 ] && export NCCL_SOCKET_IFNAME=lo

# 1. EP2 over NCCL.
echo "EP2 over NCCL: two worker processes on $gpus GPU(s)"
serve_workers "$tmp/serve.log" 1 2
worker a cuda:0 "$join"
wait_for "$tmp/serve.log" "worker a .*registered" 30
worker b "cuda:$((1 % gpus))" "$join"
wait_for "$tmp/serve.log" "listening on" 120
grep -q "expert-parallel group of 2 ranks over nccl" "$tmp/serve.log" || fail "the EP group is not over NCCL"
addr=$(grep -oE "listening on \S+" "$tmp/serve.log" | awk '{print $3}')
check_served "$addr" "EP2 over NCCL"

# 2. An EP rank lost mid-stream and replaced.
"$bitserve" client generate --server "$addr" --prompt-ids 2043,50 --max-tokens 4000 --ignore-eos \
  >"$tmp/long.out" 2>"$tmp/long.err" &
long=$!
for _ in $(seq 300); do [ -s "$tmp/long.out" ] && break; sleep 0.1; done
[ -s "$tmp/long.out" ] || fail "the long request streamed nothing"
kill -9 "$pid_b"
start=$(date +%s.%N)
if wait $long; then fail "the request survived its lost EP rank"; fi
grep -q UNAVAILABLE "$tmp/long.err" || fail "the request did not end UNAVAILABLE: $(cat "$tmp/long.err")"
echo "ok: EP rank 1 killed: request ended UNAVAILABLE after $(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $start}") s"
kill -0 $serve || fail "the coordinator died with its EP rank"
wait_for "$tmp/worker_a.log" "registering again" 30
worker c "cuda:$((1 % gpus))" "$join"
for _ in $(seq 600); do
  [ "$(grep -c 'expert-parallel group of 2 ranks over nccl' "$tmp/serve.log")" -ge 2 ] && \
    "$bitserve" client generate --server "$addr" --prompt-ids 2043 --max-tokens 1 >/dev/null 2>&1 && break
  sleep 0.2
done
check_served "$addr" "rebuilt EP2 group (replacement worker, new communicator)"
kill -TERM $serve
wait $serve || fail "serve exited $?"
wait "$pid_a" || fail "worker a exited $?"
wait "$pid_c" || fail "worker c exited $?"
echo "ok: SIGTERM stopped the server and both workers with exit 0"

# 3. PP2 x EP2 over NCCL.
echo "PP2 x EP2 over NCCL: four worker processes"
serve_workers "$tmp/serve_pp.log" 2 2
for n in d e f g; do
  worker $n "cuda:$((${#pids[@]} % gpus))" "$join"
  wait_for "$tmp/serve_pp.log" "worker $n .*registered" 30
done
wait_for "$tmp/serve_pp.log" "listening on" 120
grep -q "pipeline of 2 stages over nccl" "$tmp/serve_pp.log" || fail "PP2 x EP2 is not over NCCL"
check_served "$(grep -oE "listening on \S+" "$tmp/serve_pp.log" | awk '{print $3}')" "PP2 x EP2 over NCCL" 2
kill -TERM $serve
wait $serve || fail "serve exited $?"
unset NCCL_SOCKET_IFNAME

# 4. Local workers on one GPU: the exchange through host memory.
"$bitserve" serve --model "$model" --listen 127.0.0.1:0 --expert-parallel 2 --device cuda:0 --num-kv-blocks 256 \
  >/dev/null 2>"$tmp/serve_local.log" &
s=$!
pids+=($s)
wait_for "$tmp/serve_local.log" "listening on" 120
grep -q "expert-parallel group of 2 ranks over tcp" "$tmp/serve_local.log" || fail "local EP2 on cuda:0 is not over TCP"
check_served "$(grep -oE "listening on \S+" "$tmp/serve_local.log" | awk '{print $3}')" "local EP2 on cuda:0 over TCP"
kill -TERM $s
wait $s || fail "serve exited $?"
echo "PASS"
