// bitserve's ternary GEMV beside the official BitNet GPU kernel (microsoft/BitNet
// gpu/bitnet_kernels, `bitlinear_int8xint2`: batch 1, hard-coded shapes) on each of the official
// kernel's shapes, in one run on one GPU, with the same method as kernel_benchmark.cu (random
// data, weights rotated past the L2, CUDA graphs of back-to-back calls, medians).
//
// The official kernel is not part of bitserve and is never committed: build its shared library
// from a fetched copy yourself and pass its path; the benchmark loads it with dlopen. Without a
// library only bitserve's side is timed.
//
// Usage: official_kernel_benchmark [--official PATH/libbitnet.so]
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "bench/cuda/graph_timing.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/common/device_info.cuh"
#include "kernels/cuda/ternary/int8_activations.h"
#include "kernels/cuda/ternary/ternary_gemm.cuh"
#include "kernels/cuda/ternary/ternary_layout.h"

namespace bitserve::cuda {
namespace {

constexpr int64_t kRotationBytes = int64_t{150} << 20;  // 3x the H100's 50 MB L2

// extern "C" void bitlinear_int8xint2(int8_t* input0, int8_t* input1, __nv_bfloat16* output0,
//                                     __nv_bfloat16* s, __nv_bfloat16* ws, int M, int N, int K,
//                                     cudaStream_t stream)  (gpu/bitnet_kernels/bitnet_kernels.cu)
using OfficialFn = void (*)(int8_t*, int8_t*, __nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, int,
                            int, int, cudaStream_t);

// The shapes the official kernel is compiled for (N outputs x K inputs), all at M = 1.
struct Shape {
  int n, k;
};
constexpr Shape kShapes[] = {{3840, 2560},  {2560, 2560}, {13824, 2560}, {2560, 6912},
                             {4800, 3200},  {3200, 3200}, {20480, 3200}, {3200, 10240},
                             {5120, 27648}, {55296, 5120}};

absl::Status Main(int argc, char** argv) {
  std::string official_path;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--official") == 0 && i + 1 < argc) {
      official_path = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown argument ", argv[i]));
    }
  }
  OfficialFn official = nullptr;
  if (!official_path.empty()) {
    void* lib = dlopen(official_path.c_str(), RTLD_NOW);
    if (lib == nullptr)
      return absl::NotFoundError(absl::StrCat("dlopen ", official_path, ": ", dlerror()));
    official = reinterpret_cast<OfficialFn>(dlsym(lib, "bitlinear_int8xint2"));
    if (official == nullptr) {
      return absl::NotFoundError(absl::StrCat(official_path, " has no bitlinear_int8xint2"));
    }
  }
  ASSIGN_OR_RETURN(const DeviceInfo info, QueryDevice(0));
  std::printf("device: %s; official kernel: %s\n", info.name.c_str(),
              official ? official_path.c_str() : "(not given)");
  cudaStream_t stream;
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  std::printf("%-12s %12s %12s %9s %16s\n", "N x K", "bitserve us", "official us", "speedup",
              "bitserve GB/s");
  for (const Shape& shape : kShapes) {
    const int64_t out = shape.n, in = shape.k;
    // bitserve: its own packed layout (kernels/cuda/ternary/ternary_layout.h), int8 activations.
    TernaryMatrixView base;
    base.rows = out;
    base.cols = in;
    base.padded_rows = PaddedRows(out);
    base.padded_cols = PaddedInputs(in);
    base.scale.value = 0.8f;
    const int64_t packed_bytes = base.bytes();
    const int copies =
        static_cast<int>(std::clamp<int64_t>(kRotationBytes / packed_bytes + 1, 1, 64));
    ASSIGN_OR_RETURN(auto packed, DeviceBuffer<uint32_t>::Create(packed_bytes / 4 * copies));
    FillTernaryWords<<<kFillBlocks, 256>>>(packed.get(), packed.size(), ++g_seed);
    ASSIGN_OR_RETURN(auto xq, DeviceBuffer<int8_t>::Create(base.padded_cols));
    RETURN_IF_ERROR(RandomWords(xq.get(), xq.bytes()));
    ASSIGN_OR_RETURN(auto x_scale, DeviceBuffer<float>::Create(1));
    ASSIGN_OR_RETURN(auto x_sum, DeviceBuffer<int32_t>::Create(1));
    RETURN_IF_ERROR(x_sum.FillBytes(0));
    RETURN_IF_ERROR(x_scale.FillBytes(0x42));
    ASSIGN_OR_RETURN(auto y, DeviceBuffer<float>::Create(out));
    Int8Activations x;
    x.values = xq.get();
    x.scales = x_scale.get();
    x.sums = x_sum.get();
    x.rows = 1;
    x.cols = in;
    x.stride = base.padded_cols;
    ASSIGN_OR_RETURN(const double ours, TimePerCall(
                                            [&](int c) {
                                              TernaryMatrixView v = base;
                                              v.words =
                                                  packed.get() + (packed_bytes / 4) * (c % copies);
                                              return TernaryMatmul(nullptr, v, x, y.get(), stream);
                                            },
                                            copies, stream));
    double theirs = 0;
    if (official != nullptr) {
      // The official layout: N*K/4 bytes of 2-bit codes; inputs int8, outputs bf16, bf16 scales.
      const int64_t official_bytes = out * in / 4;
      const int official_copies =
          static_cast<int>(std::clamp<int64_t>(kRotationBytes / official_bytes + 1, 1, 64));
      ASSIGN_OR_RETURN(auto weights,
                       DeviceBuffer<uint32_t>::Create(official_bytes / 4 * official_copies));
      FillTernaryWords<<<kFillBlocks, 256>>>(weights.get(), weights.size(), ++g_seed);
      ASSIGN_OR_RETURN(auto input, DeviceBuffer<int8_t>::Create(in));
      RETURN_IF_ERROR(RandomWords(input.get(), input.bytes()));
      ASSIGN_OR_RETURN(auto output, DeviceBuffer<__nv_bfloat16>::Create(out));
      ASSIGN_OR_RETURN(auto s, DeviceBuffer<__nv_bfloat16>::Create(1));
      ASSIGN_OR_RETURN(auto ws, DeviceBuffer<__nv_bfloat16>::Create(8));
      RETURN_IF_ERROR(s.FillBytes(0x3f));
      RETURN_IF_ERROR(ws.FillBytes(0x3f));
      BITSERVE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
      ASSIGN_OR_RETURN(theirs, TimePerCall(
                                   [&](int c) -> absl::Status {
                                     int8_t* w = reinterpret_cast<int8_t*>(weights.get()) +
                                                 official_bytes * (c % official_copies);
                                     official(input.get(), w, output.get(), s.get(), ws.get(), 1,
                                              static_cast<int>(out), static_cast<int>(in), stream);
                                     BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
                                     return absl::OkStatus();
                                   },
                                   official_copies, stream));
    }
    const double bytes = static_cast<double>(packed_bytes) + in + 4.0 * out;
    std::printf("%-12s %12.2f %12.2f %8.2fx %16.0f\n", absl::StrCat(out, "x", in).c_str(), ours,
                theirs, theirs > 0 ? theirs / ours : 0.0, bytes / (ours * 1e3));
    std::fflush(stdout);
  }
  cudaStreamDestroy(stream);
  return absl::OkStatus();
}

}  // namespace
}  // namespace bitserve::cuda

int main(int argc, char** argv) {
  const absl::Status status = bitserve::cuda::Main(argc, argv);
  if (!status.ok()) {
    std::fprintf(stderr, "official_kernel_benchmark: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
