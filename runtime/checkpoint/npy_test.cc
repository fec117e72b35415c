#include "runtime/checkpoint/npy.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve {
namespace {

std::filesystem::path TempFile(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("bitserve_npy_" + std::to_string(getpid()) + name);
}

TEST(Npy, RoundTrips) {
  auto path = TempFile("a.npy");
  std::vector<float> data = {1.5f, -2.0f, 3.25f, 0.0f, 1e-20f, 7.0f};
  ASSERT_TRUE(WriteNpyFloat32(path, {2, 3}, data.data()).ok());
  auto back = ReadNpyFloat32(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(back->data, data);
  // The header is padded so that data starts at a multiple of 64 bytes.
  EXPECT_EQ((std::filesystem::file_size(path) - 6 * 4) % 64, 0u);
  std::filesystem::remove(path);
}

TEST(Npy, RejectsOtherDtypesAndTruncation) {
  auto path = TempFile("b.npy");
  std::vector<float> data(4, 1.0f);
  ASSERT_TRUE(WriteNpyFloat32(path, {4}, data.data()).ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 1);
  EXPECT_THAT(std::string(ReadNpyFloat32(path).status().message()),
              ::testing::HasSubstr("data has 15 bytes, shape needs 16"));
  {
    std::ofstream out(path, std::ios::binary);
    std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }";
    out << "\x93NUMPY" << '\x01' << '\x00' << static_cast<char>(header.size()) << '\x00' << header
        << "12345678";
  }
  EXPECT_THAT(std::string(ReadNpyFloat32(path).status().message()), ::testing::HasSubstr("'<f4'"));
  std::filesystem::remove(path);
  EXPECT_EQ(ReadNpyFloat32(path).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace bitserve
