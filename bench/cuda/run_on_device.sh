#!/usr/bin/env bash
# Runs the CUDA op tests and the kernel benchmark on a GPU host from a bundle made by
# ../shared/scripts/bundle-binaries.sh (.bundle-cuda/), writing logs to $OUT (or ./out):
#   bash ../shared/scripts/bundle-binaries.sh .bundle-cuda BUILD/kernels/cuda/cuda_op_test \
#     BUILD/bench/cuda/kernel_benchmark
# Usage: bench/cuda/run_on_device.sh [tests|bench|products|sass]...   (default: tests bench)
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/.bundle-cuda/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
bin=.bundle-cuda/bin
steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(tests bench)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv | tee "$out/gpu.txt"
for step in "${steps[@]}"; do
  case $step in
    tests)
      # Full per-case log to $out; failures and the summary to the console.
      timeout 240 "$bin/cuda_op_test" >"$out/op_test.log" 2>&1
      echo "cuda_op_test exit $?"
      grep -E "^\[ *(FAILED|PASSED|SKIPPED) *\]|seed|note|Failure|differ|error" "$out/op_test.log" \
        | head -60
      ;;
    bench)
      timeout 300 "$bin/kernel_benchmark" --explore --csv "$out/bench.csv" 2>&1 \
        | tee "$out/bench.log" | grep -v "^|"
      echo "kernel_benchmark exit $?"
      ;;
    products)
      # Every product path side by side at 16 .. 4,096 tokens (the dispatch's data).
      timeout 300 "$bin/kernel_benchmark" --products --csv "$out/products.csv" 2>&1 \
        | tee "$out/products.log" | grep -v "^|"
      echo "kernel_benchmark --products exit $?"
      ;;
    sass)
      # Load order and instruction mix of the decode kernels.
      cuobjdump -sass "$bin/kernel_benchmark" 2>/dev/null | awk '
        /Function : .*Gemv(Dp4a|Mma)Kernel/ {
          keep = ($0 ~ /Dp4aKernelILi1ELi8ELi2E|MmaKernelILi1ELi1ELi1ELi8ELi2E/)
        }
        keep' >"$out/sass.txt"
      grep -E "Function|LDG|IDP|IMMA|BAR" "$out/sass.txt" | head -120 >"$out/sass_summary.txt"
      ;;
  esac
done
