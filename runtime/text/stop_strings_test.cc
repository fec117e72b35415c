#include "runtime/text/stop_strings.h"

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

StopStringMatcher Make(std::vector<std::string> stops, bool include = false) {
  absl::StatusOr<StopStringMatcher> m = StopStringMatcher::Create(std::move(stops), include);
  EXPECT_TRUE(m.ok()) << m.status();
  return *std::move(m);
}

// Texts returned by each Push (and Flush, when no stop string matched), and whether it stopped.
struct Streamed {
  std::vector<std::string> texts;
  bool stopped = false;
  std::string stop_string;
};

Streamed Feed(StopStringMatcher m, const std::vector<std::string>& chunks) {
  Streamed run;
  for (const std::string& chunk : chunks) {
    StopStringMatcher::Output out = m.Push(chunk);
    run.texts.push_back(out.text);
    if (out.stopped) {
      run.stopped = true;
      run.stop_string = out.stop_string;
      return run;
    }
  }
  run.texts.push_back(m.Flush());
  return run;
}

TEST(StopStrings, NoStopStringsPassEverything) {
  const Streamed run = Feed(Make({}), {"a", "bc", ""});
  EXPECT_THAT(run.texts, ElementsAre("a", "bc", "", ""));
  EXPECT_FALSE(run.stopped);
}

TEST(StopStrings, EmptyStopStringIsInvalid) {
  absl::StatusOr<StopStringMatcher> m = StopStringMatcher::Create({"ok", ""});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("stop[1]"));
  EXPECT_TRUE(StopStringMatcher::Validate(std::vector<std::string>{"a", "b"}).ok());
}

TEST(StopStrings, StopSpanningChunksIsHeldThenDropped) {
  const Streamed run = Feed(Make({"STOP"}), {"abc ST", "O", "P more"});
  EXPECT_THAT(run.texts, ElementsAre("abc ", "", ""));
  EXPECT_TRUE(run.stopped);
  EXPECT_EQ(run.stop_string, "STOP");
}

TEST(StopStrings, HeldPrefixIsReleasedWhenItFailsToMatch) {
  const Streamed run = Feed(Make({"STOP"}), {"a ST", "OR", "E"});
  EXPECT_THAT(run.texts, ElementsAre("a ", "STOR", "E", ""));
  EXPECT_FALSE(run.stopped);
}

TEST(StopStrings, OverlappingCandidates) {
  EXPECT_THAT(Feed(Make({"abc"}), {"ababc"}).texts, ElementsAre("ab"));
  // Byte by byte, "ab" is held, then "aba" releases "ab" and holds "a".
  const Streamed run = Feed(Make({"abc"}), {"a", "b", "a", "b", "c"});
  EXPECT_THAT(run.texts, ElementsAre("", "", "ab", "", ""));
  EXPECT_TRUE(run.stopped);
  EXPECT_THAT(Feed(Make({"aab"}), {"a", "a", "a", "a", "b"}).texts,
              ElementsAre("", "", "a", "a", ""));
}

TEST(StopStrings, SeveralStopStringsFirstToCompleteWins) {
  // "lo w" completes at byte 8, "world" at 11: the earlier completion stops, in one chunk or many.
  Streamed run = Feed(Make({"world", "lo w"}), {"hello world"});
  EXPECT_THAT(run.texts, ElementsAre("hel"));
  EXPECT_EQ(run.stop_string, "lo w");
  run = Feed(Make({"world", "lo w"}), {"hel", "lo wo", "rld"});
  EXPECT_THAT(run.texts, ElementsAre("he", "l"));  // the first "l" was held: it might start "lo w"
  EXPECT_EQ(run.stop_string, "lo w");
  // Completing at the same byte, the longer one wins (it starts earlier).
  run = Feed(Make({"bc", "abc"}), {"xab", "c"});
  EXPECT_THAT(run.texts, ElementsAre("x", ""));
  EXPECT_EQ(run.stop_string, "abc");
}

TEST(StopStrings, StopAtTheVeryStart) {
  Streamed run = Feed(Make({"STOP"}), {"STOPxyz"});
  EXPECT_THAT(run.texts, ElementsAre(""));
  EXPECT_TRUE(run.stopped);
  run = Feed(Make({"\n\n"}), {"\n", "\n"});
  EXPECT_THAT(run.texts, ElementsAre("", ""));
  EXPECT_TRUE(run.stopped);
}

TEST(StopStrings, IncludeStopInOutput) {
  Streamed run = Feed(Make({"abc"}, /*include=*/true), {"xxab", "cyy"});
  EXPECT_THAT(run.texts, ElementsAre("xx", "abc"));
  EXPECT_TRUE(run.stopped);
  run = Feed(Make({"END"}, /*include=*/true), {"END"});
  EXPECT_THAT(run.texts, ElementsAre("END"));
}

TEST(StopStrings, FlushReleasesHeldText) {
  StopStringMatcher m = Make({"abc", "<|im"});
  EXPECT_EQ(m.Push("hello ab").text, "hello ");
  EXPECT_EQ(m.held(), "ab");
  EXPECT_EQ(m.Flush(), "ab");
  EXPECT_EQ(m.held(), "");
}

TEST(StopStrings, NothingAfterStop) {
  StopStringMatcher m = Make({"x"});
  EXPECT_TRUE(m.Push("axb").stopped);
  const StopStringMatcher::Output later = m.Push("more");
  EXPECT_TRUE(later.stopped);
  EXPECT_EQ(later.text, "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopStrings, MultiByteStopString) {
  // "。\n" = E3 80 82 0A, arriving split inside the character.
  const Streamed run = Feed(Make({"\xE3\x80\x82\n"}), {"Fin\xE3\x80", "\x82", "\nnext"});
  EXPECT_THAT(run.texts, ElementsAre("Fin", "", ""));
  EXPECT_TRUE(run.stopped);
}

// Scans byte by byte: the first end position where some stop string ends, the longest there.
std::pair<std::string, std::string> Reference(const std::string& text,
                                              const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    const std::string* best = nullptr;
    for (const std::string& stop : stops) {
      if (stop.size() <= end && text.compare(end - stop.size(), stop.size(), stop) == 0 &&
          (best == nullptr || stop.size() > best->size())) {
        best = &stop;
      }
    }
    if (best != nullptr) return {text.substr(0, end - best->size()), *best};
  }
  return {text, ""};
}

// However the text is chunked, the same text comes out and the same stop string matches; no more
// than the longest stop string minus one byte is ever held.
TEST(StopStrings, ResultDoesNotDependOnChunking) {
  const std::vector<std::string> stops = {"abca", "bcb", "cc", "aaaa"};
  std::mt19937 gen(7);
  for (int trial = 0; trial < 500; ++trial) {
    std::string text;
    const int len = 1 + static_cast<int>(gen() % 30);
    for (int i = 0; i < len; ++i) text += static_cast<char>('a' + gen() % 3);
    const Streamed whole = Feed(Make(stops), {text});
    std::vector<std::string> chunks;
    for (size_t i = 0; i < text.size();) {
      const size_t n = std::min<size_t>(gen() % 4, text.size() - i);  // empty chunks too
      chunks.push_back(text.substr(i, n));
      i += n;
    }
    StopStringMatcher m = Make(stops);
    std::string joined;
    bool stopped = false;
    std::string stop_string;
    for (const std::string& chunk : chunks) {
      StopStringMatcher::Output out = m.Push(chunk);
      joined += out.text;
      ASSERT_LE(m.held().size(), 3u);
      if (out.stopped) {
        stopped = true;
        stop_string = out.stop_string;
        break;
      }
    }
    if (!stopped) joined += m.Flush();
    std::string whole_text;
    for (const std::string& t : whole.texts) whole_text += t;
    const auto [expected, expected_stop] = Reference(text, stops);
    ASSERT_EQ(whole_text, expected) << text;
    ASSERT_EQ(whole.stop_string, expected_stop) << text;
    ASSERT_EQ(joined, expected) << text;
    ASSERT_EQ(stopped, !expected_stop.empty()) << text;
    ASSERT_EQ(stop_string, expected_stop) << text;
  }
}

}  // namespace
}  // namespace bitserve
