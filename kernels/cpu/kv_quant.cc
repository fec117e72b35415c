#include "kernels/cpu/kv_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/bf16.h"

namespace bitserve::cpu {

void QuantizeKvRow(KvDtype dtype, const float* x, int64_t kv_heads, int64_t head_dim, uint8_t* data,
                   uint16_t* params) {
  const int64_t head_bytes = KvHeadBytes(dtype, head_dim);
  for (int64_t h = 0; h < kv_heads; ++h) {
    const float* xh = x + h * head_dim;
    uint8_t* d = data + h * head_bytes;
    switch (dtype) {
      case KvDtype::kF32:
        std::memcpy(d, xh, head_dim * sizeof(float));
        break;
      case KvDtype::kBf16:
        for (int64_t i = 0; i < head_dim; ++i) {
          const uint16_t b = FloatToBf16(xh[i]);
          std::memcpy(d + 2 * i, &b, 2);
        }
        break;
      case KvDtype::kInt8: {
        // fminf / fmaxf, as the CUDA kernel reduces (the same result for NaN inputs too).
        float abs_max = 0;
        for (int64_t i = 0; i < head_dim; ++i) abs_max = fmaxf(abs_max, fabsf(xh[i]));
        const uint16_t scale_bits = KvInt8Scale(abs_max);
        const float scale = KvHalfToFloat(scale_bits);
        for (int64_t i = 0; i < head_dim; ++i) {
          d[i] = static_cast<uint8_t>(KvInt8Quantize(xh[i], scale));
        }
        params[h] = scale_bits;
        break;
      }
      case KvDtype::kInt4: {
        float lo = INFINITY, hi = -INFINITY;
        for (int64_t i = 0; i < head_dim; ++i) {
          lo = fminf(lo, xh[i]);
          hi = fmaxf(hi, xh[i]);
        }
        const uint16_t zero_bits = KvInt4Zero(lo);
        const float zero = KvHalfToFloat(zero_bits);
        const uint16_t scale_bits = KvInt4Scale(hi, zero);
        const float scale = KvHalfToFloat(scale_bits);
        for (int64_t j = 0; j < head_dim / 2; ++j) {
          const uint32_t q0 = KvInt4Quantize(xh[2 * j], scale, zero);
          const uint32_t q1 = KvInt4Quantize(xh[2 * j + 1], scale, zero);
          d[j] = static_cast<uint8_t>(q0 | (q1 << 4));
        }
        params[2 * h] = scale_bits;
        params[2 * h + 1] = zero_bits;
        break;
      }
    }
  }
}

void DequantizeKvRow(KvDtype dtype, const uint8_t* data, const uint16_t* params, int64_t kv_heads,
                     int64_t head_dim, float* out) {
  const int64_t head_bytes = KvHeadBytes(dtype, head_dim);
  for (int64_t h = 0; h < kv_heads; ++h) {
    const uint8_t* d = data + h * head_bytes;
    float* o = out + h * head_dim;
    switch (dtype) {
      case KvDtype::kF32:
        std::memcpy(o, d, head_dim * sizeof(float));
        break;
      case KvDtype::kBf16:
        for (int64_t i = 0; i < head_dim; ++i) {
          uint16_t b;
          std::memcpy(&b, d + 2 * i, 2);
          o[i] = Bf16ToFloat(b);
        }
        break;
      case KvDtype::kInt8: {
        const float scale = KvHalfToFloat(params[h]);
        for (int64_t i = 0; i < head_dim; ++i) {
          o[i] = KvInt8Dequantize(static_cast<int8_t>(d[i]), scale);
        }
        break;
      }
      case KvDtype::kInt4: {
        const float scale = KvHalfToFloat(params[2 * h]), zero = KvHalfToFloat(params[2 * h + 1]);
        for (int64_t j = 0; j < head_dim / 2; ++j) {
          o[2 * j] = KvInt4Dequantize(d[j] & 15u, scale, zero);
          o[2 * j + 1] = KvInt4Dequantize(d[j] >> 4, scale, zero);
        }
        break;
      }
    }
  }
}

}  // namespace bitserve::cpu
