// Ternary weight x int8 activation product for batches of tens to thousands of tokens (decode of
// large batches, prefill chunks), fused: no unpacked copy of the weights, no int32 round trip.
//
// A block computes a tile of output rows x tokens. Both operands are staged in shared memory by
// cp.async, several k-tiles deep: the packed weight tiles as they lie in memory (ternary_layout.h:
// 512 bytes per 16 x 128 tile, already each lane's MMA A fragment once unpacked) and the tokens'
// 128 activation bytes per k-tile (16-byte chunks XOR-swizzled so the fragment loads are free of
// bank conflicts). Each warp owns a sub-tile of row tiles x 8-token tiles; per k-tile it loads its
// tokens' B fragments once, unpacks each weight uint4 into the A fragments of four k32-steps and
// issues int8 mma.m16n8k32 into int32 accumulators (exact). The epilogue subtracts the token sums
// (codes are w + 1) and applies ternary_layout.h's float epilogue in registers, or stores the
// int32 sums. Results equal cpu::TernaryMatmul bit for bit.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cuda/ternary/int8_activations.h"
#include "kernels/cuda/ternary/ternary_gemv.cuh"

namespace bitserve::cuda {

// One compiled tile shape. Block = row_warps x token_warps warps; each warp owns warp_row_tiles
// 16-row tiles x warp_token_tiles 8-token tiles; `stages` k-tiles are in flight; min_blocks > 1
// caps the registers so that many blocks fit on one multiprocessor.
struct TernaryTiledConfig {
  int row_warps = 2;
  int token_warps = 4;
  int warp_row_tiles = 4;
  int warp_token_tiles = 4;
  int stages = 4;
  int min_blocks = 1;
  // Hopper's warpgroup MMA (ternary_wgmma_gemm.cu) instead of mma.sync: row_warps = 4 per
  // warpgroup, warp_row_tiles = token_warps = 1.
  bool wgmma = false;

  friend bool operator==(const TernaryTiledConfig&, const TernaryTiledConfig&) = default;
  int block_rows() const { return row_warps * warp_row_tiles * 16; }
  int block_tokens() const { return token_warps * warp_token_tiles * 8; }
  std::string Name() const;
};

// Whether the wgmma configurations can run: compiled in (sm_90a) and the current device is 9.0.
bool WgmmaAvailable();

// Every configuration compiled in, for tests and benchmarks.
const std::vector<TernaryTiledConfig>& AllTernaryTiledConfigs();
// The configuration TernaryTiledMatmul uses for m tokens of w (measured, docs/perf.md), among
// the wgmma ones too when `wgmma` (they can run and a scratch is given).
TernaryTiledConfig DefaultTernaryTiledConfig(const TernaryMatrixView& w, int64_t m, bool wgmma);

// Exactly one of y ([x.rows, w.rows] float32) / acc ([x.rows, w.rows] int32) is non-null.
// wgmma_scratch: TernaryTiledScratchBytes(x.rows, x.stride) bytes of device memory for the wgmma
// configurations (they first write the activations there in their k order); may be null for the
// others.
absl::Status TernaryTiledMatmul(const TernaryMatrixView& w, const Int8Activations& x, float* y,
                                int32_t* acc, cudaStream_t stream, int8_t* wgmma_scratch = nullptr);
absl::Status TernaryTiledMatmulWithConfig(const TernaryTiledConfig& config,
                                          const TernaryMatrixView& w, const Int8Activations& x,
                                          float* y, int32_t* acc, cudaStream_t stream,
                                          int8_t* wgmma_scratch = nullptr);
inline int64_t TernaryTiledScratchBytes(int64_t tokens, int64_t stride) { return tokens * stride; }

}  // namespace bitserve::cuda
