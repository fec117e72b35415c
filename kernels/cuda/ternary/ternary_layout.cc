#include "kernels/cuda/ternary/ternary_layout.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/parallel.h"

namespace bitserve::cuda {
namespace {

// dp4a on the host: 4 signed byte products added to acc.
int32_t Dp4a(uint32_t a, uint32_t b, int32_t acc) {
  for (int i = 0; i < 4; ++i) {
    acc += static_cast<int8_t>(a >> (8 * i)) * static_cast<int8_t>(b >> (8 * i));
  }
  return acc;
}

}  // namespace

TernaryOutputScale FoldWeightScale(cpu::WeightScale scale) {
  TernaryOutputScale out;
  if (!scale.divide) {
    out.mode = TernaryOutputScale::Mode::kMultiply;
    out.value = scale.value;
    return out;
  }
  int exponent = 0;
  const float mantissa = std::frexp(scale.value, &exponent);  // value = mantissa * 2^exponent
  // A power of two has mantissa exactly 0.5; the range keeps every product and quotient normal.
  if (mantissa == 0.5f && exponent - 1 >= -20 && exponent - 1 <= 20) {
    out.mode = TernaryOutputScale::Mode::kMultiply;
    out.value = std::ldexp(1.0f, 1 - exponent);
  } else {
    out.mode = TernaryOutputScale::Mode::kDivideProduct;
    out.value = scale.value;
  }
  return out;
}

TernaryCodePosition LocateTernaryCode(int64_t k_tiles, int64_t row, int64_t col) {
  const int64_t row_tile = row / kTernaryRowTile, k_tile = col / kTernaryKTile;
  const int rr = static_cast<int>(row % kTernaryRowTile);
  const int kk = static_cast<int>(col % kTernaryKTile);
  const int g = rr % 8, upper = rr / 8;  // rows g and g+8 share a lane
  const int chunk = kk / 64, in_chunk = kk % 64;
  const int t = in_chunk / 16, e = in_chunk % 16;
  const int j = e / 4, b = e % 4;
  const int lane = 4 * g + t;
  const int slot = 2 * chunk + upper;  // .x .y .z .w
  TernaryCodePosition pos;
  pos.word = ((row_tile * k_tiles + k_tile) * 32 + lane) * 4 + slot;
  pos.shift = 8 * b + 2 * j;
  return pos;
}

absl::StatusOr<PackedTernaryMatrix> PackTernaryMatrix(const int8_t* values, int64_t rows,
                                                      int64_t cols, cpu::WeightScale scale) {
  if (rows <= 0 || cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ternary matrix shape must be positive, got [", rows, ", ", cols, "]"));
  }
  if (!std::isfinite(scale.value) || scale.value <= 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("ternary matrix scale must be finite and positive, got ", scale.value));
  }
  PackedTernaryMatrix w;
  w.rows = rows;
  w.cols = cols;
  w.padded_rows = PaddedRows(rows);
  w.padded_cols = PaddedInputs(cols);
  w.scale = FoldWeightScale(scale);
  w.words.assign(w.padded_rows * w.padded_cols / 16, 0u);  // code 0 in the padding
  const int64_t k_tiles = w.k_tiles();
  // Row tiles own disjoint words: pack them on every CPU thread (a 70B model has 70e9 codes).
  std::mutex mu;
  int64_t bad_r = -1, bad_k = -1;
  int bad_v = 0;
  cpu::ParallelFor(w.row_tiles(), 1, [&](int64_t tile_begin, int64_t tile_end) {
    const int64_t r_end = std::min(rows, tile_end * kTernaryRowTile);
    for (int64_t r = tile_begin * kTernaryRowTile; r < r_end; ++r) {
      const int8_t* row = values + r * cols;
      // The 16 codes of columns [k0, k0 + 16) of one row fill one word (LocateTernaryCode: the
      // same word, shift 8 * (e % 4) + 2 * (e / 4) for column k0 + e), which no other row shares.
      for (int64_t k0 = 0; k0 < cols; k0 += 16) {
        uint32_t word = 0;
        const int64_t n = std::min<int64_t>(16, cols - k0);
        for (int64_t e = 0; e < n; ++e) {
          const int v = row[k0 + e];
          if (v < -1 || v > 1) {
            std::lock_guard<std::mutex> lock(mu);
            if (bad_r < 0 || r < bad_r) bad_r = r, bad_k = k0 + e, bad_v = v;
            return;
          }
          word |= static_cast<uint32_t>(v + 1) << (8 * (e & 3) + 2 * (e >> 2));
        }
        w.words[LocateTernaryCode(k_tiles, r, k0).word] = word;
      }
    }
  });
  if (bad_r >= 0) {
    return absl::InvalidArgumentError(absl::StrCat("ternary matrix value at [", bad_r, ", ", bad_k,
                                                   "] is ", bad_v, ", expected -1, 0 or 1"));
  }
  return w;
}

int TernaryCodeAt(const PackedTernaryMatrix& w, int64_t row, int64_t col) {
  const TernaryCodePosition pos = LocateTernaryCode(w.k_tiles(), row, col);
  return static_cast<int>((w.words[pos.word] >> pos.shift) & 3u);
}

void PackedTernaryMatmulInt32Reference(const PackedTernaryMatrix& w, const int8_t* x,
                                       int64_t x_stride, const int32_t* x_sum, int64_t m,
                                       int32_t* acc) {
  const int64_t k_tiles = w.k_tiles();
  std::vector<int32_t> tile_rows(kTernaryRowTile);
  for (int64_t tok = 0; tok < m; ++tok) {
    const int8_t* xt = x + tok * x_stride;
    for (int64_t rt = 0; rt < w.row_tiles(); ++rt) {
      std::fill(tile_rows.begin(), tile_rows.end(), 0);
      for (int64_t kt = 0; kt < k_tiles; ++kt) {
        const uint32_t* tile = w.words.data() + (rt * k_tiles + kt) * kTernaryTileWords;
        for (int lane = 0; lane < 32; ++lane) {
          const int g = lane / 4, t = lane % 4;
          for (int slot = 0; slot < 4; ++slot) {
            const uint32_t word = tile[lane * 4 + slot];
            const int row_in_tile = g + 8 * (slot & 1);
            const int64_t k0 = kt * kTernaryKTile + 64 * (slot >> 1) + 16 * t;
            for (int j = 0; j < 4; ++j) {
              uint32_t xw;
              std::memcpy(&xw, xt + k0 + 4 * j, 4);  // little-endian, as on the GPU
              tile_rows[row_in_tile] =
                  Dp4a((word >> (2 * j)) & 0x03030303u, xw, tile_rows[row_in_tile]);
            }
          }
        }
      }
      for (int r = 0; r < kTernaryRowTile; ++r) {
        const int64_t row = rt * kTernaryRowTile + r;
        if (row < w.rows) acc[tok * w.rows + row] = tile_rows[r] - x_sum[tok];
      }
    }
  }
}

float ApplyTernaryOutputScale(int32_t acc, float x_scale, TernaryOutputScale scale) {
  // volatile keeps the host compiler from contracting or reassociating: two roundings, in order.
  volatile float a = static_cast<float>(acc);
  if (scale.mode == TernaryOutputScale::Mode::kDivideProduct) {
    volatile float d = x_scale * scale.value;
    return a / d;
  }
  volatile float q = a / x_scale;
  return q * scale.value;
}

}  // namespace bitserve::cuda
