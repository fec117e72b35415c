#include "kernels/cpu/hadamard.h"

#include <cmath>

namespace bitserve::cpu {

int HadamardBlock(int head_dim) { return head_dim & -head_dim; }

float HadamardNorm(int block) { return static_cast<float>(1.0 / std::sqrt(double{1.0} * block)); }

void HadamardRotateRows(float* x, int64_t rows, int head_dim) {
  const int block = HadamardBlock(head_dim);
  if (block == 1) return;
  const float norm = HadamardNorm(block);
  const int64_t blocks = rows * (head_dim / block);
  for (int64_t r = 0; r < blocks; ++r) {
    float* b = x + r * block;
    for (int h = 1; h < block; h *= 2) {
      for (int g = 0; g < block; g += 2 * h) {
        for (int i = g; i < g + h; ++i) {
          const float u = b[i], v = b[i + h];
          b[i] = u + v;
          b[i + h] = u - v;
        }
      }
    }
    for (int i = 0; i < block; ++i) b[i] *= norm;
  }
}

}  // namespace bitserve::cpu
