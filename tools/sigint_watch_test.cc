#include "tools/sigint_watch.h"

#include <signal.h>
#include <unistd.h>

#include <thread>

#include "gtest/gtest.h"

namespace bitserve::cli {
namespace {

using Event = SigintWatch::Event;
using std::chrono::milliseconds;

TEST(SigintWatch, TimesOutWithNothingToReport) {
  auto watch = SigintWatch::Create();
  ASSERT_TRUE(watch.ok()) << watch.status();
  EXPECT_EQ((*watch)->Wait(milliseconds(20)), Event::kTimeout);
}

TEST(SigintWatch, NotifyFromAnotherThreadWakesTheWaiterOnce) {
  auto watch = SigintWatch::Create();
  ASSERT_TRUE(watch.ok()) << watch.status();
  std::thread notifier([&] { (*watch)->Notify(); });
  EXPECT_EQ((*watch)->Wait(milliseconds(10000)), Event::kNotified);
  notifier.join();
  EXPECT_EQ((*watch)->Wait(milliseconds(20)), Event::kTimeout);  // consumed
}

TEST(SigintWatch, SigintIsReportedInsteadOfEndingTheProcess) {
  auto watch = SigintWatch::Create();
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_EQ(kill(getpid(), SIGINT), 0);
  EXPECT_EQ((*watch)->Wait(milliseconds(10000)), Event::kSigint);
  EXPECT_EQ((*watch)->Wait(milliseconds(20)), Event::kTimeout);  // consumed
}

}  // namespace
}  // namespace bitserve::cli
