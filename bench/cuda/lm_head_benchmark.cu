// The LM head alone (not a test): bf16 (cuBLAS, what `--lm-head-dtype bf16` runs) beside int8
// (int8_lm_head.cuh: the GEMV up to 8 rows, cuBLASLt's int8 GEMM beyond, and each path at every
// row count), for the vocabulary x hidden shapes of bitnet-2b4t and llama-70b, at 1..256 rows,
// beside the floor of reading the weights once at the measured copy bandwidth (bytes read + written
// per second, as engine_benchmark's floors). Each time is a
// median of graph replays with the weights rotated over enough copies to defeat the L2
// (graph_timing.cuh); the norm + quantization of the rows is not included (a few us either way).
//
//   lm_head_benchmark [--rows 1,2,4,8,16,64,256]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "bench/cuda/graph_timing.cuh"
#include "kernels/cuda/head/int8_lm_head.cuh"
#include "kernels/cuda/head/lm_head.cuh"

namespace bitserve::cuda {
namespace {

// Random words made valid bf16 of modest size: random sign and mantissa, values in [2^-7, 2^-6).
__global__ void ToModestBf16(uint16_t* p, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p[i] = static_cast<uint16_t>((p[i] & 0x807f) | 0x3c00);
  }
}

struct Shape {
  const char* name;
  int64_t vocab, hidden;
};

int Run(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::vector<int64_t> row_counts = {1, 2, 4, 8, 16, 64, 256};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--rows") {
      row_counts.clear();
      for (const char* p = argv[i + 1]; *p != '\0';) {
        row_counts.push_back(std::strtoll(p, const_cast<char**>(&p), 10));
        if (*p == ',') ++p;
      }
    } else {
      std::cerr << "unknown flag " << argv[i] << "\n";
      return 2;
    }
  }
  const int64_t max_rows = *std::max_element(row_counts.begin(), row_counts.end());
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const double copy_bw = CopyBandwidth();
  std::printf("GPU: %s; device-to-device copy %.0f GB/s (read + written)\n", prop.name,
              copy_bw / 1e9);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  for (const Shape& s : {Shape{"bitnet-2b4t", 128256, 2560}, Shape{"llama-70b", 128256, 8192}}) {
    // Enough copies of each table that they cannot sit in the 50 MB L2 together.
    const int64_t bf16_bytes = 2 * s.vocab * s.hidden;
    const int copies =
        static_cast<int>(std::clamp<int64_t>((int64_t{256} << 20) / bf16_bytes + 1, 2, 8));
    std::vector<DeviceBuffer<uint16_t>> tables;
    std::vector<Int8LmHeadWeights> quantized;
    for (int i = 0; i < copies; ++i) {
      auto t = DeviceBuffer<uint16_t>::Create(s.vocab * s.hidden);
      if (!t.ok() || !RandomWords(t->get(), t->bytes()).ok()) {
        std::cerr << "allocation failed\n";
        return 1;
      }
      ToModestBf16<<<kFillBlocks, 256>>>(t->get(), s.vocab * s.hidden);
      auto q = QuantizeLmHeadInt8(t->get(), s.vocab, s.hidden, stream);
      if (!q.ok()) {
        std::cerr << q.status() << "\n";
        return 1;
      }
      tables.push_back(std::move(t).value());
      quantized.push_back(std::move(q).value());
    }
    const int64_t stride = Int8LmHeadStride(s.hidden);
    auto x_bf16 = DeviceBuffer<uint16_t>::Create(max_rows * s.hidden);
    auto x_int8 = DeviceBuffer<int8_t>::Create(max_rows * stride);
    auto x_scales = DeviceBuffer<float>::Create(max_rows);
    auto logits = DeviceBuffer<float>::Create(max_rows * s.vocab);
    auto bf16_head = Bf16LmHead::Create(stream);
    auto int8_head = Int8LmHead::Create(s.vocab, std::max<int64_t>(max_rows, 9));
    if (!x_bf16.ok() || !x_int8.ok() || !x_scales.ok() || !logits.ok() || !bf16_head.ok() ||
        !int8_head.ok()) {
      std::cerr << "setup failed\n";
      return 1;
    }
    (void)RandomWords(x_bf16->get(), x_bf16->bytes());
    (void)RandomWords(x_int8->get(), x_int8->bytes());
    FillRandomFloat<<<kFillBlocks, 256>>>(x_scales->get(), max_rows, ++g_seed, 1.0f);
    const double int8_bytes = static_cast<double>(quantized[0].values.bytes());
    std::printf(
        "\n%s: vocab %lld, hidden %lld; bf16 %.0f MB, int8 %.0f MB (floor %.1f / %.1f us)\n",
        s.name, static_cast<long long>(s.vocab), static_cast<long long>(s.hidden), bf16_bytes / 1e6,
        int8_bytes / 1e6, bf16_bytes / copy_bw * 1e6, int8_bytes / copy_bw * 1e6);
    std::printf(
        "| rows | bf16 cuBLAS (us) | int8 default (us) | int8 GEMV (us) | int8 GEMM (us) "
        "| bf16 / int8 |\n|---:|---:|---:|---:|---:|---:|\n");
    for (int64_t rows : row_counts) {
      const Int8Activations x({x_int8->get(), x_scales->get(), nullptr, stride}, rows, s.hidden);
      auto bf16 = TimePerCall(
          [&](int i) {
            return (*bf16_head)
                ->Run(tables[i % copies].get(), s.vocab, s.hidden, x_bf16->get(), rows,
                      logits->get(), stream);
          },
          copies, stream);
      auto int8 = TimePerCall(
          [&](int i) { return (*int8_head)->Run(quantized[i % copies], x, logits->get(), stream); },
          copies, stream);
      auto gemv = TimePerCall(
          [&](int i) {
            return (*int8_head)->RunGemv(quantized[i % copies], x, logits->get(), stream);
          },
          copies, stream);
      auto gemm = TimePerCall(
          [&](int i) {
            return (*int8_head)->RunGemm(quantized[i % copies], x, logits->get(), stream);
          },
          copies, stream);
      if (!bf16.ok() || !int8.ok() || !gemv.ok() || !gemm.ok()) {
        std::cerr << "rows " << rows << ": " << bf16.status() << " / " << int8.status() << " / "
                  << gemv.status() << " / " << gemm.status() << "\n";
        return 1;
      }
      std::printf("| %lld | %.1f | %.1f | %.1f | %.1f | %.2fx |\n", static_cast<long long>(rows),
                  *bf16, *int8, *gemv, *gemm, *bf16 / *int8);
    }
  }
  return 0;
}

}  // namespace
}  // namespace bitserve::cuda

int main(int argc, char** argv) { return bitserve::cuda::Run(argc, argv); }
