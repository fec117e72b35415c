// The CPU reference of the KV cache element formats (kernels/kv_cache_format.h): quantization of
// one token's keys or values (all KV heads) into the stored bytes and params, and the inverse.
// runtime/paged_kv_cache.h stores what QuantizeKvRow writes; the CUDA op test compares the GPU's
// stored bytes with it.
#pragma once

#include <cstdint>

#include "kernels/kv_cache_format.h"

namespace bitserve::cpu {

// x: [kv_heads][head_dim] floats. data: [kv_heads][KvHeadBytes(dtype, head_dim)] bytes; params:
// [kv_heads][KvParamHalves(dtype)] fp16 bit patterns (unused for kF32 / kBf16, may be null).
void QuantizeKvRow(KvDtype dtype, const float* x, int64_t kv_heads, int64_t head_dim, uint8_t* data,
                   uint16_t* params);

// The floats a stored row stands for: out[h * head_dim + i].
void DequantizeKvRow(KvDtype dtype, const uint8_t* data, const uint16_t* params, int64_t kv_heads,
                     int64_t head_dim, float* out);

}  // namespace bitserve::cpu
