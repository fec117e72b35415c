#include "tools/command_line.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve::cli {
namespace {

using ::testing::HasSubstr;

TEST(ParseTokenIds, AcceptsCommaSeparatedIdsWithSpaces) {
  auto ids = ParseTokenIds("1,2, 3 ,128000", "--tokens");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 2, 3, 128000}));
}

TEST(ParseTokenIds, NamesTheFlagAndTheBadPiece) {
  for (const char* bad : {"", "1,,2", "1,a", "-1", "1.5", "99999999999", "1,2,"}) {
    auto ids = ParseTokenIds(bad, "--prompt-ids");
    ASSERT_FALSE(ids.ok()) << bad;
    EXPECT_THAT(std::string(ids.status().message()), HasSubstr("--prompt-ids")) << bad;
  }
}

}  // namespace
}  // namespace bitserve::cli
