// API keys: the key file's format and errors, and which authorization values pass.
#include "rpc/api_keys.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve::rpc {
namespace {

using ::testing::HasSubstr;

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path =
      (std::filesystem::temp_directory_path() / (name + std::to_string(getpid()))).string();
  std::ofstream(path) << text;
  return path;
}

TEST(ApiKeys, LoadsOneKeyPerLineSkippingCommentsAndBlanks) {
  auto keys = ApiKeys::Load(WriteFile(
      "keys", "# team A\nsk-aaaaaaaaaaaaaaaaaaaa\n\n   sk-bbbbbbbbbbbbbbbbbbbb  \n# old\n"));
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_TRUE(keys->enabled());
  EXPECT_EQ(keys->size(), 2);
  EXPECT_TRUE(keys->Allows("Bearer sk-aaaaaaaaaaaaaaaaaaaa"));
  EXPECT_TRUE(keys->Allows("bearer sk-bbbbbbbbbbbbbbbbbbbb"));
  EXPECT_TRUE(keys->Allows("  BEARER   sk-bbbbbbbbbbbbbbbbbbbb "));
  EXPECT_FALSE(keys->Allows("Bearer sk-aaaaaaaaaaaaaaaaaaab"));
  EXPECT_FALSE(keys->Allows("Bearer sk-aaaaaaaaaaaaaaaaaaa"));  // a prefix
  EXPECT_FALSE(keys->Allows("Bearer sk-aaaaaaaaaaaaaaaaaaaaa"));
  EXPECT_FALSE(keys->Allows("sk-aaaaaaaaaaaaaaaaaaaa"));  // no scheme
  EXPECT_FALSE(keys->Allows("Basic sk-aaaaaaaaaaaaaaaaaaaa"));
  EXPECT_FALSE(keys->Allows("Bearer "));
  EXPECT_FALSE(keys->Allows(""));
}

TEST(ApiKeys, BadFilesAreRefusedWithoutShowingKeys) {
  EXPECT_THAT(std::string(ApiKeys::Load("/nonexistent/keys").status().message()),
              HasSubstr("cannot read"));
  EXPECT_THAT(std::string(ApiKeys::Load(WriteFile("empty", "# none\n\n")).status().message()),
              HasSubstr("no keys"));
  const auto short_key = ApiKeys::Load(WriteFile("short", "sk-long-enough-key-1\nshort\n"));
  EXPECT_THAT(std::string(short_key.status().message()), HasSubstr("line 2"));
  EXPECT_THAT(std::string(short_key.status().message()), ::testing::Not(HasSubstr("short\n")));
  EXPECT_FALSE(ApiKeys::Load(WriteFile("space", "sk-has a-space-inside-it\n")).ok());
}

TEST(ApiKeys, NoKeysAllowEverything) {
  const ApiKeys none;
  EXPECT_FALSE(none.enabled());
  EXPECT_TRUE(none.Allows(""));
  EXPECT_TRUE(none.Allows("Bearer anything"));
}

}  // namespace
}  // namespace bitserve::rpc
