// What the ternary kernels share (ternary_gemv.cu, ternary_gemm.cu, ternary_tiled_gemm.cu,
// ternary_wgmma_gemm.cu): their launch arguments, the loads, the unpacking of ternary_layout.h
// words, the int8 MMA and the epilogue.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/common/pdl.cuh"
#include "kernels/cuda/ternary/int8_activations.h"
#include "kernels/cuda/ternary/ternary_gemv.cuh"

namespace bitserve::cuda::internal {

// One ternary product's operands, as every product kernel takes them.
struct TernaryProductArgs {
  const uint4* w;  // packed tiles, ternary_layout.h order
  int k_tiles, row_tiles, rows;
  const int8_t* x;
  int64_t x_stride;
  const int32_t* x_sum;
  const float* x_scale;
  int m;
  int scale_mode;
  float scale_value;
  float* y;      // float output, or
  int32_t* acc;  // int32 output
};

inline TernaryProductArgs MakeTernaryProductArgs(const TernaryMatrixView& w,
                                                 const Int8Activations& x, float* y, int32_t* acc) {
  TernaryProductArgs a;
  a.w = reinterpret_cast<const uint4*>(w.words);
  a.k_tiles = static_cast<int>(w.k_tiles());
  a.row_tiles = static_cast<int>(w.row_tiles());
  a.rows = static_cast<int>(w.rows);
  a.x = x.values;
  a.x_stride = x.stride;
  a.x_sum = x.sums;
  a.x_scale = x.scales;
  a.m = static_cast<int>(x.rows);
  a.scale_mode = static_cast<int>(w.scale.mode);
  a.scale_value = w.scale.value;
  a.y = y;
  a.acc = acc;
  return a;
}

inline constexpr uint32_t kCodeMask = 0x03030303u;

// Weights are streamed once: bypass L1 so it keeps the activations that every row tile re-reads.
__device__ __forceinline__ uint4 LoadWeightsStreaming(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ uint4 LoadActivations(const int8_t* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// acc += sum over the 16 inputs of `word` of code * x (x: the 16 matching int8 activations).
__device__ __forceinline__ int Dot16(uint32_t word, uint4 x, int acc) {
  acc = __dp4a(static_cast<int>(word & kCodeMask), static_cast<int>(x.x), acc);
  acc = __dp4a(static_cast<int>((word >> 2) & kCodeMask), static_cast<int>(x.y), acc);
  acc = __dp4a(static_cast<int>((word >> 4) & kCodeMask), static_cast<int>(x.z), acc);
  acc = __dp4a(static_cast<int>((word >> 6) & kCodeMask), static_cast<int>(x.w), acc);
  return acc;
}

// D += A * B for one m16n8k32 int8 tile (A: 16 rows of codes, B: 8 tokens), int32 accumulate.
__device__ __forceinline__ void MmaS8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                      uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The A fragments of the four k32-steps a lane's uint4 covers (ternary_layout.h: step 2c+h uses
// words .x/.y (c = 0) or .z/.w (c = 1), codes j = 2h and 2h+1).
__device__ __forceinline__ void UnpackFragments(uint4 w, uint32_t (&a)[4][4]) {
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    const uint32_t lo = c == 0 ? w.x : w.z;  // row g
    const uint32_t hi = c == 0 ? w.y : w.w;  // row g + 8
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      a[2 * c + h][0] = (lo >> (4 * h)) & kCodeMask;
      a[2 * c + h][1] = (hi >> (4 * h)) & kCodeMask;
      a[2 * c + h][2] = (lo >> (4 * h + 2)) & kCodeMask;
      a[2 * c + h][3] = (hi >> (4 * h + 2)) & kCodeMask;
    }
  }
}

// cpu::TernaryMatmul's epilogue, with every rounding explicit so nvcc cannot fuse or reorder:
//   mode 0: acc / xs * v      mode 1: acc / (xs * v)
__device__ __forceinline__ float ScaleOutput(int acc, float x_scale, int mode, float value) {
  const float a = __int2float_rn(acc);
  return mode == 0 ? __fmul_rn(__fdiv_rn(a, x_scale), value)
                   : __fdiv_rn(a, __fmul_rn(x_scale, value));
}

// Output element `index` ([token, row] of [m, rows]) from the exact sum `dot` (code sum minus the
// token's activation sum): the int32 itself, or the float epilogue with the token's scale.
__device__ __forceinline__ void StoreProduct(const TernaryProductArgs& a, int64_t index, int dot,
                                             float x_scale) {
  if (a.acc != nullptr) {
    a.acc[index] = dot;
  } else {
    a.y[index] = ScaleOutput(dot, x_scale, a.scale_mode, a.scale_value);
  }
}

// A grouped product's work list and per-expert operands (device pointers). Unused by plain
// products (passed zeroed).
struct ExpertGroupsArgs {
  const int4* items = nullptr;                 // {expert, first grouped row, rows, 0}
  const int* num_items = nullptr;              // items of this run (<= gridDim.z)
  int64_t expert_uint4s = 0;                   // uint4s from one expert's matrix to the next
  const TernaryOutputScale* scales = nullptr;  // per expert; null: the args' scale
  const int32_t* source_rows = nullptr;  // activation row of each grouped row; null: the same row
};

// A grouped product (ternary_grouped_gemv.cuh): block z takes work item z, rows
// [row_begin, row_begin + rows) of the grouped rows times its expert's matrix. Rebases `a` on the
// item (weights, output rows, token count, the expert's scale) and returns its first grouped row,
// or -1 when z is past the items of this run. Reads what earlier kernels wrote, so it waits first.
__device__ __forceinline__ int ResolveGroupItem(const ExpertGroupsArgs& g, TernaryProductArgs& a) {
  WaitForPrerequisites();
  if (static_cast<int>(blockIdx.z) >= *g.num_items) return -1;
  const int4 item = g.items[blockIdx.z];  // {expert, row_begin, rows, 0}
  a.w += static_cast<int64_t>(item.x) * g.expert_uint4s;
  a.m = item.z;
  if (g.scales != nullptr) {
    a.scale_mode = static_cast<int>(g.scales[item.x].mode);
    a.scale_value = g.scales[item.x].value;
  }
  if (a.y != nullptr) a.y += static_cast<int64_t>(item.y) * a.rows;
  if (a.acc != nullptr) a.acc += static_cast<int64_t>(item.y) * a.rows;
  return item.y;
}

// The activation row of local token `token` (grouped: through source_rows when given).
template <bool kGrouped>
__device__ __forceinline__ int SourceRow(const ExpertGroupsArgs& g, int first, int token) {
  if constexpr (kGrouped) {
    return g.source_rows != nullptr ? g.source_rows[first + token] : first + token;
  } else {
    return token;
  }
}

}  // namespace bitserve::cuda::internal
