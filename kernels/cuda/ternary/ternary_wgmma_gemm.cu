// The tiled ternary product on Hopper's warpgroup MMA (wgmma, sm_90a only; see
// ternary_tiled_gemm.cuh for the kernel family and ternary_tiled_internal.cuh for the launch).
//
// A block is `warpgroups` x 64 output rows by kN tokens. Per k-tile (128 inputs) each warp unpacks
// its 16-row weight tile from shared memory into the register A fragments of four k32-steps
// (ternary_layout.h: the lane's uint4 is its fragment, with the k axis permuted inside each
// 32-step), and its warpgroup issues four wgmma.m64nNk32 with B = the tokens' activations in
// shared memory. Because A's k order is permuted, B's must be too: PermuteActivationsForWgmma
// first writes a copy of the activations in which word w = 16c + 4t + 2h + q of each token's
// k-tile (inputs 64c + 16t + 8h + 4q ..) is word t of 16-byte chunk 4c + 2h + q; the kernel then
// copies 16-byte chunks into the no-swizzle K-major layout wgmma reads: core matrices of 8 tokens
// x 16 bytes, kChunkStride bytes apart along k (LBO) and kGroupStride apart along the tokens
// (SBO). kChunkStride = 144 rather than 128 puts the eight chunks of a token in different banks,
// so each quarter-warp's copies (one token's 8 chunks) never conflict.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/common/cp_async.cuh"
#include "kernels/cuda/ternary/ternary_kernel_common.cuh"
#include "kernels/cuda/ternary/ternary_tiled_internal.cuh"

namespace bitserve::cuda::internal {
namespace {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || !defined(__CUDA_ARCH__)
#define BITSERVE_WGMMA_BODY 1
#else
#define BITSERVE_WGMMA_BODY 0
#endif

constexpr int kChunkStride = 144;               // bytes between k-adjacent core matrices (LBO)
constexpr int kGroupStride = 8 * kChunkStride;  // bytes between 8-token groups (SBO)

template <int kN>
__device__ __forceinline__ void WgmmaS8(int (&d)[kN / 2], const uint32_t (&a)[4], uint64_t b);

template <>
__device__ __forceinline__ void WgmmaS8<64>(int (&d)[32], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
      "}, {%32, %33, %34, %35}, %36, p;\n}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]),
        "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]),
        "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]),
        "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]),
        "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}

template <>
__device__ __forceinline__ void WgmmaS8<128>(int (&d)[64], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"
      "}, {%64, %65, %66, %67}, %68, p;\n}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]),
        "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]),
        "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]),
        "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]),
        "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]),
        "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]),
        "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]),
        "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]),
        "+r"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}

// Shared-memory matrix descriptor, no swizzle (ternary_tiled_internal.cuh names the fields).
__device__ __forceinline__ uint64_t SmemDescriptor(const void* p) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  return static_cast<uint64_t>((address & 0x3ffff) >> 4) |
         static_cast<uint64_t>(kChunkStride >> 4) << 16 |
         static_cast<uint64_t>(kGroupStride >> 4) << 32;
}

// out chunk q' = 4c + 2h + q of each token's k-tile, word t  <-  x word 16c + 4t + 2h + q.
__global__ void PermuteForWgmmaKernel(const int8_t* __restrict__ x, int64_t stride, int m,
                                      int k_tiles, int8_t* __restrict__ out) {
  const int64_t total = static_cast<int64_t>(m) * k_tiles * 8;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int chunk = static_cast<int>(i & 7);
    const int64_t tile = i >> 3;
    const int token = static_cast<int>(tile / k_tiles), kt = static_cast<int>(tile % k_tiles);
    const int c = chunk >> 2, h = (chunk >> 1) & 1, q = chunk & 1;
    const int64_t base = static_cast<int64_t>(token) * stride + static_cast<int64_t>(kt) * 128;
    const uint32_t* src = reinterpret_cast<const uint32_t*>(x + base);
    uint4 v;
    v.x = src[16 * c + 0 + 2 * h + q];
    v.y = src[16 * c + 4 + 2 * h + q];
    v.z = src[16 * c + 8 + 2 * h + q];
    v.w = src[16 * c + 12 + 2 * h + q];
    *reinterpret_cast<uint4*>(out + base + chunk * 16) = v;
  }
}

template <int kWG, int kN, int kStages>
struct WgmmaShape {
  static constexpr int kThreads = kWG * 128;
  static constexpr int kBlockRowTiles = kWG * 4;
  static constexpr int kWeightBytes = kBlockRowTiles * 512;
  static constexpr int kStageBytes = kWeightBytes + (kN / 8) * kGroupStride;
  // Two mbarriers per stage (full, empty) after the stages.
  static constexpr int kSharedBytes = kStages * kStageBytes + 2 * kStages * 8;
};

__device__ __forceinline__ void MbarrierInit(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(SharedAddress(bar)), "r"(count));
}
__device__ __forceinline__ void MbarrierArrive(uint64_t* bar) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}" ::"r"(
                   SharedAddress(bar))
               : "memory");
}
// Arrives on `bar` once all of this thread's earlier cp.async copies have landed (the arrival
// counts toward the barrier's expected count: no pending-count increment).
__device__ __forceinline__ void CpAsyncArriveOn(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(SharedAddress(bar))
               : "memory");
}
// Waits until the phase with this parity has completed.
__device__ __forceinline__ void MbarrierWait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(SharedAddress(bar)), "r"(parity)
        : "memory");
  } while (done == 0);
}

template <int kWG, int kN, int kStages, int kMinBlocks>
__global__ void __launch_bounds__(kWG * 128, kMinBlocks) TernaryWgmmaKernel(TernaryProductArgs a) {
#if BITSERVE_WGMMA_BODY
  using S = WgmmaShape<kWG, kN, kStages>;
  extern __shared__ __align__(128) uint8_t smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int token0 = blockIdx.x * kN;
  const int tile0 = blockIdx.y * S::kBlockRowTiles;

  // Weights: one 16-byte chunk per thread and k-tile.
  const bool w_ok = tile0 + warp < a.row_tiles;  // else zero-filled
  const uint8_t* w_src =
      reinterpret_cast<const uint8_t*>(a.w) +
      static_cast<int64_t>(min(tile0 + warp, a.row_tiles - 1)) * a.k_tiles * 512 + lane * 16;
  // Activations (already permuted): 16-byte chunks, kN tokens x 8 per k-tile; chunk i of this
  // thread is token i / 8, chunk i % 8 (tokens past m are zero-filled, never stored).
  constexpr int kChunksPerThread = kN * 8 / S::kThreads;
  static_assert(kN * 8 % S::kThreads == 0);
  const int8_t* x_row[kChunksPerThread];
  int x_dst[kChunksPerThread];
  bool x_ok[kChunksPerThread];
#pragma unroll
  for (int i = 0; i < kChunksPerThread; ++i) {
    const int chunk = threadIdx.x + i * S::kThreads;
    const int n = chunk >> 3, c = chunk & 7;
    x_ok[i] = token0 + n < a.m;
    x_row[i] = a.x + static_cast<int64_t>(min(token0 + n, a.m - 1)) * a.x_stride + c * 16;
    x_dst[i] = S::kWeightBytes + (n >> 3) * kGroupStride + c * kChunkStride + (n & 7) * 16;
  }
  auto load_stage = [&](int kt) {
    uint8_t* stage = smem + (kt % kStages) * S::kStageBytes;
    CpAsync16(stage + threadIdx.x * 16, w_src + static_cast<int64_t>(kt) * 512, w_ok ? 16 : 0);
#pragma unroll
    for (int i = 0; i < kChunksPerThread; ++i) {
      CpAsync16(stage + x_dst[i], x_row[i] + static_cast<int64_t>(kt) * 128, x_ok[i] ? 16 : 0);
    }
  };

  int acc[kN / 2];
#pragma unroll
  for (int i = 0; i < kN / 2; ++i) acc[i] = 0;

  // Stage kt % kStages is "full" once every thread's copies of k-tile kt have landed (each
  // thread's cp.async.mbarrier.arrive fires when its own copies complete) and "empty" once every
  // warp's MMAs on it are done. Warpgroups synchronize only through these, so one unpacks or
  // waits while another's MMAs run; a block-wide barrier per k-tile would line them up.
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * S::kStageBytes);
  uint64_t* empty = full + kStages;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      MbarrierInit(&full[s], S::kThreads);
      MbarrierInit(&empty[s], S::kThreads / 32);
    }
  }
  __syncthreads();
  auto produce = [&](int kt) {
    load_stage(kt);
    CpAsyncArriveOn(&full[kt % kStages]);
  };

  for (int s = 0; s < kStages - 1 && s < a.k_tiles; ++s) produce(s);
  for (int kt = 0; kt < a.k_tiles; ++kt) {
    const int slot = kt % kStages;
    MbarrierWait(&full[slot], (kt / kStages) & 1);
    // Everyone's copies are visible to this thread; order them before its tensor-core reads.
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");

    const uint8_t* stage = smem + slot * S::kStageBytes;
    const uint4 wv = *reinterpret_cast<const uint4*>(stage + warp * 512 + lane * 16);
    uint32_t af[4][4];
    UnpackFragments(wv, af);
    const uint8_t* xs = stage + S::kWeightBytes;
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
    for (int step = 0; step < 4; ++step) {
      WgmmaS8<kN>(acc, af[step], SmemDescriptor(xs + 2 * step * kChunkStride));
    }
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    // While they run: refill the stage of k-tile kt - 1 once every warp is done with it.
    if (kt + kStages - 1 < a.k_tiles) {
      if (kt >= 1) MbarrierWait(&empty[(kt - 1) % kStages], ((kt - 1) / kStages) & 1);
      produce(kt + kStages - 1);
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    __syncwarp();
    if (lane == 0) MbarrierArrive(&empty[slot]);
  }
  CpAsyncWait<0>();

  // Accumulators: acc[4j + i] = row g (+8 for i >= 2) of this warp's 16, token 8j + 2t + (i & 1).
  const int row_base = (tile0 + warp) * 16 + g;
#pragma unroll
  for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
    for (int col = 0; col < 2; ++col) {
      const int token = token0 + 8 * j + 2 * t + col;
      if (token >= a.m) continue;
      const int x_sum = a.x_sum[token];
      const float x_scale = a.acc == nullptr ? a.x_scale[token] : 0.0f;
      const int64_t out_row = static_cast<int64_t>(token) * a.rows;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = row_base + 8 * half;
        if (row >= a.rows) continue;
        // Codes are w + 1.
        StoreProduct(a, out_row + row, acc[4 * j + 2 * half + col] - x_sum, x_scale);
      }
    }
  }
#else
  __trap();
#endif
}

template <int kWG, int kN, int kStages, int kMinBlocks>
cudaError_t Launch(const TernaryProductArgs& a, cudaStream_t stream) {
  using S = WgmmaShape<kWG, kN, kStages>;
  auto* kernel = &TernaryWgmmaKernel<kWG, kN, kStages, kMinBlocks>;
  static const cudaError_t attribute =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::kSharedBytes);
  if (attribute != cudaSuccess) return attribute;
  const dim3 grid((a.m + kN - 1) / kN, (a.row_tiles + S::kBlockRowTiles - 1) / S::kBlockRowTiles);
  kernel<<<grid, S::kThreads, S::kSharedBytes, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

bool WgmmaCompiled() { return true; }

cudaError_t PermuteActivationsForWgmma(const int8_t* x, int64_t stride, int m, int k_tiles,
                                       int8_t* out, cudaStream_t stream) {
  const int64_t chunks = static_cast<int64_t>(m) * k_tiles * 8;
  const int blocks = static_cast<int>(std::min<int64_t>((chunks + 255) / 256, 132 * 8));
  PermuteForWgmmaKernel<<<blocks, 256, 0, stream>>>(x, stride, m, k_tiles, out);
  return cudaGetLastError();
}

cudaError_t LaunchTernaryWgmma(int warpgroups, int tokens, int stages, int min_blocks,
                               const TernaryProductArgs& a, cudaStream_t stream) {
  if (warpgroups == 4 && tokens == 128 && stages == 4 && min_blocks == 1) {
    return Launch<4, 128, 4, 1>(a, stream);
  }
  if (warpgroups == 4 && tokens == 64 && stages == 4 && min_blocks == 1) {
    return Launch<4, 64, 4, 1>(a, stream);
  }
  if (warpgroups == 2 && tokens == 64 && stages == 4 && min_blocks == 2) {
    return Launch<2, 64, 4, 2>(a, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace bitserve::cuda::internal
