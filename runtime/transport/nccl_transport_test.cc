// NcclTransport's checks and the coordinator's side of the bootstrap, which need no GPU: the unique
// id (made by the coordinator, a process without one), and the errors a malformed assignment
// gets before any CUDA or NCCL call. Ranks exchanging messages: tests/gpu/pipeline_gpu_test.sh.
#include "runtime/transport/nccl_transport.h"

#include <chrono>

#include "gtest/gtest.h"

namespace bitserve {
namespace {

using std::chrono::milliseconds;

#if BITSERVE_WITH_NCCL

TEST(NcclTransportTest, CoordinatorMakesAFreshUniqueIdWithoutAGpu) {
  auto a = NewNcclUniqueId();
  auto b = NewNcclUniqueId();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->size(), static_cast<size_t>(kNcclUniqueIdBytes));
  EXPECT_NE(*a, *b);
}

TEST(NcclTransportTest, MalformedAssignmentsAreRefusedByName) {
  const std::string id(kNcclUniqueIdBytes, '\1');
  auto short_id = NcclTransport::Connect("abc", 0, 2, "cuda:0", milliseconds(100));
  EXPECT_EQ(short_id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(short_id.status().message().find("unique id has 3 bytes"), std::string::npos)
      << short_id.status();
  EXPECT_EQ(NcclTransport::Connect(id, 2, 2, "cuda:0", milliseconds(100)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NcclTransport::Connect(id, -1, 2, "cuda:0", milliseconds(100)).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto cpu = NcclTransport::Connect(id, 0, 2, "cpu", milliseconds(100));
  EXPECT_EQ(cpu.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(cpu.status().message().find("NCCL needs a CUDA device"), std::string::npos)
      << cpu.status();
  EXPECT_EQ(CudaPciBusId("cpu").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CudaPciBusId("cuda:x").status().code(), absl::StatusCode::kInvalidArgument);
}

#else

TEST(NcclTransportTest, BuildWithoutNcclSaysSo) {
  EXPECT_EQ(NewNcclUniqueId().status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(NcclTransport::Connect(std::string(128, '\0'), 0, 2, "cuda", milliseconds(10))
                .status()
                .code(),
            absl::StatusCode::kUnimplemented);
}

#endif

}  // namespace
}  // namespace bitserve
