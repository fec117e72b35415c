#include <cstdlib>
#include <cstring>

#include "kernels/cuda/common/device_info.cuh"
#include "kernels/cuda/common/pdl.cuh"

namespace bitserve::cuda {

bool DependentLaunchEnabled() {
  static const bool allowed = [] {
    const char* v = std::getenv("BITSERVE_PDL");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return allowed && GetCurrentDeviceTraits().compute_major >= 9;
}

}  // namespace bitserve::cuda
