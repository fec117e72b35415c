// Ternary kernels beside cuBLAS bf16, in one run on one GPU.
//
// For each weight shape (BitNet b1.58 2B4T and a 70B model) and token count M, times bitserve's
// dispatch (TernaryMatmul) and every compiled variant, and cuBLAS bf16 (cublasGemmEx, which also
// serves M = 1 as a GEMV), with the machine's own ceilings measured first: device-to-device copy
// bandwidth (bytes read + written) and the int8 and bf16 tensor-core rates (cuBLAS, 8192^3).
//
// Method: random data (never zeros); weights rotated over enough copies that the 50 MB L2 cannot
// hold them; each measurement is a CUDA graph of back-to-back calls (no launch gaps), replayed
// after warm-up; the median replay over the number of calls in it is the time per call.
//
// Usage: kernel_benchmark [--explore | --products] [--tokens LIST] [--csv FILE]
//   --explore   also times extra token counts (2, 4, 16, 32, 128, 256) to place the crossovers
//   --products  only the products, at the token counts of batched decode and prefill chunks
//               (16 .. 4096), every path side by side: the data behind ChooseTernaryProductPath
//   --tokens    only these token counts (e.g. 1 for the decode GEMV configurations), products only
//   --csv      every variant's time, one line each
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "bench/cuda/graph_timing.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/common/device_info.cuh"
#include "kernels/cuda/norm/act_quant.cuh"
#include "kernels/cuda/ternary/int8_activations.h"
#include "kernels/cuda/ternary/ternary_gemm.cuh"
#include "kernels/cuda/ternary/ternary_gemv.cuh"
#include "kernels/cuda/ternary/ternary_layout.h"
#include "kernels/cuda/ternary/ternary_tiled_gemm.cuh"

namespace bitserve::cuda {
namespace {

#define BENCH_CUBLAS(statement)                                                         \
  do {                                                                                  \
    const cublasStatus_t bench_status_ = (statement);                                   \
    if (bench_status_ != CUBLAS_STATUS_SUCCESS) {                                       \
      return absl::InternalError(                                                       \
          absl::StrCat(#statement, " failed: ", cublasGetStatusString(bench_status_))); \
    }                                                                                   \
  } while (0)

constexpr int64_t kL2RotationBytes = int64_t{150} << 20;  // 3x the H100's 50 MB L2

// ---- random device data --------------------------------------------------------------------

__global__ void FillFloat(float* p, int64_t n, float value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p[i] = value;
  }
}

// ---- ceilings ------------------------------------------------------------------------------

struct Ceilings {
  double copy_gbs = 0;     // device-to-device copy, bytes read + written
  double read_gbs = 0;     // streaming read kernel
  double int8_tops = 0;    // cuBLAS int8 GEMM 8192^3
  double bf16_tflops = 0;  // cuBLAS bf16 GEMM 8192^3
};

absl::StatusOr<Ceilings> MeasureCeilings(cublasHandle_t blas, cudaStream_t stream) {
  Ceilings c;
  {
    const int64_t bytes = int64_t{2} << 30;
    ASSIGN_OR_RETURN(auto src, DeviceBuffer<uint8_t>::Create(bytes));
    ASSIGN_OR_RETURN(auto dst, DeviceBuffer<uint8_t>::Create(bytes));
    RETURN_IF_ERROR(RandomWords(src.get(), bytes));
    ASSIGN_OR_RETURN(const double us,
                     TimePerCall(
                         [&](int) -> absl::Status {
                           BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
                               dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, stream));
                           return absl::OkStatus();
                         },
                         1, stream));
    c.copy_gbs = 2.0 * bytes / (us * 1e3);
    ASSIGN_OR_RETURN(const double read_us, TimePerCall(
                                               [&](int) -> absl::Status {
                                                 ReadStream<<<132 * 8, 512, 0, stream>>>(
                                                     reinterpret_cast<const uint4*>(src.get()),
                                                     bytes / 16,
                                                     reinterpret_cast<uint32_t*>(dst.get()));
                                                 BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
                                                 return absl::OkStatus();
                                               },
                                               1, stream));
    c.read_gbs = bytes / (read_us * 1e3);
  }
  const int n = 8192;
  {
    ASSIGN_OR_RETURN(auto a, DeviceBuffer<int8_t>::Create(int64_t{n} * n));
    ASSIGN_OR_RETURN(auto b, DeviceBuffer<int8_t>::Create(int64_t{n} * n));
    ASSIGN_OR_RETURN(auto d, DeviceBuffer<int32_t>::Create(int64_t{n} * n));
    RETURN_IF_ERROR(RandomWords(a.get(), a.bytes()));
    RETURN_IF_ERROR(RandomWords(b.get(), b.bytes()));
    const int32_t alpha = 1, beta = 0;
    ASSIGN_OR_RETURN(
        const double us,
        TimePerCall(
            [&](int) -> absl::Status {
              BENCH_CUBLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, a.get(),
                                        CUDA_R_8I, n, b.get(), CUDA_R_8I, n, &beta, d.get(),
                                        CUDA_R_32I, n, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT));
              return absl::OkStatus();
            },
            1, stream));
    c.int8_tops = 2.0 * n * n * double{n} / (us * 1e6);
  }
  {
    ASSIGN_OR_RETURN(auto a, DeviceBuffer<__nv_bfloat16>::Create(int64_t{n} * n));
    ASSIGN_OR_RETURN(auto b, DeviceBuffer<__nv_bfloat16>::Create(int64_t{n} * n));
    ASSIGN_OR_RETURN(auto d, DeviceBuffer<__nv_bfloat16>::Create(int64_t{n} * n));
    FillBf16<<<kFillBlocks, 256>>>(a.get(), a.size(), ++g_seed, 1.0f);
    FillBf16<<<kFillBlocks, 256>>>(b.get(), b.size(), ++g_seed, 1.0f);
    const float alpha = 1, beta = 0;
    ASSIGN_OR_RETURN(
        const double us,
        TimePerCall(
            [&](int) -> absl::Status {
              BENCH_CUBLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, a.get(),
                                        CUDA_R_16BF, n, b.get(), CUDA_R_16BF, n, &beta, d.get(),
                                        CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
              return absl::OkStatus();
            },
            1, stream));
    c.bf16_tflops = 2.0 * n * n * double{n} / (us * 1e6);
  }
  return c;
}

// ---- one shape -----------------------------------------------------------------------------

struct Shape {
  const char* model;
  const char* name;
  int64_t out, in;
};

struct Row {
  std::string shape;
  int64_t m = 0;
  double bitserve_us = 0, bf16_us = 0;
  std::string best_variant;
  double best_us = 0;
  double ternary_bytes = 0, ops = 0;
};

struct Variant {
  std::string name;
  std::function<absl::Status(int copy)> call;
};

absl::Status BenchShape(const Shape& shape, const std::vector<int64_t>& token_counts,
                        const Ceilings& ceilings, cublasHandle_t blas, cudaStream_t stream,
                        std::vector<Row>* rows, FILE* csv) {
  const int64_t out = shape.out, in = shape.in, max_m = token_counts.back();
  const int64_t stride = PaddedInputs(in);
  TernaryMatrixView base;
  base.rows = out;
  base.cols = in;
  base.padded_rows = PaddedRows(out);
  base.padded_cols = stride;
  base.scale.value = 0.8f;
  const int64_t packed_bytes = base.bytes();
  const int ternary_copies =
      static_cast<int>(std::clamp<int64_t>(kL2RotationBytes / packed_bytes + 1, 1, 64));
  const int64_t bf16_bytes = out * in * 2;
  const int bf16_copies =
      static_cast<int>(std::clamp<int64_t>(kL2RotationBytes / bf16_bytes + 1, 1, 64));

  ASSIGN_OR_RETURN(auto packed, DeviceBuffer<uint32_t>::Create(packed_bytes / 4 * ternary_copies));
  FillTernaryWords<<<kFillBlocks, 256>>>(packed.get(), packed.size(), ++g_seed);
  ASSIGN_OR_RETURN(auto w_bf16, DeviceBuffer<__nv_bfloat16>::Create(out * in * bf16_copies));
  FillBf16<<<kFillBlocks, 256>>>(w_bf16.get(), w_bf16.size(), ++g_seed, 0.05f);
  ASSIGN_OR_RETURN(auto xq, DeviceBuffer<int8_t>::Create(max_m * stride));
  RETURN_IF_ERROR(RandomWords(xq.get(), xq.bytes()));
  ASSIGN_OR_RETURN(auto x_scale, DeviceBuffer<float>::Create(max_m));
  FillFloat<<<kFillBlocks, 256>>>(x_scale.get(), max_m, 42.0f);
  ASSIGN_OR_RETURN(auto x_sum, DeviceBuffer<int32_t>::Create(max_m));
  RETURN_IF_ERROR(x_sum.FillBytes(0));
  ASSIGN_OR_RETURN(auto x_bf16, DeviceBuffer<__nv_bfloat16>::Create(max_m * in));
  FillBf16<<<kFillBlocks, 256>>>(x_bf16.get(), x_bf16.size(), ++g_seed, 1.0f);
  ASSIGN_OR_RETURN(auto y, DeviceBuffer<float>::Create(max_m * out));
  ASSIGN_OR_RETURN(auto tiled_scratch,
                   DeviceBuffer<int8_t>::Create(TernaryTiledScratchBytes(max_m, stride)));
  ASSIGN_OR_RETURN(auto y_bf16, DeviceBuffer<__nv_bfloat16>::Create(max_m * out));
  std::unique_ptr<TernaryGemm> gemm;
  if (max_m >= 8) {
    ASSIGN_OR_RETURN(gemm, TernaryGemm::Create(out, in, max_m));
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());

  auto view = [&](int copy) {
    TernaryMatrixView v = base;
    v.words = packed.get() + (packed_bytes / 4) * (copy % ternary_copies);
    return v;
  };

  for (const int64_t m : token_counts) {
    Int8Activations x;
    x.values = xq.get();
    x.scales = x_scale.get();
    x.sums = x_sum.get();
    x.rows = m;
    x.cols = in;
    x.stride = stride;

    std::vector<Variant> variants;
    for (const TernaryGemvConfig& config : AllTernaryGemvConfigs()) {
      if (config.kind == TernaryGemvConfig::Kind::kDp4a && config.tokens != m) continue;
      // Token-blocked MMA configurations only where a block is at least half full.
      if (config.kind == TernaryGemvConfig::Kind::kMma && m > 64 && config.tokens < 32) continue;
      if (config.kind == TernaryGemvConfig::Kind::kMma && m > 512) continue;
      if (config.kind == TernaryGemvConfig::Kind::kMma && config.tokens >= 2 * m &&
          config.tokens > 8) {
        continue;
      }
      variants.push_back({config.Name(), [&, x, config](int c) {
                            return TernaryGemvWithConfig(config, view(c), x, y.get(), nullptr,
                                                         stream);
                          }});
    }
    for (const TernaryTiledConfig& config :
         m >= 8 ? AllTernaryTiledConfigs() : std::vector<TernaryTiledConfig>{}) {
      variants.push_back({config.Name(), [&, x, config](int c) {
                            return TernaryTiledMatmulWithConfig(
                                config, view(c), x, y.get(), nullptr, stream, tiled_scratch.get());
                          }});
    }
    if (gemm != nullptr && m >= 8) {
      variants.push_back(
          {"gemm_cublaslt", [&, x](int c) { return gemm->Run(view(c), x, y.get(), stream); }});
    }
    // Timed last: the first measurement after a shape's allocation ran up to 15% slow (three runs).
    variants.push_back({"dispatch", [&, x](int c) {
                          return TernaryMatmul(gemm.get(), view(c), x, y.get(), stream);
                        }});

    Row row;
    row.shape = absl::StrCat(shape.model, " ", shape.name, " ", out, "x", in);
    row.m = m;
    row.ternary_bytes = static_cast<double>(packed_bytes) + m * in + m * out * 4.0;
    row.ops = 2.0 * m * out * in;
    row.best_us = 1e30;
    for (const Variant& v : variants) {
      auto us = TimePerCall(v.call, ternary_copies, stream);
      if (!us.ok()) {
        std::printf("  %s M=%ld %s: %s\n", row.shape.c_str(), static_cast<long>(m), v.name.c_str(),
                    us.status().ToString().c_str());
        continue;
      }
      if (csv != nullptr) {
        std::fprintf(csv, "%s,%ld,%ld,%ld,%s,%.3f,%.1f\n", shape.model, static_cast<long>(out),
                     static_cast<long>(in), static_cast<long>(m), v.name.c_str(), *us,
                     row.ternary_bytes / (*us * 1e3));
      }
      if (v.name == "dispatch") {
        row.bitserve_us = *us;
      } else if (*us < row.best_us) {
        row.best_us = *us;
        row.best_variant = v.name;
      }
    }

    const float alpha = 1, beta = 0;
    auto bf16 = TimePerCall(
        [&](int c) -> absl::Status {
          const __nv_bfloat16* w = w_bf16.get() + out * in * (c % bf16_copies);
          BENCH_CUBLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, out, m, in, &alpha, w,
                                    CUDA_R_16BF, in, x_bf16.get(), CUDA_R_16BF, in, &beta,
                                    y_bf16.get(), CUDA_R_16BF, out, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
          return absl::OkStatus();
        },
        bf16_copies, stream);
    if (!bf16.ok()) {
      std::printf("  %s M=%ld cublas bf16: %s\n", row.shape.c_str(), static_cast<long>(m),
                  bf16.status().ToString().c_str());
    }
    row.bf16_us = bf16.ok() ? *bf16 : std::nan("");
    if (csv != nullptr) {
      std::fprintf(csv, "%s,%ld,%ld,%ld,cublas_bf16,%.3f,%.1f\n", shape.model,
                   static_cast<long>(out), static_cast<long>(in), static_cast<long>(m), row.bf16_us,
                   (2.0 * out * in + 2.0 * m * in + 2.0 * m * out) / (row.bf16_us * 1e3));
      std::fflush(csv);
    }
    const double gbs = row.ternary_bytes / (row.bitserve_us * 1e3);
    std::printf(
        "%-34s M=%5ld  bitserve %9.2f us (%5.0f GB/s, %5.1f%% bw, %6.1f TOPS)  "
        "best %-22s %9.2f  bf16 %9.2f us  x%.2f\n",
        row.shape.c_str(), static_cast<long>(m), row.bitserve_us, gbs,
        100.0 * gbs / ceilings.copy_gbs, row.ops / (row.bitserve_us * 1e6),
        row.best_variant.c_str(), row.best_us, row.bf16_us, row.bf16_us / row.bitserve_us);
    std::fflush(stdout);
    rows->push_back(row);
  }
  return absl::OkStatus();
}

// Fused RMSNorm + int8 quantization (one block per token), the op in front of every product.
absl::Status BenchActQuant(cudaStream_t stream) {
  std::printf("\nRMSNorm + int8 quantization (bytes: float in + int8 out):\n");
  for (const int64_t dim : {2560, 8192, 28672}) {
    for (const int64_t m : {1, 64, 4096}) {
      const int64_t stride = PaddedInputs(dim);
      ASSIGN_OR_RETURN(auto x, DeviceBuffer<float>::Create(m * dim));
      ASSIGN_OR_RETURN(auto w, DeviceBuffer<float>::Create(dim));
      ASSIGN_OR_RETURN(auto q, DeviceBuffer<int8_t>::Create(m * stride));
      ASSIGN_OR_RETURN(auto s, DeviceBuffer<float>::Create(m));
      ASSIGN_OR_RETURN(auto sums, DeviceBuffer<int32_t>::Create(m));
      FillFloat<<<kFillBlocks, 256>>>(w.get(), dim, 1.1f);
      FillRandomFloat<<<kFillBlocks, 256>>>(x.get(), m * dim, ++g_seed, 3.0f);
      const Int8ActivationsOut out{q.get(), s.get(), sums.get(), stride};
      ASSIGN_OR_RETURN(const double us, TimePerCall(
                                            [&](int) {
                                              return RmsNormQuantizeActivations(x.get(), w.get(), m,
                                                                                dim, 1e-5f, out,
                                                                                nullptr, stream);
                                            },
                                            1, stream));
      const double bytes = m * dim * 4.0 + m * stride;
      std::printf("  dim %6ld  M=%5ld  %9.2f us  %6.0f GB/s\n", static_cast<long>(dim),
                  static_cast<long>(m), us, bytes / (us * 1e3));
    }
  }
  return absl::OkStatus();
}

absl::Status Main(int argc, char** argv) {
  bool explore = false, products = false;
  std::vector<int64_t> only_tokens;
  FILE* csv = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--explore") == 0) {
      explore = true;
    } else if (std::strcmp(argv[i], "--products") == 0) {
      products = true;
    } else if (std::strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
      for (absl::string_view part : absl::StrSplit(argv[++i], ',')) {
        int64_t m = 0;
        if (!absl::SimpleAtoi(part, &m) || m < 1) {
          return absl::InvalidArgumentError(absl::StrCat("--tokens: bad count '", part, "'"));
        }
        only_tokens.push_back(m);
      }
    } else if (std::strcmp(argv[i], "--csv") == 0 && i + 1 < argc) {
      csv = std::fopen(argv[++i], "w");
      if (csv == nullptr) return absl::InvalidArgumentError(absl::StrCat("cannot write ", argv[i]));
      std::fprintf(csv, "model,out,in,m,variant,us,gbs\n");
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown argument ", argv[i]));
    }
  }
  ASSIGN_OR_RETURN(const DeviceInfo info, QueryDevice(0));
  std::printf("device: %s, %d SMs, L2 %ld MB, sm_%d%d\n", info.name.c_str(), info.multiprocessors,
              static_cast<long>(info.l2_bytes >> 20), info.compute_major, info.compute_minor);
  cudaStream_t stream;
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasHandle_t blas;
  BENCH_CUBLAS(cublasCreate(&blas));
  BENCH_CUBLAS(cublasSetStream(blas, stream));
  // A workspace of our own, so cuBLAS allocates nothing while a graph is being captured.
  ASSIGN_OR_RETURN(auto blas_workspace, DeviceBuffer<uint8_t>::Create(int64_t{64} << 20));
  BENCH_CUBLAS(cublasSetWorkspace(blas, blas_workspace.get(), blas_workspace.bytes()));

  ASSIGN_OR_RETURN(const Ceilings ceilings, MeasureCeilings(blas, stream));
  std::printf(
      "ceilings: copy %.0f GB/s (read+write), streaming read %.0f GB/s, int8 GEMM %.0f "
      "TOPS, bf16 GEMM %.0f TFLOP/s (cuBLAS, 8192^3)\n\n",
      ceilings.copy_gbs, ceilings.read_gbs, ceilings.int8_tops, ceilings.bf16_tflops);

  const std::vector<Shape> shapes = {
      {"2B4T", "qkv-o", 2560, 2560},    {"2B4T", "qkv", 3840, 2560},
      {"2B4T", "gate/up", 13824, 2560}, {"2B4T", "down", 2560, 6912},
      {"70B", "qkv", 10240, 8192},      {"70B", "o", 8192, 8192},
      {"70B", "gate/up", 57344, 8192},  {"70B", "down", 8192, 28672},
  };
  std::vector<Row> rows;
  const std::vector<int64_t> token_counts =
      !only_tokens.empty() ? only_tokens
      : products           ? std::vector<int64_t>{16, 32, 64, 128, 256, 512, 1024, 2048, 4096}
                           : std::vector<int64_t>{1, 8, 64, 512, 4096};
  for (const Shape& s : shapes) {
    RETURN_IF_ERROR(BenchShape(s, token_counts, ceilings, blas, stream, &rows, csv));
  }
  if (explore && !products) {
    std::printf("\nexplore (crossovers):\n");
    std::vector<Row> extra;
    for (const Shape& s : {shapes[2], shapes[5]}) {
      RETURN_IF_ERROR(BenchShape(s, {2, 4, 16, 32, 128, 256}, ceilings, blas, stream, &extra, csv));
    }
  }

  if (!products && only_tokens.empty()) RETURN_IF_ERROR(BenchActQuant(stream));

  std::printf(
      "\n| shape | M | bitserve us | cuBLAS bf16 us | speedup | GB/s | %% of copy bw | "
      "%% of read bw | TOPS | best variant (us) |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
  for (const Row& r : rows) {
    const double gbs = r.ternary_bytes / (r.bitserve_us * 1e3);
    std::printf("| %s | %ld | %.2f | %.2f | %.2fx | %.0f | %.0f%% | %.0f%% | %.1f | %s (%.2f) |\n",
                r.shape.c_str(), static_cast<long>(r.m), r.bitserve_us, r.bf16_us,
                r.bf16_us / r.bitserve_us, gbs, 100.0 * gbs / ceilings.copy_gbs,
                100.0 * gbs / ceilings.read_gbs, r.ops / (r.bitserve_us * 1e6),
                r.best_variant.c_str(), r.best_us);
  }
  if (csv != nullptr) std::fclose(csv);
  cublasDestroy(blas);
  cudaStreamDestroy(stream);
  return absl::OkStatus();
}

}  // namespace
}  // namespace bitserve::cuda

int main(int argc, char** argv) {
  const absl::Status status = bitserve::cuda::Main(argc, argv);
  if (!status.ok()) {
    std::fprintf(stderr, "kernel_benchmark: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
