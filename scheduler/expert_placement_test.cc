#include "scheduler/expert_placement.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ExpertPlacement, ContiguousSlicesOfEqualSize) {
  auto p = ContiguousPlacement(8, 2);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->group_size, 2);
  EXPECT_THAT(p->owner, ElementsAre(0, 0, 0, 0, 1, 1, 1, 1));
  EXPECT_THAT(p->ExpertsOf(1), ElementsAre(4, 5, 6, 7));
  auto four = ContiguousPlacement(128, 4);
  ASSERT_TRUE(four.ok());
  for (int r = 0; r < 4; ++r) {
    const std::vector<int32_t> mine = four->ExpertsOf(r);
    ASSERT_EQ(mine.size(), 32u);
    EXPECT_EQ(mine.front(), r * 32);
    EXPECT_EQ(mine.back(), r * 32 + 31);
  }
  auto one = ContiguousPlacement(8, 1);  // no expert parallelism: everything on rank 0
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->ExpertsOf(0).size(), 8u);
  EXPECT_TRUE(ContiguousPlacement(0, 1).ok()) << "a dense model without EP";
}

TEST(ExpertPlacement, RefusesWhatCannotBeSplit) {
  auto uneven = ContiguousPlacement(8, 3);
  EXPECT_EQ(uneven.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(uneven.status().message(), HasSubstr("does not divide the model's 8 experts"));
  auto dense = ContiguousPlacement(0, 2);
  EXPECT_EQ(dense.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dense.status().message(), HasSubstr("dense"));
  EXPECT_FALSE(ContiguousPlacement(8, 0).ok());
}

TEST(ExpertPlacement, BalancedFromLoadsEvensOutTheRanks) {
  // Skewed loads where the contiguous split puts every hot expert on rank 0.
  const std::vector<int64_t> loads = {900, 800, 700, 600, 10, 20, 30, 40};
  auto contiguous = ContiguousPlacement(8, 2);
  auto balanced = BalancedPlacement(loads, 2);
  ASSERT_TRUE(contiguous.ok());
  ASSERT_TRUE(balanced.ok()) << balanced.status();
  EXPECT_THAT(RankLoads(*contiguous, loads), ElementsAre(3000, 100));
  // 900 -> 0, 800 -> 1, 700 -> 1, 600 -> 0, 40 -> 0, 30 -> 1, 20 -> 1, 10 -> 0.
  EXPECT_THAT(RankLoads(*balanced, loads), ElementsAre(1550, 1550));
  for (int r = 0; r < 2; ++r) EXPECT_EQ(balanced->ExpertsOf(r).size(), 4u) << "rank " << r;
  // Equal loads keep a valid split; the errors are the contiguous placement's.
  auto flat = BalancedPlacement(std::vector<int64_t>(8, 5), 4);
  ASSERT_TRUE(flat.ok());
  for (int r = 0; r < 4; ++r) EXPECT_EQ(flat->ExpertsOf(r).size(), 2u);
  EXPECT_FALSE(BalancedPlacement(std::vector<int64_t>(8, 1), 3).ok());
  EXPECT_FALSE(BalancedPlacement({1, -1}, 2).ok());
}

}  // namespace
}  // namespace bitserve::scheduler
