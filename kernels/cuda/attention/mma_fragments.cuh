// mma.sync m16n8k16 with fp32 accumulators, and the hi + lo splits that keep ~16 (bf16) or ~22
// (fp16) significant bits of an fp32 operand across two MMAs: shared by the tensor-core attention
// kernels (paged_attention_prefill.cu, paged_attention_decode_mma.cu).
//
// Fragment layouts (PTX ISA, mma.m16n8k16): lane = 4 g + t; A regs: (row g | g+8) x (cols 2t,
// 2t+1 | 2t+8, 2t+9); B regs: k rows 2t, 2t+1 | 2t+8, 2t+9 at column g; C: rows g | g+8, columns
// 2t, 2t+1. A packed pair puts its first element in the low 16 bits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace bitserve::cuda::attention_mma {

// c += a (16x16, row) * b (16x8, col); bf16 inputs.
__device__ __forceinline__ void MmaBf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The same with fp16 inputs.
__device__ __forceinline__ void MmaF16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                       uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t Bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ uint32_t Bits(__nv_bfloat162 h) {
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ __half2 AsHalf2(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }
__device__ __forceinline__ __nv_bfloat162 AsBf162(uint32_t u) {
  return *reinterpret_cast<__nv_bfloat162*>(&u);
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  return Bits(__floats2bfloat162_rn(lo, hi));
}

// x = hi + lo with hi = bf16(x), lo = bf16(x - hi): ~16 significant bits, fp32's exponent range.
__device__ __forceinline__ void SplitBf16(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x0, x1);
  hi = Bits(h);
  lo = PackBf16(x0 - __low2float(h), x1 - __high2float(h));
}

// x = hi + lo in fp16: ~22 significant bits while both halves stay normal (|x| well inside
// fp16's range; the caller scales).
__device__ __forceinline__ void SplitHalf(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  const __half2 h = __floats2half2_rn(x0, x1);
  hi = Bits(h);
  lo = Bits(__floats2half2_rn(x0 - __low2float(h), x1 - __high2float(h)));
}

}  // namespace bitserve::cuda::attention_mma
