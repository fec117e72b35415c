// For the few headers whose functions run on the CPU and in CUDA kernels alike (the byte formats of
// kernels/kv_cache_format.h, the sampling maths of kernels/sampling_math.h): one definition, so the
// GPU computes exactly what the CPU reference computes.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define BITSERVE_HOST_DEVICE __host__ __device__
#else
#define BITSERVE_HOST_DEVICE
#endif

namespace bitserve {

BITSERVE_HOST_DEVICE inline uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  return u;
#endif
}

BITSERVE_HOST_DEVICE inline float BitsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
#endif
}

// Float arithmetic rounded once per operation, never fused into an FMA: nvcc contracts a*b+c by
// default, the host compiler does not on x86-64 without -mfma. Code that must agree bit for bit
// on both sides spells its operations with these.
BITSERVE_HOST_DEVICE inline float MulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
BITSERVE_HOST_DEVICE inline float AddRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
BITSERVE_HOST_DEVICE inline float SubRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
BITSERVE_HOST_DEVICE inline float DivRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

}  // namespace bitserve
