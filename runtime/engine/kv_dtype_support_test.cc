// The one check of which KV element types a device keeps (engine.h CheckKvDtype), which the
// engines, serve's flags and a worker's assignment all take.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/engine/engine.h"

namespace bitserve {
namespace {

using ::testing::HasSubstr;

TEST(KvDtypeSupport, CpuKeepsAllFourCudaNotF32) {
  for (KvDtype d : {KvDtype::kF32, KvDtype::kBf16, KvDtype::kInt8, KvDtype::kInt4}) {
    EXPECT_TRUE(CheckKvDtype("cpu", d).ok()) << KvDtypeName(d);
  }
  for (const char* device : {"cuda", "cuda:1"}) {
    for (KvDtype d : {KvDtype::kBf16, KvDtype::kInt8, KvDtype::kInt4}) {
      EXPECT_TRUE(CheckKvDtype(device, d).ok()) << device << " " << KvDtypeName(d);
    }
    const absl::Status f32 = CheckKvDtype(device, KvDtype::kF32);
    EXPECT_EQ(f32.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(f32.message()),
                HasSubstr("keeps its KV cache as bf16, int8, int4, not f32"));
  }
  EXPECT_FALSE(CheckKvDtype("cpu", static_cast<KvDtype>(7)).ok());
  EXPECT_EQ(DefaultKvDtype("cpu"), KvDtype::kF32);
  EXPECT_EQ(DefaultKvDtype("cuda:0"), KvDtype::kBf16);
}

}  // namespace
}  // namespace bitserve
