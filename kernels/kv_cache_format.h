// The element formats of the paged KV cache (DESIGN.md "KV cache"), written once for every backend:
// the CPU reference (kernels/cpu/kv_quant.h, runtime/paged_kv_cache.h) and the CUDA kernels
// (kernels/cuda/attention/paged_attention.cuh) include this header and call these functions, so
// both store the same bytes for the same float keys and values (kernels/cuda/op_test.cu checks it
// bit for bit).
//
// Unit of quantization: one (token, KV head) row of head_dim floats x[0 .. head_dim).
//
//   kF32   4 bytes per element, the float itself (CPU only: the reference).
//   kBf16  2 bytes per element, round to nearest even (kernels/bf16.h).
//   kInt8  1 byte per element (two's complement) + one fp16 `scale`, symmetric:
//            scale = fp16_rne(min(max_i |x_i| / 127, 65504))
//            q_i   = clamp(round_half_even(x_i / scale), -127, 127)     (q_i = 0 when scale == 0)
//            x_i  ~= q_i * scale
//   kInt4  half a byte per element + fp16 `scale` and fp16 `zero`, asymmetric, q in [0, 15]:
//            zero  = fp16_round_down(max(min_i x_i, -65504))   (so that x_i - zero >= 0)
//            scale = fp16_rne(min((max_i x_i - zero) / 15, 65504))
//            q_i   = clamp(round_half_even((x_i - zero) / scale), 0, 15) (q_i = 0 when scale == 0)
//            x_i  ~= q_i * scale + zero
//          Nibble order: element 2j in the low nibble (bits 0-3) of byte j, element 2j + 1 in the
//          high nibble (bits 4-7); read as a little-endian 32-bit word, element i is bits 4i..4i+3.
//
// Every operation above is one IEEE float32 operation rounded to nearest (the divisions are
// correctly rounded on both sides: __fdiv_rn on the device), the maxima and minima are exact, and
// the fp16 conversions are done by the integer code below, so host and device agree bit for bit.
// Rounding `zero` down (not to nearest) keeps x - zero >= 0: a zero rounded up would push the row's
// minimum below 0, and one rounded far down (large |min|, small range) would be absorbed by the
// scale, which is computed from max - zero for that reason. Dequantization is exact except for the
// int4 `+ zero`: q * scale has at most 8 + 11 significant bits (int8) or 4 + 11 (int4), so it is
// exact in float32, and a fused multiply-add rounds exactly like the separate multiply and add.
// Rows with max |x| below ~1e-3 get subnormal fp16 scales (fewer significant bits); keys and
// values of real models are O(1) to O(100). Values beyond +-65504 saturate.
//
// Per-token parameters ("params"): uint16 fp16 bit patterns, 1 per (token, KV head) for int8
// (scale), 2 for int4 (scale, then zero).
//
// Layout of one token's row of all KV heads, shared by both backends (how rows are grouped into
// blocks and planes is each cache's own: runtime/paged_kv_cache.h and
// kernels/cuda/attention/paged_attention.cuh):
//   data:   [num_kv_heads][KvHeadBytes(dtype, head_dim)] bytes
//   params: [num_kv_heads][KvParamHalves(dtype)] uint16
#pragma once

#include <cmath>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/host_device.h"

namespace bitserve {

enum class KvDtype : int { kF32 = 0, kBf16 = 1, kInt8 = 2, kInt4 = 3 };

// "f32", "bf16", "int8", "int4" ("invalid" for a value outside the enum).
const char* KvDtypeName(KvDtype dtype);
// The inverse of KvDtypeName; anything else is InvalidArgument naming the accepted values.
absl::StatusOr<KvDtype> ParseKvDtype(absl::string_view name);

// What the cached keys are (and the queries that read them): RoPE'd as the model computes them
// (kNone), or then rotated per head by kernels/cpu/hadamard.h's orthonormal Walsh-Hadamard
// transform (kHadamard), which keeps q . k and spreads outlier key channels over the head before
// int8 / int4 quantization. Values are never rotated. A cache written one way cannot be read the
// other way, so the rotation is fixed for an engine's lifetime, like the dtype.
enum class KvRotation : int { kNone = 0, kHadamard = 1 };

// "none", "hadamard" ("invalid" for a value outside the enum).
const char* KvRotationName(KvRotation rotation);
// The inverse of KvRotationName; anything else is InvalidArgument naming the accepted values.
absl::StatusOr<KvRotation> ParseKvRotation(absl::string_view name);
// kHadamard for the quantized dtypes (int8, int4), kNone for f32 and bf16 (nothing to gain).
KvRotation DefaultKvRotation(KvDtype dtype);

// Bytes of one (token, KV head) row's data; head_dim must be even for kInt4.
BITSERVE_HOST_DEVICE constexpr int64_t KvHeadBytes(KvDtype dtype, int64_t head_dim) {
  switch (dtype) {
    case KvDtype::kF32:
      return 4 * head_dim;
    case KvDtype::kBf16:
      return 2 * head_dim;
    case KvDtype::kInt8:
      return head_dim;
    case KvDtype::kInt4:
      return head_dim / 2;
  }
  return 0;
}

// fp16 values of one (token, KV head) row's params.
BITSERVE_HOST_DEVICE constexpr int KvParamHalves(KvDtype dtype) {
  return dtype == KvDtype::kInt8 ? 1 : (dtype == KvDtype::kInt4 ? 2 : 0);
}

// ---- fp16 <-> float32, by integer operations (identical on host and device) ----

// IEEE binary16, round to nearest even, subnormals kept; overflow gives infinity (callers clamp
// first), NaN stays NaN.
BITSERVE_HOST_DEVICE inline uint16_t KvFloatToHalfRne(float f) {
  const uint32_t u = FloatBits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520
  if (abs >= 0x38800000u) {  // normal fp16 (>= 2^-14): drop 13 mantissa bits, ties to even
    const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
  }
  if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // below half the least subnormal
  // Subnormal fp16: value = m * 2^-24 with m = mantissa (with its implicit 1) >> shift.
  const uint32_t exponent = abs >> 23;  // 102 .. 112
  const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - exponent;  // 14 .. 24
  uint32_t m = mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (m & 1u))) ++m;
  return static_cast<uint16_t>(sign | m);
}

BITSERVE_HOST_DEVICE inline float KvHalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0x1fu) return BitsFloat(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) return BitsFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  // Subnormal (or zero): mantissa * 2^-24, exact in float32.
  const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
  return sign != 0 ? -magnitude : magnitude;
}

// The largest fp16 value <= f (f finite and within +-65504).
BITSERVE_HOST_DEVICE inline uint16_t KvFloatToHalfDown(float f) {
  uint16_t h = KvFloatToHalfRne(f);
  if (KvHalfToFloat(h) > f) {
    if (h == 0x0000u) return 0x8001u;          // +0 -> the negative least subnormal
    h = (h & 0x8000u) != 0 ? h + 1u : h - 1u;  // one ulp toward -infinity
  }
  return h;
}

BITSERVE_HOST_DEVICE inline float KvDivide(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

BITSERVE_HOST_DEVICE inline float KvSubtract(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

// ---- int8 ----

constexpr float kKvHalfMax = 65504.0f;

BITSERVE_HOST_DEVICE inline uint16_t KvInt8Scale(float abs_max) {
  return KvFloatToHalfRne(fminf(KvDivide(abs_max, 127.0f), kKvHalfMax));
}

BITSERVE_HOST_DEVICE inline int8_t KvInt8Quantize(float x, float scale) {
  if (scale == 0.0f) return 0;
  const float q = rintf(KvDivide(x, scale));  // round half to even (the default rounding mode)
  return static_cast<int8_t>(fminf(fmaxf(q, -127.0f), 127.0f));
}

BITSERVE_HOST_DEVICE inline float KvInt8Dequantize(int q, float scale) {
  return static_cast<float>(q) * scale;
}

// ---- int4 ----

BITSERVE_HOST_DEVICE inline uint16_t KvInt4Zero(float min_x) {
  return KvFloatToHalfDown(fmaxf(min_x, -kKvHalfMax));
}

BITSERVE_HOST_DEVICE inline uint16_t KvInt4Scale(float max_x, float zero) {
  return KvFloatToHalfRne(fminf(KvDivide(KvSubtract(max_x, zero), 15.0f), kKvHalfMax));
}

BITSERVE_HOST_DEVICE inline uint32_t KvInt4Quantize(float x, float scale, float zero) {
  if (scale == 0.0f) return 0;
  const float q = rintf(KvDivide(KvSubtract(x, zero), scale));
  return static_cast<uint32_t>(fminf(fmaxf(q, 0.0f), 15.0f));
}

BITSERVE_HOST_DEVICE inline float KvInt4Dequantize(uint32_t q, float scale, float zero) {
  return static_cast<float>(q) * scale + zero;
}

}  // namespace bitserve
