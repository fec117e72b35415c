#include "runtime/text/tokenizer/bpe_model.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve {
namespace {

using ::testing::ElementsAre;

// Byte b has token id b; merge results get ids from 1000 up.
std::array<int32_t, 256> IdentityBytes() {
  std::array<int32_t, 256> ids;
  for (int b = 0; b < 256; ++b) ids[b] = b;
  return ids;
}

std::vector<int32_t> Encode(const BpeModel& model, absl::string_view bytes) {
  std::vector<int32_t> out;
  model.Encode(bytes, &out);
  return out;
}

TEST(BpeModelTest, NoMergesGivesBytes) {
  BpeModel model(IdentityBytes());
  EXPECT_THAT(Encode(model, "ab"), ElementsAre('a', 'b'));
  EXPECT_THAT(Encode(model, "x"), ElementsAre('x'));
}

TEST(BpeModelTest, LowestRankMergesFirst) {
  BpeModel model(IdentityBytes());
  model.AddMerge('b', 'c', 0, 1000);  // "bc"
  model.AddMerge('a', 'b', 1, 1001);  // "ab": lower priority, so "abc" is a + bc
  EXPECT_THAT(Encode(model, "abc"), ElementsAre('a', 1000));
  model.AddMerge('a', 1000, 2, 1002);  // "abc"
  EXPECT_THAT(Encode(model, "abc"), ElementsAre(1002));
  EXPECT_THAT(Encode(model, "abab"), ElementsAre(1001, 1001));
}

TEST(BpeModelTest, EqualRanksMergeLeftmostFirst) {
  BpeModel model(IdentityBytes());
  model.AddMerge('a', 'a', 0, 1000);  // "aa"
  EXPECT_THAT(Encode(model, "aaa"), ElementsAre(1000, 'a'));
  EXPECT_THAT(Encode(model, "aaaaa"), ElementsAre(1000, 1000, 'a'));
  model.AddMerge(1000, 'a', 1, 1001);                           // "aaa"
  EXPECT_THAT(Encode(model, "aaaa"), ElementsAre(1000, 1000));  // aa+aa before aa+a
  EXPECT_THAT(Encode(model, "aaaaa"), ElementsAre(1000, 1001));
}

TEST(BpeModelTest, StaleCandidatesAreSkipped) {
  BpeModel model(IdentityBytes());
  model.AddMerge('b', 'c', 0, 1000);   // bc
  model.AddMerge('a', 'b', 1, 1001);   // ab: stale once b is inside bc
  model.AddMerge('c', 'd', 2, 1002);   // cd: stale too
  model.AddMerge(1000, 'd', 3, 1003);  // bcd
  EXPECT_THAT(Encode(model, "abcd"), ElementsAre('a', 1003));
}

TEST(BpeModelTest, LaterDuplicateMergeReplacesEarlier) {
  BpeModel model(IdentityBytes());
  model.AddMerge('a', 'b', 0, 1000);
  model.AddMerge('b', 'c', 1, 1001);
  model.AddMerge('a', 'b', 2, 1000);  // "ab" now ranks after "bc"
  EXPECT_THAT(Encode(model, "abc"), ElementsAre('a', 1001));
}

TEST(BpeModelTest, LongInput) {
  BpeModel model(IdentityBytes());
  model.AddMerge('a', 'a', 0, 1000);
  model.AddMerge(1000, 1000, 1, 1001);
  const std::string text(10001, 'a');
  std::vector<int32_t> ids = Encode(model, text);
  ASSERT_EQ(ids.size(), 2501u);
  EXPECT_EQ(ids.front(), 1001);
  EXPECT_EQ(ids[2499], 1001);
  EXPECT_EQ(ids.back(), 'a');
}

}  // namespace
}  // namespace bitserve
