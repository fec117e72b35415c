// How hidden states cross from one pipeline stage to the next (DESIGN.md "Parallelism"), written
// once for every backend: the CPU engine (runtime/cpu_engine.cc) calls EncodeHidden/DecodeHidden
// below, the CUDA engine kernels/cuda/transfer/hidden_transfer.cuh, and both produce the same bytes
// (kernels/cuda/transfer/hidden_transfer_op_test.cu checks it bit for bit), so CPU and GPU stages
// can be mixed and a message means the same on every transport.
//
// One message per step: the residual stream after the stage's last layer, [tokens, hidden].
//
//   int8 (default): [tokens] float32 scales, then [tokens, hidden] int8, row-major.
//                   scale = max|x| / 127 of the token's row; q = clamp(rint(x * (127 / max|x|)),
//                   -127, 127) (round half to even); the receiver uses q * scale. An all-zero
//                   row has scale 0.
//   bf16:           [tokens, hidden] bf16 bits (round to nearest even).
//
// Each operation is one correctly rounded float32 operation (the division too: __fdiv_rn on the
// device). int8 moves about half of bf16's bytes; what it costs in logits and perplexity is
// measured in docs/quality.md.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bitserve {

enum class TransferDtype { kInt8, kBf16 };
absl::StatusOr<TransferDtype> ParseTransferDtype(absl::string_view name);  // "int8" | "bf16"
std::string TransferDtypeName(TransferDtype dtype);

// Bytes of one message of `tokens` rows of `hidden` values.
inline int64_t TransferBytes(TransferDtype dtype, int64_t tokens, int64_t hidden) {
  return dtype == TransferDtype::kInt8 ? tokens * (4 + hidden) : tokens * hidden * 2;
}
// x: [tokens, hidden] float32 -> out: TransferBytes(...) bytes.
void EncodeHidden(TransferDtype dtype, const float* x, int64_t tokens, int64_t hidden,
                  uint8_t* out);
// in: TransferBytes(...) bytes -> x: [tokens, hidden] float32.
void DecodeHidden(TransferDtype dtype, const uint8_t* in, int64_t tokens, int64_t hidden, float* x);

}  // namespace bitserve
