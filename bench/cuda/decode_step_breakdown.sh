#!/usr/bin/env bash
# Where a decode step's time goes (issue 19): for a preset with dummy weights made on the GPU
# (`make-model --config-only` + `--load-format dummy`), on a GPU host, from a bundle
# (tests/gpu/run_gpu_suite.sh says how to make it):
#
#   decode_step_breakdown.sh [PRESET] [OUT]      (default llama-70b, $OUT or ./out)
#   env: BREAKDOWN_BATCHES (default "1 64 256 1024"), BREAKDOWN_PROMPT (128),
#        BREAKDOWN_KV (bf16; --kv-dtype of the served run), BREAKDOWN_SERVE ("128x1024": input =
#        output length x requests submitted at once; empty: no served run)
#
# 1. engine_benchmark: the decode step at each batch, host-timed around Engine::Step (CUDA graph,
#    greedy sampling, tokens back to the host), median of 8 steps after `BREAKDOWN_PROMPT`-token
#    prompts.
# 2. ncu: one decode step per batch (engine_benchmark --profile-steps 1, ncu --profile-from-start
#    off), every kernel's device time summed by category (bench/cuda/ncu_kernel_times.py
#    --categories). ncu serializes the kernels, so each time includes its own ramp-up and none
#    overlaps the next (PDL off); step time - kernel sum is what the step spends outside kernels
#    (launch gaps, host work, the copy of tokens back), an estimate because PDL overlaps launches.
# 3. served: `serve --load-format dummy` driven by bench-serve with everything submitted at once;
#    bench/served_step_report.py splits the wall time into scheduler steps and the time between.
set -uo pipefail
preset=${1:-llama-70b}
out=${2:-${OUT:-out}}
mkdir -p "$out"
bin=${BIN:-.bundle/bin}
here=$(cd "$(dirname "$0")" && pwd)
prompt=${BREAKDOWN_PROMPT:-128}
batches=${BREAKDOWN_BATCHES:-1 64 256 1024}
m=/tmp/bitserve-$preset-dummy
"$bin/bitserve" make-model --preset "$preset" --out "$m" --config-only >/dev/null 2>&1 ||
  "$bin/bitserve" make-model --preset "$preset" --out "$m" --config-only --no-tokenizer >/dev/null 2>&1 ||
  { echo "make-model --preset $preset failed"; exit 1; }

echo "== $preset: decode step by batch (prompt $prompt)"
timeout 300 "$bin/engine_benchmark" --model "$m" --load-format dummy --batches "${batches// /,}" \
  --prompt "$prompt" --steps 8 --prefill none 2>&1 | tee "$out/${preset}_breakdown_engine.log" |
  grep -E "^\||GPU|loaded"

for b in $batches; do
  csv="$out/${preset}_breakdown_ncu_b$b.csv"
  timeout 300 ncu --profile-from-start off --cache-control none --clock-control none \
    --metrics gpu__time_duration.sum --csv "$bin/engine_benchmark" --model "$m" --load-format dummy \
    --batches "$b" --prompt "$prompt" --steps 2 --profile-steps 1 --prefill none \
    >"$csv" 2>"$out/${preset}_breakdown_ncu_b$b.err"
  echo "== $preset batch $b: one decode step under ncu (exit $?)"
  python3 "$here/ncu_kernel_times.py" "$csv" --per 1 --categories |
    tee "$out/${preset}_breakdown_kernels_b$b.txt" | sed -n '/by category/,$p;1p'
  rm -f "$csv"
done

for run in ${BREAKDOWN_SERVE-128x1024}; do
  set -- ${run//x/ }
  len=$1 n=$2
  log="$out/${preset}_breakdown_serve.log"
  "$bin/bitserve" serve --model "$m" --load-format dummy --device cuda --kv-dtype "${BREAKDOWN_KV:-bf16}" \
    --listen 127.0.0.1:0 --max-num-seqs "$n" --metrics-listen 127.0.0.1:9471 >/dev/null 2>"$log" &
  spid=$!
  for _ in $(seq 3000); do grep -q "listening on" "$log" && break; sleep 0.1; done
  addr=$(grep -o "listening on .*" "$log" | awk '{print $3}')
  scrape() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' "$1"; }
  scrape http://127.0.0.1:9471/metrics >"$out/serve_before.prom"
  t0=$(date +%s.%N)
  echo "== $preset served $len/$len, $n requests at once"
  timeout 280 "$bin/bitserve" bench-serve --server "$addr" --num-prompts "$n" --input-len "$len" \
    --output-len "$len" --timeout 260 2>&1 | tee "$out/${preset}_breakdown_serve_$len.log" |
    grep -E "Successful|Failed|Output token throughput|Median TPOT"
  wall=$(awk "BEGIN{print $(date +%s.%N) - $t0}")
  scrape http://127.0.0.1:9471/metrics >"$out/serve_after.prom"
  python3 "$here/../served_step_report.py" "$out/serve_before.prom" "$out/serve_after.prom" "$wall" |
    tee "$out/${preset}_breakdown_serve_$len.txt"
  kill -TERM $spid; wait $spid
done
