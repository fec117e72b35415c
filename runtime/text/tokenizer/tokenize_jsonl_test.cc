#include "runtime/text/tokenizer/tokenize_jsonl.h"

#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/text/tokenizer/tokenizer_test_util.h"

namespace bitserve {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Tokenizer> Tiny() {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      Tokenizer::FromJson(testing::TinyTokenizerJson().dump(), "tiny.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return std::move(*tok);
}

struct JsonlRun {
  JsonlTokenizeStats stats;
  std::string out, err;
};

JsonlRun TokenizeLines(const std::string& input, EncodeOptions options = {}) {
  auto tok = Tiny();
  std::istringstream in(input);
  std::ostringstream out, err;
  JsonlRun run;
  run.stats = TokenizeJsonl(*tok, options, in, out, err);
  run.out = out.str();
  run.err = err.str();
  return run;
}

TEST(TokenizeJsonlTest, OneOutputLinePerInputLine) {
  JsonlRun run = TokenizeLines(
      "{\"text\": \"hello world\"}\n{\"text\": \"\"}\n{\"text\": \"<|eot|>hello\", \"id\": 7}\n");
  EXPECT_EQ(run.stats.lines, 3);
  EXPECT_EQ(run.stats.failed, 0);
  EXPECT_EQ(run.out,
            "{\"ids\": [259, 264]}\n"
            "{\"ids\": []}\n"
            "{\"ids\": [60, 124, 101, 111, 116, 124, 62, 259]}\n");
  EXPECT_EQ(run.err, "");
}

TEST(TokenizeJsonlTest, OptionsApply) {
  JsonlRun run = TokenizeLines("{\"text\": \"<|eot|>hello\"}\n", {.parse_special = true});
  EXPECT_EQ(run.out, "{\"ids\": [301, 259]}\n");
}

TEST(TokenizeJsonlTest, MalformedLinesAreReportedAndSkipped) {
  JsonlRun run = TokenizeLines(
      "{\"text\": \"hello\"}\n"
      "{\"text\": \"hel\n"           // line 2: truncated JSON
      "[\"hello\"]\n"                // line 3: not an object
      "{\"txt\": \"hello\"}\n"       // line 4: no text
      "{\"text\": 5}\n"              // line 5: text not a string
      "\n"                           // line 6: empty
      "{\"text\": \"hello\"}\r\n");  // line 7: CRLF is fine
  EXPECT_EQ(run.stats.lines, 7);
  EXPECT_EQ(run.stats.failed, 5);
  EXPECT_EQ(run.out,
            "{\"ids\": [259]}\n"
            "{\"error\":\"not valid JSON\",\"line\":2}\n"
            "{\"error\":\"expected a JSON object, got array\",\"line\":3}\n"
            "{\"error\":\"no \\\"text\\\" field\",\"line\":4}\n"
            "{\"error\":\"\\\"text\\\" is a number, not a string\",\"line\":5}\n"
            "{\"error\":\"not valid JSON\",\"line\":6}\n"
            "{\"ids\": [259]}\n");
  EXPECT_THAT(run.err, HasSubstr("line 2: not valid JSON\n"));
  EXPECT_THAT(run.err, HasSubstr("line 5: \"text\" is a number, not a string\n"));
}

TEST(TokenizeJsonlTest, LastLineWithoutNewline) {
  JsonlRun run = TokenizeLines("{\"text\": \"hello\"}\n{\"text\": \"aa\"}");
  EXPECT_EQ(run.stats.lines, 2);
  EXPECT_EQ(run.out, "{\"ids\": [259]}\n{\"ids\": [265]}\n");
}

TEST(TokenizeJsonlTest, EmptyInput) {
  JsonlRun run = TokenizeLines("");
  EXPECT_EQ(run.stats.lines, 0);
  EXPECT_EQ(run.out, "");
}

}  // namespace
}  // namespace bitserve
