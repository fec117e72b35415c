#!/usr/bin/env bash
# GPU pipelines of worker processes (label gpu; run by run_gpu_suite.sh `pipeline`):
#   1. `serve --worker-listen --pipeline-stages 2 --pp-transport nccl` + two `bitserve worker
#      --device cuda:N`: the hub bootstraps an NCCL communicator (its unique id, sent with each
#      rank), hidden states cross as int8 in device memory; served greedy tokens, four requests at
#      once, equal the one-process pipeline `generate --device cuda --pipeline-stages 2`.
#   2. Stage 1 killed mid-stream: the request ends UNAVAILABLE, stage 0 aborts its communicator and
#      registers again, a replacement joins, a new communicator forms, the same tokens come back,
#      SIGTERM stops the server and both workers with exit 0.
#   3. `serve --pipeline-stages 2` with local workers: NCCL on two GPUs (--device cuda), TCP through
#      host memory when both stages share one (--device cuda:0; auto picks it).
# On a machine with one GPU the two NCCL ranks of (1) and (2) share it: NCCL refuses two ranks of a
# communicator on one GPU of one host, so each worker gets its own NCCL_HOSTID and the ranks talk
# over NCCL's socket transport on loopback (a test-only setting; with two GPUs it is not used).
#
#   pipeline_gpu_test.sh BITSERVE [MODEL]
set -euo pipefail
bitserve=$1
model=${2:-models/shakespeare-dense}
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
echo "references: generate --device cuda --pipeline-stages 2 (one process)"
for p in "${prompts[@]}"; do
  want[$p]=$("$bitserve" generate --model "$model" --device cuda --pipeline-stages 2 --prompt-ids "$p" \
    --max-tokens 24 --ignore-eos --json 2>"$tmp/reference.log" | tokens)
  [ -n "${want[$p]}" ] || fail "no reference for $p"
done
check_served() {  # ADDRESS WHAT
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
    [ "$got" == "${want[$p]}" ] || fail "$2: prompt $p served $got, reference ${want[$p]} ($(cat "$tmp/client_$i.err"))"
    i=$((i + 1))
  done
  echo "ok: $2: ${#prompts[@]} concurrent requests equal the one-process CUDA pipeline"
}
worker() {  # NAME DEVICE JOIN HOSTID
  if [ "$gpus" -eq 1 ]; then
    NCCL_HOSTID=$4 NCCL_SOCKET_IFNAME=lo "$bitserve" worker --coordinator "$3" --device "$2" --worker-id "$1" \
      --connect-timeout 60 >/dev/null 2>"$tmp/worker_$1.log" &
  else
    "$bitserve" worker --coordinator "$3" --device "$2" --worker-id "$1" --connect-timeout 60 \
      >/dev/null 2>"$tmp/worker_$1.log" &
  fi
  pids+=($!)
  eval "pid_$1=$!"
}

# 1. NCCL between two worker processes.
echo "NCCL pipeline of two worker processes on $gpus GPU(s)"
[ "$gpus" -eq 1 ] && export NCCL_SOCKET_IFNAME=lo
"$bitserve" serve --model "$model" --listen 127.0.0.1:0 --worker-listen 127.0.0.1:0 --pipeline-stages 2 \
  --pp-transport nccl --num-kv-blocks 256 --worker-heartbeat-timeout 1500 >/dev/null 2>"$tmp/serve.log" &
serve=$!
pids+=($serve)
wait_for "$tmp/serve.log" "workers join at" 60
join=$(grep -oE "workers join at \S+" "$tmp/serve.log" | awk '{print $4}')
worker a cuda:0 "$join" bitserve-test-a
wait_for "$tmp/serve.log" "worker a .*registered for stage 0" 30
worker b "cuda:$((1 % gpus))" "$join" bitserve-test-b
wait_for "$tmp/serve.log" "listening on" 120
grep -q "pipeline of 2 stages over nccl" "$tmp/serve.log" || fail "the pipeline is not over NCCL"
addr=$(grep -oE "listening on \S+" "$tmp/serve.log" | awk '{print $3}')
check_served "$addr" "NCCL pipeline of two workers ($gpus GPU(s))"

# 2. A stage lost mid-stream and replaced.
"$bitserve" client generate --server "$addr" --prompt-ids 2043,50 --max-tokens 4000 --ignore-eos \
  >"$tmp/long.out" 2>"$tmp/long.err" &
long=$!
for _ in $(seq 300); do [ -s "$tmp/long.out" ] && break; sleep 0.1; done
[ -s "$tmp/long.out" ] || fail "the long request streamed nothing"
kill -9 "$pid_b"
start=$(date +%s.%N)
if wait $long; then fail "the request survived its lost stage"; fi
grep -q UNAVAILABLE "$tmp/long.err" || fail "the request did not end UNAVAILABLE: $(cat "$tmp/long.err")"
echo "ok: stage 1 killed: request ended UNAVAILABLE after $(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $start}") s"
wait_for "$tmp/worker_a.log" "registering again" 30
worker c "cuda:$((1 % gpus))" "$join" bitserve-test-c
for _ in $(seq 600); do
  [ "$(grep -c 'pipeline of 2 stages over nccl' "$tmp/serve.log")" -ge 2 ] && \
    "$bitserve" client generate --server "$addr" --prompt-ids 2043 --max-tokens 1 >/dev/null 2>&1 && break
  sleep 0.2
done
check_served "$addr" "rebuilt NCCL pipeline (replacement worker, new communicator)"
kill -TERM $serve
wait $serve || fail "serve exited $?"
wait "$pid_a" || fail "worker a exited $?"
wait "$pid_c" || fail "worker c exited $?"
echo "ok: SIGTERM stopped the server and both workers with exit 0"
unset NCCL_SOCKET_IFNAME

# 3. Local workers: auto transport.
local_pipeline() {  # DEVICE EXPECTED-TRANSPORT
  "$bitserve" serve --model "$model" --listen 127.0.0.1:0 --pipeline-stages 2 --device "$1" --num-kv-blocks 256 \
    >/dev/null 2>"$tmp/serve_local.log" &
  local s=$!
  pids+=($s)
  wait_for "$tmp/serve_local.log" "listening on" 120
  grep -q "pipeline of 2 stages over $2" "$tmp/serve_local.log" || fail "local workers on $1: not over $2"
  check_served "$(grep -oE "listening on \S+" "$tmp/serve_local.log" | awk '{print $3}')" \
    "local workers on $1 over $2"
  kill -TERM $s
  wait $s || fail "serve exited $?"
}
local_pipeline cuda:0 tcp
if [ "$gpus" -ge 2 ]; then local_pipeline cuda nccl; fi
echo "PASS"
