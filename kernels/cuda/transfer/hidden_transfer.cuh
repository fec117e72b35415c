// Hidden states of a pipeline stage in the transfer format of kernels/hidden_transfer.h (int8 with
// fp32 per-token scales, or bf16), on the device: the CUDA engine encodes its residual stream for
// the next stage and decodes what the previous stage sent, without leaving the GPU (NCCL moves
// the bytes). Bit for bit the CPU's EncodeHidden/DecodeHidden (hidden_transfer_op_test.cu).
//
// The message of a step has as many rows as the step has tokens. The CUDA engine runs decode
// steps padded to a batch bucket inside CUDA graphs, so the true row count can be read from the
// device (`device_rows`, e.g. the engine's token count) while `max_rows` bounds the launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/hidden_transfer.h"

namespace bitserve::cuda {

// x: [max_rows, hidden] float32. Encodes rows [0, rows) into out (TransferBytes(dtype, rows,
// hidden) bytes), rows = *device_rows when device_rows is not null (<= max_rows), else max_rows.
// hidden: a multiple of 4; x 16-byte aligned, out 4-byte aligned.
absl::Status EncodeHidden(TransferDtype dtype, const float* x, int64_t max_rows,
                          const int32_t* device_rows, int64_t hidden, uint8_t* out,
                          cudaStream_t stream);

// The inverse: rows [0, rows) of x from `in`; rows [rows, max_rows) become 0 (the padding rows of a
// decode bucket stay finite).
absl::Status DecodeHidden(TransferDtype dtype, const uint8_t* in, int64_t max_rows,
                          const int32_t* device_rows, int64_t hidden, float* x,
                          cudaStream_t stream);

}  // namespace bitserve::cuda
