#!/usr/bin/env bash
# Runs the CUDA engine's GPU tests and end-to-end benchmark on a GPU host from a bundle made by
# ../shared/scripts/bundle-binaries.sh (.bundle-engine/), writing logs to $OUT (or ./out):
#   bash ../shared/scripts/bundle-binaries.sh .bundle-engine BUILD/kernels/cuda/cuda_op_test \
#     BUILD/runtime/cuda_engine_test BUILD/bench/cuda/engine_benchmark
# Usage: bench/cuda/run_engine_on_device.sh [ops|engine|bench]...   (default: all three)
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/.bundle-engine/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
bin=.bundle-engine/bin
steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(ops engine bench)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv | tee "$out/gpu.txt"
date -u | tee -a "$out/gpu.txt"
for step in "${steps[@]}"; do
  case $step in
    ops)
      # The model ops' cases of the op harness (the ternary and attention cases have their own runs).
      timeout 120 "$bin/cuda_op_test" --gtest_filter='ModelOps/*' >"$out/model_op_test.log" 2>&1
      echo "cuda_op_test (ModelOps) exit $?"
      grep -E "^\[ *(FAILED|PASSED|SKIPPED) *\]|seed|Failure|differ" "$out/model_op_test.log" | head -30
      ;;
    engine)
      timeout 200 "$bin/cuda_engine_test" >"$out/engine_test.log" 2>&1
      echo "cuda_engine_test exit $?"
      grep -E "^\[ *(FAILED|PASSED|SKIPPED|numbers) *\]|Failure|error|differ|Expected|Which is" \
        "$out/engine_test.log" | head -60
      ;;
    bench)
      timeout 200 "$bin/engine_benchmark" 2>&1 | tee "$out/engine_bench.log"
      echo "engine_benchmark exit $?"
      ;;
    profile)
      # Per-kernel device times of batch-1 decode steps (graph replays; ncu serializes kernels,
      # so the sum is kernel time without launch gaps).
      timeout 200 ncu --cache-control none --clock-control none --launch-skip 1200 \
        --launch-count 700 --metrics gpu__time_duration.sum --csv \
        "$bin/engine_benchmark" --batches 1 --prefill 512 --steps 4 >"$out/ncu.csv" 2>"$out/ncu.err"
      echo "ncu exit $?"
      python3 bench/cuda/ncu_kernel_times.py "$out/ncu.csv"
      ;;
  esac
done
